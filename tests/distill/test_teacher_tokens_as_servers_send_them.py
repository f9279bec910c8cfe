"""A teacher's tokens as real servers send them, lined up with the student's: SentencePiece's "▁" (which
also has a `<0x20>` byte piece, and decodes alone to ""), an alternative the student cannot name (vLLM's ""
of no bytes), ids past the student's output rows (a teacher's wider, padded embedding), and the same
tokenizer on both sides of on-policy distillation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from warmstart.distill.signal_choice import topk_verdict
from warmstart.distill.teacher import RemoteTeacher
from warmstart.distill.topk import align, logprobs_problem, token_index
from warmstart.errors import WarmstartError
from warmstart.lm.scoring import TokenLogprob
from warmstart.policies.openai_scoring import ScoredSequence
from warmstart.serve.completions import legacy_logprobs, prompt_entries
from warmstart.serve.response import logprob_entries

sys.path.insert(0, str(Path(__file__).parents[1] / "lm"))
from test_token_bytes import byte_fallback_tokenizer  # noqa: E402


def spans(ids: list[int]) -> tuple[list[int], list[int]]:
    """Training ids and loss mask of a turn: two prompt tokens, the turn's tokens, its end-of-turn token."""
    return [0, 0, *ids, 0], [0, 0, *[1] * (len(ids) + 1)]


def served_turn(tokenizer, ids: list[int]) -> list[dict]:
    """A turn's log-probs as `warmstart serve` (and OpenAI: token text and own bytes) sends them."""
    return logprob_entries(tokenizer, [TokenLogprob(i, -0.1, [(i, -0.1)]) for i in ids])


def test_sentencepieces_space_piece_is_found_by_its_bytes_though_a_byte_piece_has_them_too():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain pain", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "▁"  # Llama 2 writes " 5" as "▁", "5"
    input_ids, mask = spans(ids)
    teacher, stats = align(input_ids, mask, [served_turn(tokenizer, ids)], token_index(tokenizer))
    assert (stats.aligned, stats.foreign_tokens) == (1, 0)  # had been 0 aligned, 1 foreign: "' ' is not a token"
    assert teacher.ids[2][0] == ids[0]


def test_an_alternative_the_student_cannot_name_leaves_the_rest_of_the_turn_aligned():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain", add_special_tokens=False)["input_ids"]
    turn = served_turn(tokenizer, ids)
    turn[-1]["top_logprobs"].append({"token": "", "logprob": -4.0, "bytes": []})  # vLLM's end-of-turn alternative
    turn.append({"token": "", "logprob": -0.01, "bytes": [], "top_logprobs": []})  # and the end-of-turn itself
    input_ids, mask = spans(ids)
    teacher, stats = align(input_ids, mask, [turn], token_index(tokenizer))
    assert (stats.aligned, stats.foreign_tokens) == (1, 0)
    assert teacher.ids[1 + len(ids)] == [ids[-1]]  # the unnamed alternative's mass stays in the tail
    assert teacher.ids[2 + len(ids)] == []  # the end-of-turn position gets no teacher distribution


def test_a_foreign_sampled_token_is_named_in_the_verdict():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain", add_special_tokens=False)["input_ids"]
    turn = served_turn(tokenizer, ids)
    turn[1] = {"token": "zq", "logprob": -0.5, "top_logprobs": [{"token": "p", "logprob": -1.0}]}
    _, stats = align(*spans(ids), [turn], token_index(tokenizer))
    assert stats.foreign_tokens == 1
    assert "the teacher's token 'zq' is not a token of the student" in topk_verdict(stats)[1]


def test_ids_past_the_students_rows_are_left_out_and_negative_ids_refused():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain", add_special_tokens=False)["input_ids"]
    rows = len(tokenizer)
    turn = [
        {"id": i, "logprob": -0.1, "top_logprobs": [{"id": i, "logprob": -0.1}, {"id": rows + 40, "logprob": -3.0}]}
        for i in ids
    ]
    teacher, stats = align(*spans(ids), [turn], token_index(tokenizer, rows))
    assert stats.aligned == 1 and all(max(s) < rows for s in teacher.ids if s)  # had crashed the loss's gather
    turn[0]["top_logprobs"][1]["id"] = -1
    assert "not a token id" in logprobs_problem([turn])


def test_an_alternative_of_probability_zero_is_a_log_probability():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain", add_special_tokens=False)["input_ids"]
    turn = served_turn(tokenizer, ids)
    turn[0]["top_logprobs"].append({"token": "a", "logprob": -math.inf})
    assert logprobs_problem([turn]) is None
    teacher, stats = align(*spans(ids), [turn], token_index(tokenizer))
    assert stats.aligned == 1 and teacher.logp[2] == [-0.1]
    turn[0]["logprob"] = -math.inf  # the sampled token's cannot be
    assert "not a log-probability" in logprobs_problem([turn])


class ServedScores:
    """What `warmstart serve`'s completions endpoint answers (echo, logprobs) for the ids sent."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def score(self, sequences):
        out = []
        for ids in sequences:
            row = type("Row", (), {"prompt_logprobs": [TokenLogprob(i, -0.5, []) for i in ids[1:]]})()
            legacy = legacy_logprobs(prompt_entries(self.tokenizer, ids, row))
            out.append(ScoredSequence(legacy["tokens"], legacy["token_logprobs"]))
        return out


def test_on_policy_distillation_accepts_a_server_with_the_students_own_sentencepiece_tokenizer():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain plan", add_special_tokens=False)["input_ids"]
    teacher = RemoteTeacher(ServedScores(tokenizer), "grpo.teacher", tokenizer)
    scores = teacher.logprobs({"input_ids": torch.tensor([ids])}, [len(ids)])  # had refused "' ' vs ''"
    assert torch.equal(scores, torch.full((1, len(ids) - 1), -0.5))
    other = RemoteTeacher(ServedScores(tokenizer), "grpo.teacher", tokenizer)
    with pytest.raises(WarmstartError, match="the server reads token id"):
        other.check_tokens([ids[0], ids[1]], [" ", "x"])


def test_alternatives_whose_probabilities_sum_past_one_are_refused_and_rounding_is_not():
    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer("plain", add_special_tokens=False)["input_ids"]
    turn = served_turn(tokenizer, ids)
    # Negative raw logits (vLLM's --logprobs-mode raw_logits) pass as log-probs one by one, not together.
    turn[1]["top_logprobs"] = [{"token": "a", "logprob": -0.2}, {"token": "b", "logprob": -0.9}]
    problem = logprobs_problem([turn])
    assert problem.startswith("logprobs[0][1] has top_logprobs whose probabilities sum to 1.23, more than 1")
    # A top-k holding all the mass, each log-prob rounded up a little, and one token listed twice: accepted.
    half = math.log(0.5) + 1e-4
    turn[1]["top_logprobs"] = [{"token": "a", "logprob": half}, {"token": "b", "logprob": half}]
    turn[1]["top_logprobs"].append(dict(turn[1]["top_logprobs"][0]))
    assert logprobs_problem([turn]) is None
