"""GRPO's no-grad passes over a whole batch, the sampling policy's old log-probs and a local teacher's
scores, run by the update's chunks: the same log-probs as one pass over the batch, a peak that does not
grow with the batch (it grew with its rows x the vocabulary), and GRPO with a teacher and with two
updates a batch still running end to end."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import tiny_model
from warmstart.config import GrpoConfig, load_recipe
from warmstart.distill.teacher import LocalTeacher
from warmstart.lm import scoring
from warmstart.lm.rollout import Episode
from warmstart.train.grpo import Group, batch_tensors, micro_batches, policy_positions, update


def grouped_batch(tasks: int, vocab: int = 300, seed: int = 0, reply_tokens: tuple[int, int] = (10, 60)) -> dict:
    """`tasks` groups of 8 samples: a 22-24-token prompt each, shared by its group, and replies of
    `reply_tokens` (from, to + 1) tokens."""
    generator = torch.Generator().manual_seed(seed)
    groups = []
    for task in range(tasks):
        prompt = torch.randint(4, vocab, (22 + task % 3,), generator=generator).tolist()
        replies = [
            torch.randint(4, vocab, (n,), generator=generator).tolist()
            for n in torch.randint(*reply_tokens, (8,), generator=generator)
        ]
        samples = [Episode(None, 0, [], prompt + r, [0] * len(prompt) + [1] * len(r)) for r in replies]
        groups.append(Group(samples, [float(i % 2) for i in range(8)], [True] * 8))
    return batch_tensors(groups, GrpoConfig(drop_zero_variance=False), 0)


def small_llama(vocab: int = 322) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("chunk_tokens", [256, 1024, 4096])
def test_chunked_log_probs_equal_one_pass_over_the_whole_batch(chunk_tokens):
    """Each row's values are the same function of its ids; chunks change only the matmuls' shapes (and
    which rows share a prompt's pass), so the floats differ at rounding level: measured at most 1.4e-6
    nats on log-probs of ~-6 (2-3 fp32 ulps). One chunk of every row is the same arithmetic: equal."""
    model, batch = small_llama(), grouped_batch(16, 322)
    scored = policy_positions(batch)
    chunks = micro_batches(batch["lengths"], chunk_tokens)
    assert len(chunks) > 1
    with torch.no_grad():
        whole = scoring.sequence_logprobs(model, batch, scored)
        chunked = scoring.chunked_sequence_logprobs(model, batch["input_ids"], scored, batch["lengths"], chunks)
        everything = [list(range(len(batch["lengths"])))]
        one_chunk = scoring.chunked_sequence_logprobs(model, batch["input_ids"], scored, batch["lengths"], everything)
    assert chunked.shape == whole.shape and chunked.dtype == whole.dtype
    assert torch.equal(chunked != 0, scored) and torch.equal(whole != 0, scored)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=5e-6)
    assert torch.equal(one_chunk, whole)


def test_a_row_scored_past_the_length_it_is_given_is_refused():
    model, batch = small_llama(), grouped_batch(1, 322)
    short = [n - 5 for n in batch["lengths"]]
    with pytest.raises(ValueError, match="scored past its length"):
        scoring.chunked_sequence_logprobs(model, batch["input_ids"], policy_positions(batch), short, [[0, 1, 2]])


def test_a_local_teacher_scores_by_chunks_as_the_student_does(tmp_path):
    """The teacher's chunks are the old log-probs' chunks: a teacher equal to the student reads the same
    floats; the teacher without chunks (a batch without GRPO's mask: every position of each row) and by
    chunks agree to rounding."""
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    teacher = LocalTeacher(str(tmp_path / "teacher"), "grpo.teacher", tokenizer)
    batch = grouped_batch(6, len(tokenizer))
    chunks = micro_batches(batch["lengths"], 256)
    assert len(chunks) > 2
    with torch.no_grad():
        student = scoring.chunked_sequence_logprobs(
            model.eval(), batch["input_ids"], policy_positions(batch), batch["lengths"], chunks
        )
    assert torch.equal(teacher.logprobs(batch, batch["lengths"], chunks), student)
    unmasked = {"input_ids": batch["input_ids"]}
    whole, chunked = teacher.logprobs(unmasked, batch["lengths"]), teacher.logprobs(unmasked, batch["lengths"], chunks)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=5e-6)
    assert int((whole != 0).sum()) == sum(n - 1 for n in batch["lengths"])


# The peak resident memory of one `update` above its start (VmHWM reset through /proc/self/clear_refs), in
# a fresh interpreter, after a warm-up update (lazy initialisation, AdamW's state): of 64 rows, then of 8.
# glibc's malloc is told to map every block of 64 KiB or more on its own, so a freed block leaves the
# resident set and each peak follows the live tensors, not what an earlier update left in the heap. The
# vocabulary (16,384) makes [N, V] logits the big term: one pass over 64 rows of 40 reply tokens holds
# 2,560 x 16,384 fp32 logits (160 MB) and more of their size in the logsumexp.
UPDATE_PEAKS = """
import json, sys
import torch
sys.path[:0] = [{tests!r}, {helpers!r}]  # this module, and tests/helpers.py it imports
from test_grpo_bounded_passes import grouped_batch, small_llama
from warmstart.config import GrpoConfig
from warmstart.distill.teacher import LocalTeacher
from warmstart.lm.tinymodel import train_tokenizer
from warmstart.train.grpo import update

mode, directory = {mode!r}, {directory!r}
model = small_llama(16384).train()
teacher = None
if mode == "teacher":
    tokenizer = train_tokenizer(["What is 1+1? Answer: 2 carry so far"] * 4, 300)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    teacher = LocalTeacher(directory, "grpo.teacher", tokenizer)
cfg = GrpoConfig(updates_per_batch=1 if teacher else 2, drop_zero_variance=False)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
update(model, None, optimizer, grouped_batch(1, 300, 1, (40, 41)), cfg, teacher=teacher, chunk_tokens=512)

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

peaks = {{}}
for rows in (64, 8):
    batch = grouped_batch(rows // 8, 300, 1, (40, 41))
    open("/proc/self/clear_refs", "w").write("5")
    start = status("VmRSS:")
    update(model, None, optimizer, batch, cfg, teacher=teacher, chunk_tokens=512)
    peaks[rows] = status("VmHWM:") - start
print(json.dumps(peaks))
"""


def update_peaks_mb(mode: str, directory: Path) -> dict[str, float]:
    here = Path(__file__).parent
    script = UPDATE_PEAKS.format(tests=str(here), helpers=str(here.parent), mode=mode, directory=str(directory))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("mode", ["two updates", "teacher"])
def test_the_update_peak_does_not_grow_with_the_batch(tmp_path, mode):
    """Rows of 62-64 tokens: 8 are one chunk of the update (512 padded tokens), 64 eight. The old log-probs'
    pass (two updates a batch) and a local teacher's scoring (with the old pass too) hold one chunk at a
    time. Measured (2-core EPYC, both modes): 8 rows ~87 MB, 64 rows ~107 (128 and 256 rows 103-105: the
    step from 8 is the several chunks' shared prompts, lm/shared_prefix.PrefixPass); with either pass over
    the whole batch, 64 rows ~328 MB."""
    peaks = update_peaks_mb(mode, tmp_path / "teacher")
    assert peaks["64"] < 1.6 * peaks["8"], peaks


def test_grpo_with_a_local_teacher_and_two_updates_a_batch_runs_end_to_end(tmp_path):
    """The teacher is the student itself: its scores by the update's chunks are the old log-probs' floats,
    so the first step's reverse KL is exactly 0 (later steps score a student that has moved)."""
    from warmstart.runs.directory import RunDir
    from warmstart.stages import grpo

    model, tokenizer = tiny_model()
    for directory in (tmp_path / "student", tmp_path / "teacher"):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    settings = ["grpo.steps=2", "grpo.tasks_per_step=4", "grpo.group_size=4", "grpo.max_new_tokens=16"]
    recipe = load_recipe(
        None,
        [
            f"run.dir='{tmp_path / 'run'}'",
            "tasks.train=20",
            f"grpo.init='{tmp_path / 'student'}'",
            f"grpo.teacher='hf:{tmp_path / 'teacher'}'",
            "grpo.updates_per_batch=2",
            *settings,
        ],
    )
    grpo.run(recipe)
    history = RunDir(recipe).manifest()["stages"]["grpo:student-grpo"]["history"]
    assert len(history) == 2 and all(h["teacher_tokens"] > 0 for h in history)
    assert history[0]["reverse_kl"] == 0.0


def test_an_update_with_a_teacher_over_many_chunks_equals_one_over_few():
    """The whole update (old pass, teacher's scores, per-token advantages, clipped loss, two steps) with the
    batch cut into many chunks against the fewest: the same weights to rounding."""
    model, tokenizer = tiny_model()
    teacher = LocalTeacher.__new__(LocalTeacher)  # a teacher without a directory: a perturbed copy
    teacher.model = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = grouped_batch(4, len(tokenizer))
    cfg = GrpoConfig(updates_per_batch=2, drop_zero_variance=False)
    weights = []
    assert len(micro_batches(batch["lengths"], 128)) > 3 * len(micro_batches(batch["lengths"], 100_000))
    for chunk_tokens in (128, 100_000):
        run = copy.deepcopy(model)
        _, stats = update(
            run, None, torch.optim.SGD(run.parameters(), lr=0.1), batch, cfg, teacher, chunk_tokens=chunk_tokens
        )
        assert stats["teacher_tokens"] == int(batch["loss_mask"][:, 1:].sum())
        weights.append([p.detach().clone() for p in run.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
