"""A gzip body of several members (RFC 1952 2.2: members one after another, which gunzip reads as one, as a
server that compresses each flush of its output writes them) is read whole by every API client warmstart
makes: the first member alone had been read and the rest dropped without a word, so the reply read as
a body that is not JSON, asked again without end. Zeros after the last member are padding; anything else
after it that begins no member is dropped (as other HTTP clients drop it), counted against the limit."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx2
import pytest
from odd_api import OddAPI
from test_api_faults import recipe_for, rollouts

from warmstart.policies.bounded_http import Meter, ReplyTooLarge, UndecodableBody

TEXT = json.dumps({"id": "x", "choices": [{"text": "Answer: 5 " * 40}]}).encode()


def members(data: bytes, parts: int = 3) -> bytes:
    step = -(-len(data) // parts)
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


def metered(body: bytes, chunk: int, status: int = 200, encoding: str = "gzip") -> bytes:
    """The body as a client reads it through `Meter`, arriving `chunk` bytes at a time."""
    response = httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1/v1/completions"))
    meter = Meter(response, 2**20, encoding)
    read = b"".join(meter.take(body[i : i + chunk]) for i in range(0, len(body), chunk))
    return read + meter.end()


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**6])
def test_every_member_is_read_whatever_the_chunks_they_arrive_in(chunk):
    assert metered(members(TEXT), chunk) == TEXT
    assert metered(members(TEXT) + b"\0" * 9, chunk) == TEXT  # padding
    assert metered(gzip.compress(TEXT[:10]) + b"\0" * 5 + gzip.compress(TEXT[10:]), chunk) == TEXT


def test_bytes_after_the_end_that_begin_no_member_are_dropped_but_a_member_cut_short_is_said():
    for trailing in (b"\r\n", b"garbage", b"\0\0\x1f"):  # as urllib3 and httpx drop them
        assert metered(members(TEXT) + trailing, 64) == TEXT
    with pytest.raises(UndecodableBody, match="a gzip stream cut short"):
        metered(members(TEXT)[:-5], 64)
    with pytest.raises(UndecodableBody, match="a gzip stream cut short"):
        metered(members(TEXT) + b"\x1f\x8b", 64)  # a member begun, never ended


def test_what_comes_after_the_end_counts_against_the_limit_and_no_member_is_read_past_it():
    with pytest.raises(ReplyTooLarge):  # zeros, dropped: never held, but not taken without end either
        metered(gzip.compress(TEXT) + b"\0" * 2**21, 2**16)
    with pytest.raises(ReplyTooLarge):  # empty members decode to nothing: what arrives is bounded too
        metered(gzip.compress(b"") * 2 * 10**5, 2**16)  # 4 MB against a 1 MiB limit
    bomb = gzip.compress(b"x" * 2**27)  # 128 MiB of one byte: ~128 KB compressed
    response = httpx2.Response(200, request=httpx2.Request("POST", "http://127.0.0.1/v1/completions"))
    meter = Meter(response, 1000, "gzip")
    with pytest.raises(ReplyTooLarge):  # the first member fills the limit and one byte: the bomb is not opened
        meter.take(gzip.compress(b"y" * 1001) + bomb)
    assert meter.decoder.unconsumed_tail == b"" and meter.read <= 1001


def test_an_error_status_whose_later_member_is_spoiled_keeps_the_message_that_came():
    message = json.dumps({"error": {"message": "rate limited", "code": "rate_limit_exceeded"}}).encode()
    spoiled = gzip.compress(message) + b"\x1f\x8b" + b"\xff" * 20
    assert json.loads(metered(spoiled, 64, status=429)) == json.loads(message)


class MembersAPI(OddAPI):
    """OddAPI whose replies, for the fault `members`, come as three gzip members."""

    def _handler(self):
        api, answer = self, super()._handler()

        class Handler(answer):
            def _raw(self, status: int, data: bytes, headers: dict | None = None, content_type="application/json"):
                headers = headers or {}
                if self.command == "POST" and getattr(api.current, "fault", None) == "members":
                    data, headers = members(data), headers | {"content-encoding": "gzip"}
                super()._raw(status, data, headers, content_type)

        return Handler


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_teachers_reply_in_several_gzip_members_is_read_at_the_first_try(tmp_path, provider):
    with MembersAPI() as api:
        api.faults = ["members"]
        [trajectory] = rollouts(recipe_for(tmp_path, api, provider=provider))
        assert [entry["fault"] for entry in api.log] == ["members"]
    assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")


@pytest.mark.parametrize("chunk", [1, 2, 3, 64])
def test_a_raw_deflate_body_is_read_whatever_its_first_chunk(chunk):
    """HTTP's deflate is zlib-wrapped, but some servers send it raw: the zlib decoder took a first chunk of one
    byte without a word, and the raw decoder, given only what came after, failed ("invalid block type")."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = packer.compress(TEXT) + packer.flush()
    assert metered(raw, chunk, encoding="deflate") == TEXT
    assert metered(zlib.compress(TEXT), chunk, encoding="deflate") == TEXT
