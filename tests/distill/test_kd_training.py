"""Logit distillation in SFT (sparse top-k, dense), the signal choice, and on-policy distillation in GRPO."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from helpers import curated_run
from warmstart.config import TinyModelConfig, with_section
from warmstart.distill.losses import dense_kl, mixed_token_loss, sparse_kl
from warmstart.distill.step import KdSetup, kd_backward
from warmstart.errors import WarmstartError
from warmstart.lm.models import load_model_and_tokenizer
from warmstart.lm.tinymodel import build_tiny_llama, save_tiny_student
from warmstart.runs.directory import RunDir
from warmstart.runs.jsonl import read_records
from warmstart.stages import curate, generate, grpo, sft
from warmstart.types import Trajectory

TOP_K = 3


def tiny_llama(seed: int, vocab: int = 40) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


def packed_batch(vocab: int = 40) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    ids = torch.randint(0, vocab, (2, 12))
    positions = torch.cat([torch.arange(5), torch.arange(7)]).repeat(2, 1)  # two examples per row
    mask = (torch.rand(2, 12) > 0.4).float()
    return {"input_ids": ids, "position_ids": positions, "loss_mask": mask}


def reference_loss(student, batch, kd_of_logits, weight: float) -> torch.Tensor:
    """The same objective from full [B, T, V] logits: what chunking must reproduce."""
    logits = student(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1]
    positions = batch["loss_mask"][:, 1:] > 0
    scored = logits[positions]
    ce = F.cross_entropy(scored, batch["input_ids"][:, 1:][positions], reduction="none")
    kd, has = kd_of_logits(scored, positions)
    return mixed_token_loss(ce, kd, has, weight).sum()


def grads(model) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunked_dense_kd_equals_the_full_logits_loss_and_gradients(chunk):
    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    batch = packed_batch()

    def dense(scored, positions):
        with torch.no_grad():
            t = teacher(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[
                :, :-1
            ][positions]
        return dense_kl(scored, t), torch.ones(len(scored), dtype=torch.bool)

    expected = reference_loss(student, batch, dense, 0.7)
    expected.backward()
    expected_grads = grads(student)
    totals = kd_backward(student, batch, KdSetup("logits", 0.7, chunk, teacher), scale=1.0)
    assert abs(totals.loss - expected.item()) < 1e-4
    for got, want in zip(grads(student), expected_grads):
        assert torch.allclose(got, want, atol=1e-5)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never trained


def test_chunked_sparse_kd_equals_the_full_logits_loss_and_gradients():
    student, teacher = tiny_llama(0), tiny_llama(1)
    batch = packed_batch()
    with torch.no_grad():
        logq = torch.log_softmax(
            teacher(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits, -1
        )
    values, ids = logq.topk(TOP_K, dim=-1)
    # The teacher's distribution at token t is the one that predicted it (position t - 1), stored at t.
    kd_ids = torch.cat([ids[:, :1], ids[:, :-1]], dim=1)
    kd_logp = torch.cat([values[:, :1], values[:, :-1]], dim=1)
    kd_mask = torch.rand(2, 12) > 0.3
    batch |= {"kd_ids": kd_ids, "kd_logp": kd_logp, "kd_mask": kd_mask}

    def sparse(scored, positions):
        return sparse_kl(scored, kd_ids[:, 1:][positions], kd_logp[:, 1:][positions]), kd_mask[:, 1:][positions]

    expected = reference_loss(student, batch, sparse, 0.5)
    expected.backward()
    expected_grads = grads(student)
    totals = kd_backward(student, batch, KdSetup("topk", 0.5, 3, None), scale=1.0)
    assert abs(totals.loss - expected.item()) < 1e-4
    for got, want in zip(grads(student), expected_grads):
        assert torch.allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    """Reference data, a briefly trained teacher with the student's tokenizer, and its answers with top-k."""
    run_dir = tmp_path_factory.mktemp("kd")
    recipe = curated_run(run_dir, "sft.steps=40", "generate.max_new_tokens=48", "eval.max_new_tokens=48", train=80)
    base = sft.prepare_tiny_base(recipe, read_records(RunDir(recipe).curated("train"), Trajectory))
    teacher_base = RunDir(recipe).model("teacher-base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    build_tiny_llama(
        tokenizer, TinyModelConfig(hidden_size=48, intermediate_size=96, num_layers=2, num_heads=2), 1
    ).save_pretrained(teacher_base)
    tokenizer.save_pretrained(teacher_base)
    teacher = sft.run(with_section(recipe, "sft", student=str(teacher_base), output="kd-teacher", distill="tokens"))
    kd = with_section(recipe, "generate", teacher=f"hf:{teacher}", output="kd")
    kd = with_section(kd, "api", top_logprobs=TOP_K)
    kd = with_section(kd, "curate", input="kd", output="kd", require_passed=False)
    generate.run(kd)
    curate.run(kd)
    return kd


def signal_of(recipe, output: str) -> dict:
    return RunDir(recipe).manifest()["stages"][f"sft:{output}"]["distill"]


