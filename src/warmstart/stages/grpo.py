"""`grpo`: reinforcement learning on the environment's verifier, from the distilled student.

Each step: take the next `tasks_per_step` train tasks, sample `group_size` completions each from the
current policy, score them with `env.verify` (the same function that filtered the teacher's data),
turn rewards into group-relative advantages, and take `updates_per_batch` optimizer steps on the
clipped policy-ratio loss, with the log-probs of the sampling policy kept as the "old" ones.

Knobs (GrpoConfig), all variants of one loss (`losses.py`): clip_low/clip_high (clip-higher),
normalization (token / sequence / constant = Dr. GRPO) and scale_by_std, kl_weight (0: no reference
model in memory), drop_zero_variance (dynamic sampling: groups whose rewards are all equal carry no
signal and are replaced by groups of the next tasks, up to max_refills rounds), overlong_buffer.

A verdict with `infra_error` is masked out of the update and counted, never scored 0.

Resume: a rerun continues from the newest complete checkpoint (policy, optimizer, scheduler, RNG,
step, task cursor, history, and the starting model's identity); sampling seeds derive from the step,
so the resumed run continues as if it had never stopped.

A `seconds_budget` stops the run early (the demo's equal-wall-time cold start).

On-policy distillation (`grpo.teacher`): a teacher (`teacher_scoring.py`: a local model, or a server
returning prompt logprobs) scores the student's sampled tokens, and each token gets its own advantage
log q(x_t) - log p(x_t) (`kd_losses.reverse_kl_advantages`), plus `reward_weight` x the verifier's
group advantage. It is an advantage in this machinery rather than a separate loss because then it needs
only the log-prob of the sampled token, which a server gives (a full-distribution reverse KL would need
the teacher's whole distribution at every student position), and it reuses the sampler, masks,
clipping, checkpoints and the verifier mix unchanged. Flat reward groups are kept then (the teacher's
signal does not depend on reward variance). `teacher_tokens_budget` stops the run once the teacher has
scored that many student tokens (the demo's equal-teacher-tokens ablation).

Multi-turn: where the environment has tools, each sample is a whole episode (`rollout.py`): the
policy's turns are trained on, tool results and template text between turns are not (loss mask 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import complete_checkpoints, load_state, publish, save
from ..config import GrpoConfig, Recipe
from ..envs.base import Environment
from ..errors import WarmstartError
from ..kd_losses import reverse_kl_advantages
from ..losses import clipped_policy_loss, group_advantages, kl_to_reference, overlong_penalty, zero_variance_groups
from ..chat import stop_token_ids
from ..generation import sample_ids_pruned
from ..models import load_model_and_tokenizer, sequence_logprobs
from ..policies.base import Sampling
from ..progress import progress_bar
from ..rollout import Episode, run_episodes
from ..runs import RunDir, fingerprint
from ..teacher_scoring import make_teacher
from ..types import Provenance, Trajectory
from .common import Verifier, load_tasks, make_environment
from .evaluate import resolve_policy

log = logging.getLogger(__name__)


@dataclass
class Group:
    samples: list[Episode]
    rewards: list[float]
    valid: list[bool]  # False where verification had an infra error


def init_path(recipe: Recipe) -> Path:
    spec = resolve_policy(recipe.grpo.init, recipe)
    return Path(spec[3:] if spec.startswith("hf:") else spec)


def as_trajectory(episode: Episode) -> Trajectory:
    return Trajectory(
        task_id=episode.task.id,
        policy="grpo",
        messages=episode.messages,
        finish_reason=episode.finish_reason,
        provenance=Provenance(provider="hf", model="grpo", created=0.0),
    )


def score(episode: Episode, verdict, cfg: GrpoConfig) -> tuple[float, bool]:
    if verdict.infra_error is not None:
        return 0.0, False
    reward = verdict.reward
    if cfg.overlong_buffer:  # on the last turn: the one a token limit can cut
        reward += overlong_penalty(torch.tensor([episode.usage[-1].tokens_out]), cfg.max_new_tokens, cfg.overlong_buffer).item()
    return reward, True


def collect(
    model, tokenizer, env, tasks, cursor: int, cfg: GrpoConfig, stop_ids, seed: int, max_turns: int, verifier: Verifier,
) -> tuple[list[Group], int, dict]:
    """Sample groups until `tasks_per_step` informative ones are found or refills run out (with a
    teacher every group is informative: one round, nothing dropped). `verifier`: the run's, whose
    workers (python's sandboxes) serve every step."""
    drop_flat = cfg.drop_zero_variance and cfg.teacher is None
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    groups, stats = [], {"groups": 0, "zero_variance": 0, "infra_errors": 0, "reward_sum": 0.0, "samples": 0, "tokens": 0}
    for round_ in range(cfg.max_refills + 1):
        need = cfg.tasks_per_step - len(groups)
        if need <= 0 or (round_ and not drop_flat):
            break
        batch = [tasks[(cursor + i) % len(tasks)] for i in range(need)]
        cursor += need
        starts = [(t, i) for t in batch for i in range(cfg.group_size)]
        episodes = run_episodes(model, tokenizer, env, starts, sampling, stop_ids, seed + cursor, max_turns, sampler=sample_ids_pruned)
        verdicts = verifier.verify_all([(e.task, as_trajectory(e)) for e in episodes])
        for g in range(len(batch)):
            members = episodes[g * cfg.group_size : (g + 1) * cfg.group_size]
            scored = [score(e, v, cfg) for e, v in zip(members, verdicts[g * cfg.group_size : (g + 1) * cfg.group_size])]
            group = Group(members, [r for r, _ in scored], [v for _, v in scored])
            stats["groups"] += 1
            stats["infra_errors"] += group.valid.count(False)
            valid_rewards = [r for r, v in scored if v]
            stats["reward_sum"] += sum(valid_rewards)
            stats["samples"] += len(valid_rewards)
            stats["tokens"] += sum(len(e.ids) for e in members)
            flat = len(valid_rewards) < 2 or zero_variance_groups(torch.tensor([valid_rewards])).item()
            stats["zero_variance"] += flat
            if not (flat and drop_flat):
                groups.append(group)
    return groups, cursor, stats


def valid_advantages(group: Group, cfg: GrpoConfig) -> list[float]:
    """Advantages from the valid samples only: an infra error neither gets a score nor shifts the baseline."""
    valid = [r for r, v in zip(group.rewards, group.valid) if v]
    scaled = iter(group_advantages(torch.tensor([valid]), scale_by_std=cfg.scale_by_std)[0].tolist()) if valid else iter(())
    return [next(scaled) if v else 0.0 for v in group.valid]


def batch_tensors(groups: list[Group], cfg: GrpoConfig, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, loss_mask: [B, L] (right-padded); advantages: [B]. Masked-out samples get mask 0."""
    advantages = torch.tensor([a for g in groups for a in valid_advantages(g, cfg)])
    rows = [(e, v) for g in groups for e, v in zip(g.samples, g.valid)]
    length = max(len(e.ids) for e, _ in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length))
    for r, (e, valid) in enumerate(rows):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        if valid:
            mask[r, : len(e.ids)] = torch.tensor(e.policy_mask, dtype=torch.float)
    return {"input_ids": ids, "loss_mask": mask, "advantages": advantages, "lengths": [len(e.ids) for e, _ in rows]}


def token_advantages(old: torch.Tensor, batch: dict, cfg: GrpoConfig, teacher) -> tuple[torch.Tensor, dict]:
    """[B] group advantages, or with a teacher [B, L-1] per-token ones; and the teacher's statistics."""
    if teacher is None:
        return batch["advantages"], {}
    mask = batch["loss_mask"][:, 1:]
    teacher_logp = teacher.logprobs(batch, batch["lengths"])
    per_token = reverse_kl_advantages(old, teacher_logp, mask) + cfg.reward_weight * batch["advantages"].unsqueeze(1) * mask
    scored = float(mask.sum())
    # Mean over the student's tokens of log p - log q: the sampled estimate of the reverse KL per token.
    reverse_kl = float(((old - teacher_logp) * mask).sum()) / max(scored, 1.0)
    return per_token, {"reverse_kl": reverse_kl, "teacher_tokens": int(scored)}


MICRO_BATCH_TOKENS = 4096  # padded tokens per forward/backward chunk of an update


def micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Rows grouped by length (shortest first) into chunks of at most `max_tokens` padded tokens, so
    each chunk is padded only to its own longest row; a row longer than the budget is a chunk alone."""
    chunks: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda r: lengths[r]):
        if chunks and (len(chunks[-1]) + 1) * lengths[row] <= max_tokens:
            chunks[-1].append(row)
        else:
            chunks.append([row])
    return chunks


def chunk_of(batch: dict, rows: list[int]) -> dict:
    width = max(batch["lengths"][r] for r in rows)
    index = torch.tensor(rows)
    return {"input_ids": batch["input_ids"][index, :width], "loss_mask": batch["loss_mask"][index, :width], "rows": index, "width": width}


def separate_old_pass(cfg: GrpoConfig, teacher) -> bool:
    """Whether the sampling policy's log-probs need a pass of their own: with one update per batch and
    no teacher they are the current policy's, detached (ratio 1), and come from the update's own pass."""
    return teacher is not None or cfg.updates_per_batch > 1


def update(
    model, reference, optimizer, batch: dict[str, torch.Tensor], cfg: GrpoConfig, teacher=None,
    skip_silent_rows: bool = True, chunk_tokens: int = MICRO_BATCH_TOKENS,
) -> tuple[float, dict]:
    """`updates_per_batch` optimizer steps on the batch. Each step runs in length-sorted chunks (less
    padding: `micro_batches`) whose gradients add up to the whole batch's loss: every chunk's loss is
    weighted by its share of the batch's normalizer (counted over all rows, computed or not). The
    "old" log-probs take a no-grad pass only where `separate_old_pass`."""
    mask = batch["loss_mask"][:, 1:]
    reuse_current = not separate_old_pass(cfg, teacher)
    # Rows that add nothing to the gradient are not computed (they still count in the normalizer): no
    # policy token (an infra error), or, with one advantage per sequence and no KL term, advantage 0
    # (a flat group kept with drop_zero_variance off), since then each of its tokens' loss is 0.
    silent = (batch["loss_mask"].sum(dim=1) == 0) | ((batch["advantages"] == 0) & (reference is None) & (teacher is None))
    silent &= skip_silent_rows  # False: computed anyway (the benchmark's ablation)
    live = [r for r in range(len(batch["lengths"])) if not silent[r]]
    chunks = [chunk_of(batch, [live[i] for i in rows]) for rows in micro_batches([batch["lengths"][r] for r in live], chunk_tokens)]
    old, ref = None, [None] * len(chunks)
    with torch.no_grad():
        if not reuse_current:
            old = sequence_logprobs(model, batch)
        if reference is not None:
            ref = [sequence_logprobs(reference, c) for c in chunks]
    advantages, teacher_stats = token_advantages(old, batch, cfg, teacher)  # without a teacher, `old` is not read
    tokens = mask.sum().clamp(min=1.0)
    loss_value = 0.0
    for _ in range(cfg.updates_per_batch):
        total = 0.0
        for c, c_ref in zip(chunks, ref):
            c_mask = c["loss_mask"][:, 1:]
            logp = sequence_logprobs(model, c)
            c_old = logp.detach() if reuse_current else old[c["rows"], : c["width"] - 1]
            c_adv = advantages[c["rows"]] if advantages.dim() == 1 else advantages[c["rows"], : c["width"] - 1]
            # The chunk's share of the batch normalizer: tokens for "token", sequences otherwise.
            share = c_mask.sum() / tokens if cfg.normalization == "token" else len(c["rows"]) / len(batch["lengths"])
            loss = share * clipped_policy_loss(logp, c_old, c_adv, c_mask, cfg.clip_low, cfg.clip_high, cfg.normalization, cfg.max_new_tokens)
            if c_ref is not None:
                loss = loss + cfg.kl_weight * (kl_to_reference(logp, c_ref) * c_mask).sum() / tokens
            loss.backward()
            total += loss.item()
        if not chunks:  # every row silent: a zero gradient, as computing them would have given
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = total
    return loss_value, teacher_stats


def budget_used(history: list[dict], cfg: GrpoConfig) -> float | None:
    """The share of its budget (seconds or teacher tokens, whichever is further along) a run has used;
    None without a budget."""
    shares = []
    if cfg.seconds_budget:
        shares.append(sum(h["seconds"] for h in history) / cfg.seconds_budget)
    if cfg.teacher_tokens_budget:
        shares.append(sum(h.get("teacher_tokens", 0) for h in history) / cfg.teacher_tokens_budget)
    return max(shares) if shares else None


def progress_note(entry: dict) -> str:
    note = f"reward {entry['mean_reward']:.3f} flat {entry['zero_variance_fraction']:.2f}"
    return note + (f" reverse KL {entry['reverse_kl']:.3f}" if "reverse_kl" in entry else "")


def run(recipe: Recipe, env: Environment | None = None) -> Path:
    """`env` replaces the recipe's environment (a custom one from Python)."""
    started, cfg, run_dir = time.time(), recipe.grpo, RunDir(recipe)
    start_from = init_path(recipe)
    out, ckpt_root = run_dir.model(cfg.output), run_dir.checkpoints(cfg.output)
    stage = f"grpo:{cfg.output}"
    teacher_spec = resolve_policy(cfg.teacher, recipe) if cfg.teacher else None
    weights = [start_from / "model.safetensors"]
    if teacher_spec and teacher_spec.startswith("hf:"):
        weights.append(Path(teacher_spec[3:]) / "model.safetensors")
    inputs = [w for w in weights if w.exists()]
    print_ = fingerprint({"grpo": cfg.model_dump(), "env": recipe.env.model_dump(), "tasks": recipe.tasks.model_dump(), "seed": recipe.run.seed}, inputs)
    if run_dir.is_done(stage, print_, [out]):
        log.info("%s: already done, nothing to do", stage)
        return out
    env = env or make_environment(recipe)
    tasks = load_tasks(recipe, env, "train")
    resume = complete_checkpoints(ckpt_root)
    model, tokenizer = load_model_and_tokenizer(resume[-1] if resume else start_from, "grpo.init")
    reference = load_model_and_tokenizer(start_from, "grpo.init")[0].eval() if cfg.kl_weight > 0 else None
    teacher = make_teacher(teacher_spec, "grpo.teacher", recipe, tokenizer) if teacher_spec else None
    stop_ids = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    params = sum(p.numel() for p in model.parameters())
    old_pass = separate_old_pass(cfg, teacher)
    torch.manual_seed(recipe.run.seed)
    # fused: one kernel over all parameters, ~5x faster than the per-tensor loop on CPU (bench/results.md)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    history, cursor, done = [], 0, 0
    if resume:
        state = load_state(resume[-1])
        if state["position"]["fingerprint"] != print_:
            raise WarmstartError(f"{ckpt_root}: checkpoints of another grpo config or starting model; remove them or set grpo.output")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        done, cursor, history = state["step"], state["position"]["cursor"], state["position"]["history"]
        log.info("%s: resuming from %s", stage, resume[-1])
    # A budgeted run shows its progress in percent of the budget, not of its step cap.
    budgeted = budget_used(history, cfg) is not None
    # One Verifier for the whole run: its workers and their sandboxes start once, not once per step, and
    # stop with the loop, however it ends.
    with Verifier(env) as verifier, progress_bar(f"grpo {cfg.output}" + (" (% of budget)" if budgeted else ""), 100 if budgeted else cfg.steps) as advance:
        shown = min(100, int(100 * budget_used(history, cfg))) if budgeted else 0
        advance(shown if budgeted else done)
        for step in range(done + 1, cfg.steps + 1):
            step_started = time.time()
            model.eval()
            groups, cursor, stats = collect(model, tokenizer, env, tasks, cursor, cfg, stop_ids, recipe.run.seed + 1000 * step, recipe.env.max_turns, verifier)
            model.train()
            loss, trained_tokens, teacher_stats = None, 0, {}
            if groups:  # every group flat: nothing to learn from this step
                batch = batch_tensors(groups, cfg, tokenizer.pad_token_id)
                loss, teacher_stats = update(model, reference, optimizer, batch, cfg, teacher)
                scheduler.step()
                trained_tokens = int(batch["input_ids"].numel())
            entry = {
                "step": step,
                "mean_reward": stats["reward_sum"] / max(1, stats["samples"]),
                "zero_variance_fraction": stats["zero_variance"] / max(1, stats["groups"]),
                "infra_errors": stats["infra_errors"],
                "groups_used": len(groups),
                "loss": loss,
                # Compute estimate: 2 x params per sampled token; per trained token 2 for the old
                # log-probs where they take a pass of their own (and 2 more for a reference model) plus 6 per update.
                # A local teacher's scoring pass adds 2 x its parameters per trained token.
                "flops_estimate": params * (2 * stats["tokens"] + (2 * old_pass + 2 * (reference is not None) + 6 * cfg.updates_per_batch) * trained_tokens)
                + 2 * (teacher.params if teacher else 0) * trained_tokens,
                "seconds": time.time() - step_started,
                **teacher_stats,
            }
            history.append(entry)
            used = budget_used(history, cfg)
            out_of_budget = used is not None and used >= 1.0
            moved = min(100, int(100 * used)) - shown if budgeted else 1
            shown += moved if budgeted else 0
            advance(moved, note=progress_note(entry))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_budget:
                position = {"cursor": cursor, "history": history, "fingerprint": print_, "init": str(start_from)}
                save(ckpt_root, step, model, tokenizer, optimizer, scheduler, position, cfg.keep_checkpoints)
            if out_of_budget:
                break
    publish(complete_checkpoints(ckpt_root)[-1], out)
    summary = {
        "steps": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "flops_estimate": sum(h["flops_estimate"] for h in history),
        "zero_variance_fraction": sum(h["zero_variance_fraction"] for h in history) / len(history),
        "updates": sum(h["groups_used"] > 0 for h in history) * cfg.updates_per_batch,
        **({"teacher_tokens": sum(h.get("teacher_tokens", 0) for h in history)} if teacher else {}),
        "history": history,
    }
    run_dir.mark_done(stage, print_, [out], started, summary)
    return out

