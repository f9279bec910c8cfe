"""Error statuses as providers and the proxies in front of them word them, through the official SDKs:

- every 5xx a transient edge can answer (Cloudflare's 520/522/524, a 507) is asked again, as a 503 is; only
  those that say the request can never be served (501, 505, 511) stop the stage;
- "too long for the model" as Together / TGI / Hugging Face's router (a 422) and Gemini (a 400) word it ends
  that rollout alone, as vLLM's wording does;
- Gemini's per-minute 429 ("You exceeded your current quota ... Please retry in 2.5s", often a JSON list) is a
  rate limit to wait out, not a spend limit; a per-day quota still stops the stage, with the body's message.
"""

from __future__ import annotations

import json

import pytest
from scripted_api import Scripted
from test_api_faults import recipe_for, rollouts

from warmstart.errors import WarmstartError
from warmstart.policies.limits import classify

CLOUDFLARE_PAGE = "<html><head><title>{status}: A timeout occurred</title></head><body>cloudflare</body></html>"


def first_fails(status: int, body, headers: dict | None = None):
    """A script: the first request answered `status` with `body`, the others correctly."""
    return lambda path, sent, n: {"status": status, "body": body, "headers": headers or {}} if n == 0 else None


@pytest.mark.parametrize("status", [520, 522, 524, 507, 500])
def test_a_transient_5xx_from_an_edge_is_asked_again(tmp_path, status):
    page = CLOUDFLARE_PAGE.format(status=status)
    with Scripted(first_fails(status, page, {"Content-Type": "text/html"})) as api:
        [answered] = rollouts(recipe_for(tmp_path, api))
    assert answered.error is None and len(api.log) == 2


@pytest.mark.parametrize("status", [501, 505, 511])
def test_a_5xx_that_no_retry_can_serve_stops_the_stage_with_the_page_quoted(tmp_path, status):
    page = CLOUDFLARE_PAGE.format(status=status)
    with Scripted(first_fails(status, page, {"Content-Type": "text/html"})) as api:
        with pytest.raises(WarmstartError, match=f"HTTP {status}: Error code: {status} - '<html><head><title>{status}"):
            rollouts(recipe_for(tmp_path, api))
    assert len(api.log) == 1


TGI_LIMIT = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: 1218 `inputs` tokens and 1500 `max_new_tokens`"  # noqa: E501
TOO_LONG = {
    "together": (422, {"error": {"message": TGI_LIMIT, "type": "invalid_request_error"}}),
    "tgi": (422, {"error": TGI_LIMIT, "error_type": "validation"}),
    "tgi_inputs": (422, {"error": "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000"}),
    "gemini": (400, [{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": (
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).")}}]),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(TOO_LONG))
def test_too_long_for_the_model_in_each_provider_s_words_ends_that_rollout_alone(tmp_path, provider):
    status, body = TOO_LONG[provider]
    failure = classify(status, json.dumps(body), {}, f"Error code: {status}")
    assert not failure.retry and failure.this_request_only
    with Scripted(first_fails(status, body)) as api:
        [too_long, answered] = rollouts(recipe_for(tmp_path, api, "api.concurrency=1"), n=2)
    assert "the request is too long for the model" in too_long.error and answered.error is None
    assert len(api.log) == 2  # not asked again, and the stage went on


GEMINI_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: "
    "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 15\nPlease retry in 0.5s."
)


def gemini_429(quota_id: str | None) -> list:
    error = {"code": 429, "message": GEMINI_QUOTA, "status": "RESOURCE_EXHAUSTED"}
    if quota_id:
        violations = [{"quotaMetric": "generate_content_free_tier_requests", "quotaId": quota_id}]
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations}]
    return [{"error": error}]  # as Gemini sends it: a list of one


@pytest.mark.parametrize("quota_id", ["GenerateRequestsPerMinutePerProjectPerModel-FreeTier", None])
def test_gemini_s_per_minute_quota_429_is_waited_out(tmp_path, quota_id):
    with Scripted(first_fails(429, gemini_429(quota_id))) as api:
        [answered] = rollouts(recipe_for(tmp_path, api))
    assert answered.error is None and len(api.log) == 2


def test_a_429_with_a_retry_after_is_a_rate_limit_whatever_its_words(tmp_path):
    body = {"error": {"message": "You exceeded your current quota, please check your plan and billing details."}}
    with Scripted(first_fails(429, body, {"Retry-After": "0"})) as api:
        [answered] = rollouts(recipe_for(tmp_path, api))
    assert answered.error is None and len(api.log) == 2


def test_gemini_s_per_day_quota_stops_the_stage_saying_what_gemini_said(tmp_path):
    with Scripted(first_fails(429, gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier"))) as api:
        with pytest.raises(WarmstartError) as stopped:
            rollouts(recipe_for(tmp_path, api))
    said = "HTTP 429, a spend or quota limit was reached: Error code: 429 - You exceeded your current quota"
    assert said in str(stopped.value) and len(api.log) == 1