def test_a_local_teacher_records_top_k_log_probs_by_token_id(kd_run):
    trajectory = read_records(RunDir(kd_run).curated("kd"), Trajectory)[0]
    turn = trajectory.logprobs[0]
    assert {"id", "logprob", "top_logprobs"} <= set(turn[0])
    assert all(len(entry["top_logprobs"]) == TOP_K for entry in turn)
    values = [alt["logprob"] for alt in turn[0]["top_logprobs"]]
    assert values == sorted(values, reverse=True) and values[0] <= 0.0


def test_auto_picks_dense_kd_for_a_local_teacher_and_sparse_for_recorded_top_k(kd_run):
    sft.run(with_section(kd_run, "sft", data="kd", output="auto-local", teacher="run:kd-teacher", steps=3))
    record = signal_of(kd_run, "auto-local")
    assert record["signal"] == "logits" and "local model" in record["reason"]
    sft.run(
        with_section(kd_run, "sft", data="kd", output="auto-topk", steps=3)
    )  # sft.teacher = generate.teacher = hf:...
    sft.run(with_section(kd_run, "sft", data="kd", output="forced-topk", distill="topk", steps=3))
    record = signal_of(kd_run, "forced-topk")
    assert record["signal"] == "topk" and record["turns_aligned"] > 0
    assert record["turns_aligned"] <= record["turns_with_logprobs"]


def test_text_only_teacher_means_plain_sft_and_the_reason_is_recorded(kd_run):
    reference = with_section(with_section(kd_run, "generate", teacher="reference"), "sft", output="text-only", steps=3)
    sft.run(reference)
    record = signal_of(reference, "text-only")
    assert record["signal"] == "tokens" and "not a local model" in record["reason"] and "text only" in record["reason"]
    sft.run(with_section(kd_run, "sft", data="kd", output="weight-zero", kd_weight=0.0, steps=3))
    assert signal_of(kd_run, "weight-zero") == {"signal": "tokens", "reason": "sft.kd_weight = 0", "kd_weight": 0.0}


@pytest.fixture(scope="module")
def foreign_teacher(kd_run, tmp_path_factory):
    """A model whose tokenizer was trained on other text: another vocabulary."""
    texts = ["zebra quartz " * 20, "lorem ipsum dolor " * 20]
    return save_tiny_student(
        texts,
        tmp_path_factory.mktemp("foreign") / "m",
        TinyModelConfig(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, vocab_size=300),
        0,
    )


def test_a_teacher_with_another_tokenizer_is_refused_for_logit_kd(kd_run, foreign_teacher):
    forced = with_section(
        kd_run, "sft", data="kd", output="foreign-logits", distill="logits", teacher=f"hf:{foreign_teacher}", steps=3
    )
    with pytest.raises(WarmstartError, match="vocabulary.*differs.*cross-tokenizer distillation is not supported"):
        sft.run(forced)
    # Auto: the logits are not usable, so it says so and takes the next richest signal (recorded top-k).
    auto = with_section(kd_run, "sft", data="kd", output="foreign-auto", teacher=f"hf:{foreign_teacher}", steps=3)
    sft.run(auto)
    record = signal_of(auto, "foreign-auto")
    assert record["signal"] == "topk" and "differs" in record["reason"]


def test_token_ids_a_teacher_of_another_vocabulary_recorded_are_not_used_for_sparse_kd(kd_run, foreign_teacher):
    # The kd data's ids are the tiny tokenizer's; this student's vocabulary is another.
    forced = with_section(
        kd_run, "sft", data="kd", student=str(foreign_teacher), output="ids-forced", distill="topk", steps=3
    )
    with pytest.raises(
        WarmstartError, match=r"sft.distill = topk: the token ids .*kd-teacher recorded are not the student"
    ):
        sft.run(forced)
    auto = with_section(kd_run, "sft", data="kd", student=str(foreign_teacher), output="ids-auto", steps=3)
    sft.run(auto)
    record = signal_of(auto, "ids-auto")
    assert record["signal"] == "tokens" and "recorded are not the student's" in record["reason"]


def test_recorded_tokens_that_are_not_the_students_are_refused_for_sparse_kd(kd_run):
    run_dir = RunDir(kd_run)
    trajectories = read_records(run_dir.curated("kd"), Trajectory)
    api_style = [[{"token": "\u2603" * 3, "logprob": -0.1, "top_logprobs": []}]]  # text the student cannot have
    path = run_dir.curated("foreign-tokens")
    path.write_text(
        "".join(t.model_copy(update={"logprobs": api_style}).model_dump_json() + "\n" for t in trajectories)
    )
    with pytest.raises(WarmstartError, match="not a token of the student.*cross-tokenizer"):
        sft.run(with_section(kd_run, "sft", data="foreign-tokens", output="foreign-topk", distill="topk", steps=3))


