"""One GRPO step, and what it needs: sample groups and score them with the verifier (`collect`), turn
rewards into advantages, and take the clipped policy-ratio update (`update`).

Each step: take the next `tasks_per_step` train tasks, sample `group_size` completions each from the
current policy, score them with `env.verify` (the same function that filtered the teacher's data),
turn rewards into group-relative advantages, and take `updates_per_batch` optimizer steps on the
clipped policy-ratio loss, with the log-probs of the sampling policy kept as the "old" ones.

Knobs (GrpoConfig), all variants of one loss (`losses.py`): clip_low/clip_high (clip-higher),
normalization (token / sequence / constant = Dr. GRPO) and scale_by_std, kl_weight (0: no reference
model in memory), drop_zero_variance (dynamic sampling: groups whose rewards are all equal carry no
signal and are replaced by groups of the next tasks, up to max_refills rounds), overlong_buffer.
Which tasks `collect` draws from is the caller's: every train task, or with task_filter = "learnable"
only those the policy passes sometimes (`task_filter.py`), so fewer groups are flat to begin with.

A verdict with `infra_error` is masked out of the update and counted, never scored 0.

On-policy distillation (`grpo.teacher`): a teacher (`distill/teacher.py`: a local model, or a server
returning prompt logprobs) scores the student's sampled tokens, and each token gets its own advantage
log q(x_t) - log p(x_t) (`distill/losses.reverse_kl_advantages`), plus `reward_weight` x the verifier's
group advantage. It is an advantage in this machinery rather than a separate loss because then it needs
only the log-prob of the sampled token, which a server gives (a full-distribution reverse KL would need
the teacher's whole distribution at every student position), and it reuses the sampler, masks,
clipping, checkpoints and the verifier mix unchanged. Flat reward groups are kept then (the teacher's
signal does not depend on reward variance).

Multi-turn: where the environment has tools, each sample is a whole episode (`lm/rollout.py`): the
policy's turns are trained on, tool results and template text between turns are not (loss mask 0).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from ..config import GrpoConfig
from ..distill.losses import reverse_kl_advantages
from ..envs.verification import Verifier
from ..errors import WarmstartError
from ..lm.generation import sample_ids_pruned
from ..lm.rollout import Episode
from ..lm.scoring import chunked_sequence_logprobs, logit_transforms, sequence_logprobs
from ..lm.shared_prefix import PrefixPass
from ..types import Sampling
from .clipping import clip_gradients, gradient_norm
from .distributed import SINGLE, World, sum_gradients
from .losses import clipped_policy_loss, group_advantages, kl_to_reference, overlong_penalty, zero_variance_groups
from .mismatch import MismatchTally, tis_weights
from .rollouts import sample_and_verify
from .step_checks import StepChecks


@dataclass
class Group:
    samples: list[Episode]
    rewards: list[float]
    valid: list[bool]  # False where verification had an infra error


def score(episode: Episode, verdict, cfg: GrpoConfig) -> tuple[float, bool]:
    if verdict.infra_error is not None:
        return 0.0, False
    if not math.isfinite(verdict.reward):
        # An environment passed from Python is not wrapped as a plugin is (envs/plugins.py, which makes such a
        # verdict an infra error): NaN would make the group's advantages and the loss NaN, an error blaming lr.
        return 0.0, False
    reward = verdict.reward
    if cfg.overlong_buffer:  # on the last turn: the one a token limit can cut
        reward += overlong_penalty(
            torch.tensor([episode.usage[-1].tokens_out]), cfg.max_new_tokens, cfg.overlong_buffer
        ).item()
    return reward, True


def collect(
    model,
    tokenizer,
    env,
    tasks,
    cursor: int,
    cfg: GrpoConfig,
    stop_ids,
    seed: int,
    max_turns: int,
    verifier: Verifier,
    world: World = SINGLE,
    sampler=sample_ids_pruned,
) -> tuple[list[Group], int, dict]:
    """Sample groups until `tasks_per_step` informative ones are found or refills run out (with a
    teacher every group is informative: one round, nothing dropped). `verifier`: the run's, whose
    workers (python's sandboxes) serve every step. Each process samples its share of the rollouts and
    every process ends with all the groups (train/rollouts.py). `sampler`: the local decoding loop, or a
    rollout server's."""
    drop_flat = cfg.drop_zero_variance and cfg.teacher is None
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    groups: list[Group] = []
    stats = {"groups": 0, "zero_variance": 0, "infra_errors": 0, "reward_sum": 0.0, "samples": 0, "tokens": 0}
    for round_ in range(cfg.max_refills + 1):
        need = cfg.tasks_per_step - len(groups)
        if need <= 0 or (round_ and not drop_flat):
            break
        batch = [tasks[(cursor + i) % len(tasks)] for i in range(need)]
        cursor += need
        starts = [(t, i) for t in batch for i in range(cfg.group_size)]
        episodes, verdicts = sample_and_verify(
            model, tokenizer, env, starts, sampling, stop_ids, seed + cursor, max_turns, verifier, world, sampler
        )
        for g in range(len(batch)):
            members = slice(g * cfg.group_size, (g + 1) * cfg.group_size)
            group = scored_group(episodes[members], verdicts[members], cfg)
            flat = tally(stats, group)
            if not (flat and drop_flat):
                groups.append(group)
    return groups, cursor, stats


def repeated_tasks(tasks: int, cfg: GrpoConfig) -> str | None:
    """Where there are fewer train tasks than a step samples, every step samples some tasks twice: a
    sentence saying so (to be logged once), else None. A task drawn twice in one sampling round gets the
    same completions (each row's random stream is keyed by its task and sample index), so its group
    weighs twice in the update. Not refused, as SFT's repeated rows (train/sft.repeated_rows) are not: the
    update is well defined, and a smoke test on a few tasks should not need its batch settings changed."""
    if tasks >= cfg.tasks_per_step:
        return None
    return (
        f"{tasks} train tasks, fewer than grpo.tasks_per_step = {cfg.tasks_per_step}: every step samples tasks "
        "more than once, with the same completions (a row's random stream is keyed by task and sample index), "
        "so their groups count more than once"
    )


def scored_group(members: list[Episode], verdicts: list, cfg: GrpoConfig) -> Group:
    scored = [score(e, v, cfg) for e, v in zip(members, verdicts)]
    return Group(members, [r for r, _ in scored], [v for _, v in scored])


def tally(stats: dict, group: Group) -> bool:
    """Count a group into the step's statistics; whether it is flat (all valid rewards equal: no signal)."""
    valid_rewards = [r for r, v in zip(group.rewards, group.valid) if v]
    stats["groups"] += 1
    stats["infra_errors"] += group.valid.count(False)
    stats["reward_sum"] += sum(valid_rewards)
    stats["samples"] += len(valid_rewards)
    stats["tokens"] += sum(len(e.ids) for e in group.samples)
    flat = len(valid_rewards) < 2 or zero_variance_groups(torch.tensor([valid_rewards])).item()
    stats["zero_variance"] += flat
    return flat


def valid_advantages(group: Group, cfg: GrpoConfig) -> list[float]:
    """Advantages from the valid samples only: an infra error neither gets a score nor shifts the baseline."""
    valid = [r for r, v in zip(group.rewards, group.valid) if v]
    scaled = (
        iter(group_advantages(torch.tensor([valid]), scale_by_std=cfg.scale_by_std)[0].tolist()) if valid else iter(())
    )
    return [next(scaled) if v else 0.0 for v in group.valid]


def batch_tensors(
    groups: list[Group], cfg: GrpoConfig, pad_id: int, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """input_ids, loss_mask: [B, L] (right-padded); advantages: [B], on `device`. Masked-out samples get mask 0."""
    advantages = torch.tensor([a for g in groups for a in valid_advantages(g, cfg)])
    rows = [(e, v) for g in groups for e, v in zip(g.samples, g.valid)]
    length = max(len(e.ids) for e, _ in rows)
    # Padded as Python lists, then one tensor each: tensors row by row took ~7 ms of a tiny GRPO step (128
    # rows of ~90 ids), these ~4 ms (2-core EPYC, CPU flags avx2 avx512_bf16).
    ids = torch.tensor([right_padded(e.ids, length, pad_id) for e, _ in rows], dtype=torch.long)
    mask = torch.tensor(
        [right_padded(e.policy_mask if valid else [], length, 0) for e, valid in rows], dtype=torch.float
    )
    sampler = torch.tensor(  # nan where the sampler gave no log-prob
        [right_padded(sampler_logprobs(e), length, float("nan")) for e, _ in rows], dtype=torch.float
    )
    tensors = {
        "input_ids": ids.to(device),
        "loss_mask": mask.to(device),
        "advantages": advantages.to(device),
        "sampler_logp": sampler.to(device),  # [B, L]: position t holds log p(token t), as sampled
    }
    # The normalizers of the whole batch: a process training some of its rows (`rows_of`) still divides
    # by these, so the processes' gradients add up to the whole batch's.
    totals = {"scored_tokens": mask[:, 1:].sum().clamp(min=1.0).item(), "sequences": len(rows)}
    return {**tensors, "lengths": [len(e.ids) for e, _ in rows], **totals}


def right_padded(values: list, length: int, pad) -> list:
    return values + [pad] * (length - len(values))


def sampler_logprobs(episode: Episode) -> list[float]:
    """The sampler's log-prob per id (nan where it gave none), or none at all where they do not line up."""
    if len(episode.sampler_logprobs) != len(episode.ids):
        return []
    return [float("nan") if v is None else v for v in episode.sampler_logprobs]


def rows_of(batch: dict, rows: list[int]) -> dict:
    """The batch's `rows` (indices), keeping the whole batch's normalizers."""
    index = torch.tensor(rows, dtype=torch.long, device=batch["input_ids"].device)
    picked = {key: batch[key][index] for key in ("input_ids", "loss_mask", "advantages", "sampler_logp")}
    return {**batch, **picked, "lengths": [batch["lengths"][r] for r in rows]}


def process_rows(batch: dict, world: World) -> dict:
    """This process's rows of the batch: every size-th of the rows sorted by length, so each process
    gets a like share of long and short ones."""
    if world.size == 1:
        return batch
    by_length = sorted(range(len(batch["lengths"])), key=lambda r: batch["lengths"][r])
    return rows_of(batch, sorted(world.share(by_length)))


def scoring_model(reference):
    """The model that scores the KL reference: a frozen copy as it is; LoRA's base with the adapter switched
    off (train/lora.py `AdapterOff.switched_off`), which scoring reads as a model of its own (its config,
    decoder and head), not only through a forward."""
    switched_off = getattr(reference, "switched_off", None)
    return switched_off() if switched_off is not None else contextlib.nullcontext(reference)


def token_advantages(
    old: torch.Tensor, batch: dict, cfg: GrpoConfig, teacher, chunks: list[list[int]]
) -> tuple[torch.Tensor, dict]:
    """[B] group advantages, or with a teacher [B, L-1] per-token ones; and the teacher's statistics.
    `chunks`: the update's rows, chunk by chunk, which a local teacher scores one chunk at a time."""
    if teacher is None:
        return batch["advantages"], {}
    mask = batch["loss_mask"][:, 1:]
    teacher_logp = teacher.logprobs(batch, batch["lengths"], chunks)
    per_token = (
        reverse_kl_advantages(old, teacher_logp, mask) + cfg.reward_weight * batch["advantages"].unsqueeze(1) * mask
    )
    # Sums over the student's tokens of log p - log q (the sampled estimate of the reverse KL): a
    # process's rows' share, which `update` adds up over the processes and turns into a mean.
    return per_token, {
        "reverse_kl_sum": float(((old - teacher_logp) * mask).sum()),
        "teacher_tokens": float(mask.sum()),
    }


def total_teacher_stats(stats: dict, world: World) -> dict:
    """The teacher's statistics over the whole batch: tokens scored and the mean reverse KL per token."""
    if not stats:
        return {}
    tokens = world.total(stats["teacher_tokens"])
    return {"reverse_kl": world.total(stats["reverse_kl_sum"]) / max(tokens, 1.0), "teacher_tokens": int(tokens)}


MICRO_BATCH_TOKENS = 4096  # padded tokens per forward/backward chunk of an update
# What one more chunk costs, in padded tokens' worth of compute (its own pass over the shared prompts, its
# operators' fixed cost, smaller products): chosen by timing the tiny GRPO model's update (128 rows of
# 25-110 tokens, 2 threads) with 200, 400, 600, 1,000 and 2,500; 400-2,500 were alike within noise.
CHUNK_COST_TOKENS = 1000


def micro_batches(lengths: list[int], max_tokens: int, chunk_cost: int = CHUNK_COST_TOKENS) -> list[list[int]]:
    """Rows grouped by length (shortest first) into chunks of at most `max_tokens` padded tokens (a row
    longer than that is a chunk alone), each padded only to its own longest row, cut where the padded
    tokens plus `chunk_cost` per chunk are fewest (dynamic programming over the sorted rows). Filling
    each chunk up to the budget instead padded GRPO's first chunk, its shortest rows, to the length of
    its longest: ~17 % of the tiny benchmark's padded tokens were padding, 3-8 % now, and the update
    ~5 % faster (medians of 10 interleaved repetitions over 6 recorded batches, 2-core AVX-512 EPYC)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    cost = [0] * (len(order) + 1)  # cost[j]: the cheapest cut of the j shortest rows
    start = [0] * (len(order) + 1)  # start[j]: where that cut's last chunk starts
    for end in range(1, len(order) + 1):
        width = lengths[order[end - 1]]  # the chunk's longest row: it ends here
        cost[end] = cost[end - 1] + width + chunk_cost
        start[end] = end - 1
        for begin in range(end - 2, -1, -1):
            if (end - begin) * width > max_tokens:
                break
            candidate = cost[begin] + (end - begin) * width + chunk_cost
            if candidate < cost[end]:
                cost[end], start[end] = candidate, begin
    chunks, end = [], len(order)
    while end:
        chunks.append(order[start[end] : end])
        end = start[end]
    return chunks[::-1]


def chunk_of(batch: dict, rows: list[int]) -> dict:
    width = max(batch["lengths"][r] for r in rows)
    index = torch.tensor(rows, device=batch["input_ids"].device)
    return {
        "input_ids": batch["input_ids"][index, :width],
        "loss_mask": batch["loss_mask"][index, :width],
        "sampler_logp": batch["sampler_logp"][index, 1:width],  # aligned with the log-probs of tokens 1..
        "rows": index,
        "width": width,
    }


def separate_old_pass(cfg: GrpoConfig, teacher) -> bool:
    """Whether the sampling policy's log-probs need a pass of their own: with one update per batch and
    no teacher they are the current policy's, detached (ratio 1), and come from the update's own pass."""
    return teacher is not None or cfg.updates_per_batch > 1


def policy_positions(batch: dict) -> torch.Tensor:
    """[B, L-1] bool: the positions that predict a policy token, the only log-probs the loss reads."""
    return batch["loss_mask"][:, 1:] > 0


def update(
    model,
    reference,
    optimizer,
    batch: dict[str, torch.Tensor],
    cfg: GrpoConfig,
    teacher=None,
    skip_silent_rows: bool = True,
    chunk_tokens: int = MICRO_BATCH_TOKENS,
    world: World = SINGLE,
    checks: StepChecks | None = None,
) -> tuple[float, dict]:
    """`updates_per_batch` optimizer steps on the batch. Each step runs in length-sorted chunks (less
    padding: `micro_batches`) whose gradients add up to the whole batch's loss: every chunk's loss is
    weighted by its share of the batch's normalizer (counted over all rows, computed or not). The
    "old" log-probs take a no-grad pass only where `separate_old_pass`, by the same chunks, as a local
    teacher's scoring does (a row no chunk computes reads 0 there: no loss term reads it). Several
    processes: each computes its rows' gradients (`process_rows`), summed over the processes before
    clipping and the step.
    `checks`: the step's divergence checks (train/step_checks.py), before each optimizer step: the clip's
    gradient norm, and from the second update on how far the earlier ones moved the sampled tokens'
    log-probs (read from the pass the update takes anyway)."""
    batch = process_rows(batch, world)
    reuse_current = not separate_old_pass(cfg, teacher)
    chunks = live_chunks(
        batch, skip_silent_rows and reference is None and teacher is None, skip_silent_rows, chunk_tokens
    )
    old, ref = None, [None] * len(chunks)
    chunk_rows = [c["rows"].tolist() for c in chunks]
    with torch.no_grad():
        if not reuse_current:  # by the update's chunks: one chunk's activations and logits at a time
            old = chunked_sequence_logprobs(
                model, batch["input_ids"], policy_positions(batch), batch["lengths"], chunk_rows
            )
        if reference is not None:
            with scoring_model(reference) as scorer:
                ref = [sequence_logprobs(scorer, c, policy_positions(c)) for c in chunks]
    advantages, teacher_stats = token_advantages(old, batch, cfg, teacher, chunk_rows)  # no teacher: `old` unread
    mismatch = MismatchTally()
    loss_value = 0.0
    for update_index in range(cfg.updates_per_batch):
        loss_value = 0.0
        move = PolicyMove() if checks is not None and update_index > 0 else None
        prefixes = batch_prefix_pass(model, batch, chunks, chunk_tokens)
        for c, c_ref in zip(chunks, ref):
            c_old = None if reuse_current else old[c["rows"], : c["width"] - 1]
            tally = mismatch if update_index == 0 else None
            loss = chunk_loss(model, c, c_old, c_ref, advantages, batch, cfg, tally, prefixes, move)
            loss.backward()
            loss_value += loss.item()
        if prefixes is not None:
            prefixes.backward()
        if update_index == 0:
            mismatch_stats = checked_mismatch(mismatch, cfg, world)  # before any step on a batch it rejects
        if move is not None:
            checks.policy_move(move.mean(world))
        if not chunks:  # every row silent: a zero gradient, as computing them would have given
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
        sum_gradients(model, world)
        norm = clip_gradients(model.parameters(), cfg.grad_clip)
        if checks is not None:  # a 0 gradient means something only at ratio 1, where no token is clipped
            checks.gradient_norm(norm, lambda: update_index == 0 and has_signal(advantages, batch, world))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return world.total(loss_value), {**total_teacher_stats(teacher_stats, world), **mismatch_stats}


def checked_mismatch(mismatch: MismatchTally, cfg: GrpoConfig, world: World) -> dict:
    """The batch's mismatch statistics, or an error where the sampler is too far from the trainer to be
    sampling this policy (no update is taken on such a batch)."""
    stats = mismatch.stats(world)
    if stats and stats["mismatch_abs_logp"] > cfg.mismatch_limit:
        raise WarmstartError(
            f"grpo: the sampler's log-probs differ from the trainer's by {stats['mismatch_abs_logp']:.3f} nats per "
            f"token on average (grpo.mismatch_limit = {cfg.mismatch_limit}): the tokens were not sampled from this "
            "policy (a rollout server serving another model or stale weights?); no update was taken on them"
        )
    return stats


def live_chunks(batch: dict, skip_zero_advantage: bool, skip_maskless: bool, chunk_tokens: int) -> list[dict]:
    """The rows that add to the gradient, in length-sorted chunks. Rows left out still count in the
    normalizer: those with no policy token (an infra error), and, where each sequence has one advantage
    and there is no KL term, those with advantage 0 (a flat group kept with drop_zero_variance off),
    since then each of their tokens' loss is 0. `skip_*` False: computed anyway (the benchmark's ablation)."""
    silent = (batch["loss_mask"].sum(dim=1) == 0) & skip_maskless
    silent |= (batch["advantages"] == 0) & skip_zero_advantage
    live = [r for r in range(len(batch["lengths"])) if not silent[r]]
    lengths = [batch["lengths"][r] for r in live]
    return [chunk_of(batch, [live[i] for i in rows]) for rows in micro_batches(lengths, chunk_tokens)]


def batch_prefix_pass(model, batch: dict, chunks: list[dict], chunk_tokens: int) -> PrefixPass | None:
    """The prompts the chunks' rows share, run once through the model for all of them (lm/shared_prefix.py
    `PrefixPass`), where there is more than one chunk to share them, gradients are on, and the prompts
    fit beside each chunk's suffixes in the chunk's token budget (the memory plan's activations)."""
    if len(chunks) < 2 or not torch.is_grad_enabled() or logit_transforms(model):
        return None
    rows = sorted(int(r) for c in chunks for r in c["rows"])
    index = torch.tensor(rows, device=batch["input_ids"].device)
    left = chunk_tokens - max(suffix_tokens(c) for c in chunks)
    return PrefixPass.start(model, batch["input_ids"][index], policy_positions(batch)[index], rows, left)


def suffix_tokens(c: dict) -> int:
    """The padded tokens a chunk runs on top of its prompts' K/V: from its rows' earliest first policy token."""
    scored = policy_positions(c)
    first = int(scored.to(torch.int8).argmax(dim=1)[scored.any(dim=1)].min()) if scored.any() else 0
    return len(c["rows"]) * (c["width"] - first)


def chunk_loss(
    model,
    c: dict,
    c_old,
    c_ref,
    advantages: torch.Tensor,
    batch: dict,
    cfg: GrpoConfig,
    mismatch=None,
    prefixes: PrefixPass | None = None,
    move: PolicyMove | None = None,
) -> torch.Tensor:
    """A chunk's clipped policy loss (plus KL to the reference), weighted by its share of the batch's
    normalizer, each token by its importance weight against the sampler (train/mismatch.py). `c_old`
    None: the policy before the update is the current one (ratio 1, log-probs detached). `mismatch`: a
    MismatchTally the chunk's tokens are counted into. `prefixes`: the batch's shared prompts, run once
    for all its chunks (`batch_prefix_pass`); the caller runs its backward after the chunks'. `move`: a
    PolicyMove the chunk's tokens are counted into, from `c_old` (the sampler's log-probs where it is None)."""
    c_mask = c["loss_mask"][:, 1:]
    tokens = batch["scored_tokens"]
    logp = sequence_logprobs(model, c, policy_positions(c), prefix_pass=prefixes)
    if move is not None:
        move.add(c["sampler_logp"] if c_old is None else c_old, logp, c_mask)
    c_old = logp.detach() if c_old is None else c_old
    if mismatch is not None:
        mismatch.add(c_old, c["sampler_logp"], c_mask, cfg.tis_cap or None)
    c_adv = advantages[c["rows"]] if advantages.dim() == 1 else advantages[c["rows"], : c["width"] - 1]
    # The chunk's share of the batch normalizer: tokens for "token", sequences otherwise.
    share = c_mask.sum() / tokens if cfg.normalization == "token" else len(c["rows"]) / batch["sequences"]
    weights = tis_weights(c_old, c["sampler_logp"], cfg.tis_cap or None)
    loss = share * clipped_policy_loss(
        logp, c_old, c_adv, c_mask, cfg.clip_low, cfg.clip_high, cfg.normalization, cfg.max_new_tokens, weights
    )
    if c_ref is not None:
        loss = loss + cfg.kl_weight * (kl_to_reference(logp, c_ref) * c_mask).sum() / tokens
    return loss


@dataclass
class PolicyMove:
    """How far a batch's updates moved the log-probs of its policy tokens: their fall from before the
    updates, summed over the chunks (and processes) it was measured on. Its mean is an estimate of the
    KL divergence of the updated policy from the one that sampled the tokens."""

    fall: float = 0.0
    tokens: float = 0.0

    def add(self, before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> None:
        """Count the policy tokens (`mask` 1) whose log-prob before is known (not NaN: a sampler's may not be)."""
        known = (~torch.isnan(before)) & (mask > 0)
        # torch.where, not indexing by `known`: ~0.1 vs 3-8 ms for 128 rows of 256 (2-core EPYC, loaded)
        self.fall += float(torch.where(known, before - after.detach(), 0.0).sum(dtype=torch.float64))
        self.tokens += float(known.sum())

    def mean(self, world: World = SINGLE) -> float | None:
        """The mean fall per token over every process; None where no token was measured."""
        tokens = world.total(self.tokens)
        return world.total(self.fall) / tokens if tokens else None


def has_signal(advantages: torch.Tensor, batch: dict, world: World = SINGLE) -> bool:
    """Whether some policy token of the batch (in any process) has an advantage other than 0: then the
    loss at ratio 1 has a gradient unless the model's output no longer depends on its weights."""
    per_token = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
    local = bool(((per_token != 0) & policy_positions(batch)).any())
    return world.total(float(local)) > 0


def check_unseen_update(model, batch: dict, cfg: GrpoConfig, checks: StepChecks, world: World = SINGLE) -> None:
    """The weights after the last update, checked on the batch it was taken on before a checkpoint saves
    them: no later step may measure it (the last one's, or one followed by flat steps only, which take no
    update). On a chunk of its rows: how far the batch's updates moved the sampled tokens' log-probs from
    the sampler's (the policy that sampled them, to within grpo.mismatch_limit), and the gradient an
    update at ratio 1 would take from the group advantages (a teacher's and the KL term left out). No
    update is taken, the gradient is dropped, and the random state (dropout's draws; a checkpoint keeps
    it) is left as it was."""
    batch = process_rows(batch, world)
    signal = live_chunks(batch, True, True, MICRO_BATCH_TOKENS)  # rows with a policy token and an advantage
    # One chunk (the shortest such rows, at most MICRO_BATCH_TOKENS padded tokens) is enough for both
    # measures: a checkpoint costs one chunk's forward and backward, not the whole batch's.
    chunks = (signal or live_chunks(batch, False, True, MICRO_BATCH_TOKENS))[:1]
    move = PolicyMove()
    with torch.random.fork_rng(devices=[]):
        for c in chunks:
            chunk_loss(model, c, None, None, batch["advantages"], batch, cfg, move=move).backward()
    sum_gradients(model, world)
    norm = gradient_norm(model.parameters())
    model.zero_grad(set_to_none=True)
    checks.policy_move(move.mean(world))
    checks.gradient_norm(norm, lambda: world.total(float(bool(signal))) > 0)
