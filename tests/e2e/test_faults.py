"""Retries, failover, timeouts and cancellation, driven by faults scripted in the mock upstream."""

import time
import uuid

import anthropic
import httpx2 as httpx  # the HTTP client the official SDKs use
import openai
import pytest

from conftest import expected_text

MSG = [{"role": "user", "content": "Say hello"}]


def tag():
    return uuid.uuid4().hex


def test_failover_when_first_upstream_refuses_connections(gw, oai):
    raw = oai.chat.completions.with_raw_response.create(model="failover-refused", messages=MSG)
    assert raw.parse().choices[0].message.content == expected_text(8)
    assert raw.headers["x-weir-upstream"] == "mock-openai"
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["attempts"] == 2
    assert rec["attempt_outcomes"].startswith("dead-openai:connect:")
    assert ",mock-openai:ok:" in rec["attempt_outcomes"]


def test_failover_when_first_upstream_returns_503(gw, oai, mock):
    t = tag()
    raw = oai.chat.completions.with_raw_response.create(
        model="failover-503", messages=MSG, stream=True, extra_headers={"x-mock-tag": t}
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == expected_text(8)
    seen = mock.requests(t)
    assert [r["status"] for r in seen] == [503, 200], "first the flaky upstream, then the healthy one"
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["attempts"] == 2 and rec["upstream"] == "mock-openai"
    assert rec["attempt_outcomes"].startswith("flaky-openai:server_error:")


def test_failover_anthropic(gw, ant):
    m = ant.messages.create(model="claude-failover", max_tokens=16, messages=MSG)
    assert m.content[0].text == expected_text(8)


def test_retry_after_is_honoured(gw, oai, mock):
    t = tag()
    started = time.monotonic()
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=MSG,
        extra_headers={"x-mock-tag": t, "x-mock-status": "429", "x-mock-fail-times": "1", "x-mock-retry-after": "1"},
    )
    elapsed = time.monotonic() - started
    assert r.choices[0].message.content == expected_text(8)
    first, second = mock.requests(t)
    assert (first["status"], second["status"]) == (429, 200)
    gap_ms = second["started_unix_ms"] - first["started_unix_ms"]
    assert gap_ms >= 1000, f"retried after {gap_ms:.0f} ms, before Retry-After: 1"
    assert elapsed >= 1.0


def test_retry_after_beyond_the_limit_is_passed_to_the_client(gw, oai, mock):
    t = tag()
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MSG,
            extra_headers={"x-mock-tag": t, "x-mock-status": "429", "x-mock-retry-after": "30"},
        )
    assert e.value.status_code == 429
    assert e.value.response.headers["retry-after"] == "30"
    assert e.value.body["type"] == "requests", "the upstream's own 429 body passes through"
    assert len(mock.requests(t)) == 1, "a 30 s Retry-After is over max_retry_after (3 s): not retried"


def test_no_retry_after_first_streamed_byte_openai(gw, oai, mock):
    t = tag()
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, stream=True,
        extra_headers={"x-mock-tag": t, "x-mock-reset-after": "4", "x-mock-chunks": "20"},
    )
    got = []
    with pytest.raises(openai.APIError) as e:
        for c in raw.parse():
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == expected_text(3), "what arrived before the break was delivered"
    assert "mid-stream" in e.value.message
    assert len(mock.requests(t)) == 1, "no retry once bytes reached the client"
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["outcome"] == "upstream_error" and rec["status"] == 200


def test_no_retry_after_first_streamed_byte_anthropic(gw, ant, mock):
    t = tag()
    with pytest.raises(anthropic.APIStatusError) as e:
        with ant.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=MSG,
            extra_headers={"x-mock-tag": t, "x-mock-reset-after": "5"},
        ) as s:
            for _ in s.text_stream:
                pass
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "api_error"
    assert len(mock.requests(t)) == 1