def mean_dense_kl(student_dir, teacher_dir, recipe) -> float:
    from warmstart.train.data import collate, tokenize

    student, tokenizer = load_model_and_tokenizer(student_dir, "s")
    teacher, _ = load_model_and_tokenizer(teacher_dir, "t")
    trajectories = read_records(RunDir(recipe).curated("kd"), Trajectory)[:16]
    examples, _, _ = tokenize(tokenizer, trajectories, 128)
    batch = collate([[i] for i in range(len(examples))], examples, 128, tokenizer.pad_token_id)
    positions = batch["loss_mask"][:, 1:] > 0
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1][
            positions
        ]
        t = teacher(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1][
            positions
        ]
    return dense_kl(s, t).mean().item()


@pytest.fixture(scope="module")
def dense_student(kd_run) -> Path:
    """models/dense: a student trained by dense KD alone (kd_weight 1) on the local teacher."""
    return sft.run(
        with_section(
            kd_run,
            "sft",
            data="kd",
            output="dense",
            distill="logits",
            teacher="run:kd-teacher",
            kd_weight=1.0,
            steps=40,
            kd_chunk=17,
        )
    )


def test_dense_kd_pulls_the_student_to_the_teachers_distribution(kd_run, dense_student):
    out = dense_student
    run_dir = RunDir(kd_run)
    before = mean_dense_kl(run_dir.model("base"), run_dir.model("kd-teacher"), kd_run)
    after = mean_dense_kl(out, run_dir.model("kd-teacher"), kd_run)
    assert after < 0.5 * before
    stats = run_dir.manifest()["stages"]["sft:dense"]
    assert stats["mean_kd"] is not None and stats["flops_estimate"] > 0


def onpolicy(recipe, output: str, teacher: str, init: str = "run:kd-teacher", **changes):
    return with_section(
        recipe,
        "grpo",
        init=init,
        output=output,
        teacher=teacher,
        reward_weight=0.0,
        **{"steps": 3, "tasks_per_step": 3, "group_size": 2, "max_new_tokens": 24, **changes},
    )


def test_on_policy_distillation_from_a_teacher_equal_to_the_student_does_not_move_it(kd_run):
    """log q = log p on every sampled token: zero advantages, zero gradients, the same weights."""
    out = grpo.run(onpolicy(kd_run, "self-distill", "run:kd-teacher"))
    stats = RunDir(kd_run).manifest()["stages"]["grpo:self-distill"]
    assert all(abs(h["reverse_kl"]) < 1e-6 for h in stats["history"])
    assert all(h["groups_used"] == 3 for h in stats["history"])  # flat reward groups are kept with a teacher
    before = load_model_and_tokenizer(RunDir(kd_run).model("kd-teacher"), "t")[0].state_dict()
    after = load_model_and_tokenizer(out, "s")[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_on_policy_distillation_stops_at_the_teacher_token_budget(kd_run, dense_student):
    grpo.run(onpolicy(kd_run, "budgeted", "run:dense", init="base", steps=50, teacher_tokens_budget=60))
    stats = RunDir(kd_run).manifest()["stages"]["grpo:budgeted"]
    assert stats["teacher_tokens"] >= 60 and stats["steps"] < 50
    assert sum(h["teacher_tokens"] for h in stats["history"][:-1]) < 60  # it stopped at the first step over
    assert all(h["reverse_kl"] > 0 for h in stats["history"])  # an untrained student is far from the teacher


def test_a_teacher_that_cannot_score_tokens_is_refused(kd_run, foreign_teacher):
    with pytest.raises(WarmstartError, match="cannot score the student's tokens"):
        grpo.run(onpolicy(kd_run, "ref-teacher", "reference"))
    with pytest.raises(WarmstartError, match="vocabulary .* differs"):
        grpo.run(onpolicy(kd_run, "foreign-teacher", f"hf:{foreign_teacher}"))


def test_lora_trains_with_dense_and_sparse_kd_and_on_policy_distillation(kd_run, dense_student):
    """An adapter, not the weights, learns from each teacher signal; each publishes a merged model and its adapter."""
    lora = {"r": 4, "alpha": 8.0}
    dense = with_section(
        kd_run, "sft", data="kd", output="lora-dense", distill="logits", teacher="run:kd-teacher", steps=3
    )
    topk = with_section(kd_run, "sft", data="kd", output="lora-topk", distill="topk", steps=3)
    for recipe, signal in ((dense, "logits"), (topk, "topk")):
        out = sft.run(with_section(recipe, "sft", lora=lora))
        stats = RunDir(kd_run).manifest()["stages"][f"sft:{recipe.sft.output}"]
        assert signal_of(kd_run, recipe.sft.output)["signal"] == signal and stats["mean_kd"] is not None
        assert (
            0
            < stats["trainable_parameters"]
            < 0.2 * sum(p.numel() for p in load_model_and_tokenizer(out, "s")[0].parameters())
        )
        assert (out / "adapter" / "adapter_model.safetensors").exists()
    out = grpo.run(onpolicy(kd_run, "lora-onpolicy", "run:dense", init="base", lora=lora))
    stats = RunDir(kd_run).manifest()["stages"]["grpo:lora-onpolicy"]
    assert all(h["reverse_kl"] > 0 for h in stats["history"]) and (out / "adapter" / "adapter_config.json").exists()
