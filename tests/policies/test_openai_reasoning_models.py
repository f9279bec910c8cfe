"""OpenAI's reasoning models (o1, o3, o4-mini, gpt-5) refuse `max_tokens` (400 unsupported_parameter: "use
max_completion_tokens") and a temperature or top_p other than 1: the backend sent both to every model, so the
stage stopped on its first request whatever the recipe said. Every other OpenAI-compatible server is sent
what it was."""

from __future__ import annotations

import pytest
from scripted_api import Scripted
from test_api_faults import ENV, recipe_for

from warmstart.config import PolicySpec
from warmstart.errors import WarmstartError
from warmstart.policies import make_policy
from warmstart.policies.openai_api import sampling_fields
from warmstart.types import Request, Sampling

REASONING = ["o3", "o4-mini", "o1-2024-12-17", "gpt-5", "gpt-5-mini", "gpt-5.1"]


def as_openai_answers(path: str, body: dict, n: int):
    """Refuses what OpenAI refuses its reasoning models, in its words."""
    if "max_tokens" in body:
        error = {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
        return {"status": 400, "body": {"error": error}}
    for field in ("temperature", "top_p"):
        if body.get(field, 1) != 1:
            error = {"message": f"Unsupported value: '{field}' does not support {body[field]} with this model.",
                     "type": "invalid_request_error", "param": field, "code": "unsupported_value"}  # fmt: skip
            return {"status": 400, "body": {"error": error}}
    return None


def teacher(tmp_path, api: Scripted, model: str):
    recipe = recipe_for(tmp_path, api)
    return make_policy(PolicySpec.parse(f"openai:{model}@{api.url}/v1"), ENV, "generate.teacher", recipe)


@pytest.mark.parametrize("model", REASONING)
def test_a_reasoning_model_is_sent_max_completion_tokens_and_no_temperature(tmp_path, model):
    with Scripted(as_openai_answers, models=[model]) as api:
        policy = teacher(tmp_path, api, model)
        [answered] = policy.rollout([Request(ENV.tasks("train", 1, 0)[0], 0)], Sampling(1.0, 1.0, 64), seed=0)
    assert answered.error is None
    [sent] = [entry["body"] for entry in api.log]
    assert sent["max_completion_tokens"] == 64 and not {"max_tokens", "temperature", "top_p"} & set(sent)


def test_a_temperature_a_reasoning_model_refuses_is_one_clear_error_before_anything_is_sent(tmp_path):
    with Scripted(as_openai_answers, models=["o3"]) as api:
        policy = teacher(tmp_path, api, "o3")
        with pytest.raises(
            WarmstartError, match=r"^openai:o3: o3 is one of OpenAI's reasoning models.*temperature 0\.7"
        ):
            policy.rollout([Request(ENV.tasks("train", 1, 0)[0], 0)], Sampling(0.7, 1.0, 64), seed=0)
    assert api.log == []


def test_any_other_server_is_sent_max_tokens_temperature_and_top_p_as_before(tmp_path):
    with Scripted(models=["fake-model", "o3-like-finetune-of-mine/v2"]) as api:
        policy = teacher(tmp_path, api, "fake-model")
        [answered] = policy.rollout([Request(ENV.tasks("train", 1, 0)[0], 0)], Sampling(0.7, 0.9, 64), seed=0)
    assert answered.error is None
    [sent] = [entry["body"] for entry in api.log]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (64, 0.7, 0.9)
    assert "max_completion_tokens" not in sent


def test_api_openai_com_is_sent_max_completion_tokens_for_every_model():
    fields = sampling_fields("gpt-4o", "https://api.openai.com/v1", Sampling(0.7, 0.9, 64))
    assert fields == {"max_completion_tokens": 64, "temperature": 0.7, "top_p": 0.9}
    assert "max_tokens" in sampling_fields("openai/o3", "https://openrouter.ai/api/v1", Sampling(0.7, 0.9, 64))