def test_non_streamed_body_broken_midway_is_retried(gw, oai, mock):
    """Nothing reached the client yet, so a non-streamed answer that breaks is still retryable."""
    t = tag()
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MSG, extra_headers={"x-mock-tag": t, "x-mock-reset-after": "1"}
        )
    assert e.value.status_code == 502
    assert len(mock.requests(t)) == 2, "both attempts were made"


def test_idle_timeout_on_stalled_stream(gw, oai):
    started = time.monotonic()
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, stream=True, extra_headers={"x-mock-stall-after": "3"}
    )
    with pytest.raises(openai.APIError) as e:
        for _ in raw.parse():
            pass
    assert "timeouts.idle" in e.value.message
    assert e.value.body["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["outcome"] == "upstream_error" and "timeouts.idle" in rec["error"]


def test_first_byte_timeout(gw, ant):
    with pytest.raises(anthropic.APIStatusError) as e:
        ant.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=MSG, extra_headers={"x-mock-header-delay-ms": "1500"}
        )
    assert e.value.status_code == 504
    assert e.value.response.headers["x-weir-error-source"] == "upstream"
    assert "timeouts.first_byte" in e.value.body["error"]["message"]


def test_client_disconnect_cancels_upstream(gw, mock):
    """The client reads a few events and goes away: the upstream request is cancelled, and the gateway logs what it
    saw (input tokens from message_start), marked partial."""
    t = tag()
    headers = {"x-mock-tag": t, "x-mock-chunks": "200", "x-mock-delay-ms": "20", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": MSG, "stream": True}
    with httpx.Client(timeout=10) as c:
        with c.stream("POST", gw.url + "/v1/messages", json=body, headers=headers) as r:
            request_id = r.headers["x-request-id"]
            lines = r.iter_lines()
            deltas = 0
            for line in lines:
                if line == "event: content_block_delta":
                    deltas += 1
                    if deltas == 3:
                        break
            closed_at = time.time() * 1000
    [seen] = mock.wait_requests(t, lambda rs: rs and rs[0]["outcome"] != "streaming")
    assert seen["outcome"] == "disconnected", seen
    assert seen["events_sent"] < seen["events_total"]
    cancel_ms = seen["ended_unix_ms"] - closed_at
    print(f"upstream saw the disconnect {cancel_ms:.0f} ms after the client closed")
    assert cancel_ms < 1000
    rec = gw.record(request_id)
    assert rec["outcome"] == "cancelled" and rec["partial"] is True
    assert rec["input_tokens"] > 0 and rec["ttft_ms"] > 0


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_upstream_cut_mid_event_gives_an_api_error_never_a_decode_error(gw, oai, ant, api):
    """An upstream that ends its stream in the middle of an event: the partial event is never forwarded, and the
    gateway's error event arrives on an event boundary, so each SDK raises its API error (not JSONDecodeError)."""
    h = {"x-mock-chunks": "8", "x-mock-cut-after": "4"}
    with pytest.raises((openai.APIError, anthropic.APIError)) as e:
        if api == "chat":
            for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True, extra_headers=h):
                pass
        elif api == "responses":
            for _ in oai.responses.create(model="gpt-4o-mini", input="hi", stream=True, extra_headers=h):
                pass
        else:
            with ant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers=h) as s:
                for _ in s:
                    pass
    assert "closed the stream before it was complete" in str(e.value), e.value


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_stream_without_its_final_blank_line_is_complete(gw, oai, ant, api):
    h = {"x-mock-chunks": "8", "x-mock-no-final-blank": "1"}
    if api == "chat":
        text = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
            model="gpt-4o-mini", messages=MSG, stream=True, extra_headers=h) if c.choices)
    elif api == "responses":
        with oai.responses.stream(model="gpt-4o-mini", input="hi", extra_headers=h) as s:
            text = s.get_final_response().output_text
    else:
        with ant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers=h) as s:
            text = s.get_final_text()
    assert text == expected_text(8)
