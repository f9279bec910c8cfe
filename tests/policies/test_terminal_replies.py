"""A reply with no text whose finish reason ends it for good (OpenAI's and Azure's `content_filter` with a null
content, Anthropic's `refusal` with no blocks) is kept, flagged by its finish reason, not cached, and dropped
by curate, as one with text is. It was refused as an empty reply and asked again api.max_retries times, each
try billed, then recorded as an error that every rerun asked, and paid for, again."""

from __future__ import annotations

import pytest
from scripted_api import Scripted, chat_reply, message_reply
from test_api_faults import recipe_for, rollouts

TERMINAL = {
    "openai": lambda path, body, n: {"body": chat_reply(content=None, finish="content_filter")},
    "anthropic": lambda path, body, n: {"body": message_reply(blocks=[], stop="refusal")},
}
FLAGGED = {"openai": "content_filter", "anthropic": "refusal"}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_filtered_or_refused_reply_with_no_text_is_kept_flagged_once_and_never_cached(tmp_path, provider):
    with Scripted(TERMINAL[provider]) as api:
        recipe = recipe_for(tmp_path, api, provider=provider)
        [kept] = rollouts(recipe)
        assert len(api.log) == 1  # one billed request, not api.max_retries + 1
        [again] = rollouts(recipe)
    assert kept.error is None and kept.finish_reason == FLAGGED[provider]
    assert kept.messages[-1].content == "" and len(kept.usage) == 1 and not kept.rejected_usage
    assert len(api.log) == 2 and not again.usage[0].from_cache  # flagged: not cached as a success
