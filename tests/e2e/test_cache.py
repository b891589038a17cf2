"""The `cache` plugin through the official SDKs: a repeated request is answered from the first one's answer without
an upstream call, whole or streamed whichever the client asks now (the gateway converts between the two), only for
the same key; `Cache-Control` and the cache headers; answers kept across a restart; two gateways on one real
redis-server sharing hits; a corrupt stored answer is a miss. (The cache's kv being down is a bypass: the plugin's unit
tests; here auth, which runs first, refuses with 503 when the shared store is down.) The mock counts what reached an upstream
(`x-mock-tag`), and the stored key is recomputed here from the request (an independent check of the host's
digest)."""

import hashlib
import json
import re
import subprocess
import time
import urllib.request
import uuid

import anthropic
import openai
import pytest

from conftest import GUESTS, WEIR, Gateway, admin_kv, free_port, gateway_config, auth_plugin, anthropic_client, expected_text, metric, openai_client, wait_for
from test_state import Redis, redis_kv

KEY_A, KEY_B = "sk-cache-test-a", "sk-cache-test-b"


def sha(s):
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


def cache_plugin(config='sampled = ["gpt-4o-mini", "claude-haiku-4-5"]'):
    return f"""
[[plugins]]
name = "cache"
order = 17
file = "{GUESTS / 'cache.wasm'}"
capabilities = ["config", "kv", "trace", "clock", "answer", "metrics"]
isolation = "shared"
[plugins.config]
{config}
"""


def plugins():
    """auth with two keys of two teams, then the cache."""
    return f"""
[admin]
token_env = "WEIR_TEST_ADMIN_TOKEN"

{auth_plugin(f'{{ id = "a", hash = "{sha(KEY_A)}", team = "team-a" }}, {{ id = "b", hash = "{sha(KEY_B)}", team = "team-b" }}')}
""" + cache_plugin()


@pytest.fixture(scope="module")
def cgw(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="cache", tail=plugins())
    yield g
    g.stop()


def tag():
    return "cache-" + uuid.uuid4().hex[:10]


def prompt():
    """A prompt no other test asks (so each test starts with a miss)."""
    return "Say hello " + uuid.uuid4().hex


def plugin_events(g):
    """The cache's `weir_plugin_events_total` series, by event."""
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = r'^weir_plugin_events_total\{plugin="cache",event="([^"]+)"\} (\S+)$'
    return {e: float(v) for e, v in re.findall(pattern, text, re.M)}


def canonical_digest(endpoint, body):
    """The host's digest, recomputed: SHA-256 over the endpoint and the body as sorted, compact JSON without
    `stream` and `stream_options` (for the ASCII bodies and integer numbers used here, Python's json module writes
    the same canonical text)."""
    b = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    text = endpoint + "\n" + json.dumps(b, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_openai_whole_then_streamed_is_one_upstream_call(cgw, mock):
    t, p = tag(), prompt()
    client = openai_client(cgw, api_key=KEY_A)
    first = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": p}], extra_headers={"x-mock-tag": t})
    assert first.headers["x-weir-cache"] == "MISS"
    text = first.parse().choices[0].message.content
    assert text == expected_text()
    second = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": p}], extra_headers={"x-mock-tag": t})
    assert second.headers["x-weir-cache"] == "HIT" and int(second.headers["age"]) >= 0
    hit = second.parse()
    assert hit.choices[0].message.content == text and hit.usage.completion_tokens == 8
    # The usage says the input came from a cache, in OpenAI's terms.
    assert hit.usage.prompt_tokens_details.cached_tokens == hit.usage.prompt_tokens == first.parse().usage.prompt_tokens
    # The stored whole answer, streamed: chunks the SDK accumulates, usage chunk when asked.
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": p}],
                                            stream=True, stream_options={"include_usage": True},
                                            extra_headers={"x-mock-tag": t})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-2].choices[0].finish_reason == "stop"
    assert len(mock.requests(t)) == 1, "one upstream call for three requests"
    # The plugin's own counters (the metrics capability).
    events = plugin_events(cgw)
    assert events.get("hit", 0) >= 2 and events.get("miss", 0) >= 1 and events.get("store", 0) >= 1, events
    rec = cgw.record(second.headers["x-request-id"])
    assert rec["outcome"] == "cached" and rec["status"] == 200 and rec["output_tokens"] == 8, rec
    assert rec["cached_tokens"] == rec["input_tokens"] > 0, rec


def test_anthropic_streamed_then_whole_and_tool_calls_replay(cgw, mock):
    t, p = tag(), prompt()
    client = anthropic_client(cgw, api_key=KEY_A)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": p}],
                                extra_headers={"x-mock-tag": t}) as s:
        first = s.get_final_message()
    hit = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=100,
                                                   messages=[{"role": "user", "content": p}],
                                                   extra_headers={"x-mock-tag": t})
    assert hit.headers["x-weir-cache"] == "HIT"
    m = hit.parse()
    assert m.content[0].text == first.content[0].text == expected_text() and m.stop_reason == "end_turn"
    assert m.usage.output_tokens == first.usage.output_tokens
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens) == (0, first.usage.input_tokens), m.usage
    # A forced tool call, stored streamed and replayed streamed: the SDK's helper rebuilds the same call.
    tools = [{"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}}]
    calls = []
    for _ in range(2):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=tools,
                                    tool_choice={"type": "tool", "name": "get_time"},
                                    messages=[{"role": "user", "content": p}], extra_headers={"x-mock-tag": t}) as s:
            calls.append([b.model_dump() for b in s.get_final_message().content])
    assert calls[0] == calls[1] and calls[0][0]["type"] == "tool_use" and calls[0][0]["name"] == "get_time"
    assert len(mock.requests(t)) == 2


def test_responses_hit_and_stateful_requests_bypass(cgw, mock):
    t, p = tag(), prompt()
    client = openai_client(cgw, api_key=KEY_A)
    for expect in ("MISS", "HIT"):
        r = client.responses.with_raw_response.create(model="gpt-4o-mini", input=p, store=False,
                                                      extra_headers={"x-mock-tag": t})
        assert r.headers["x-weir-cache"] == expect and r.parse().output_text == expected_text()
    with client.responses.stream(model="gpt-4o-mini", input=p, store=False, extra_headers={"x-mock-tag": t}) as s:
        assert s.get_final_response().output_text == expected_text()
    r = client.responses.with_raw_response.create(model="gpt-4o-mini", input=p, extra_headers={"x-mock-tag": t})
    assert (r.headers["x-weir-cache"], r.headers["x-weir-cache-reason"]) == ("BYPASS", "responses-store")
    assert len(mock.requests(t)) == 2


def test_another_key_never_gets_the_answer(cgw, mock):
    t, p = tag(), prompt()
    msg = [{"role": "user", "content": p}]
    a, b = openai_client(cgw, api_key=KEY_A), openai_client(cgw, api_key=KEY_B)
    a.chat.completions.create(model="gpt-4o-mini", messages=msg, extra_headers={"x-mock-tag": t})
    r = b.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msg, extra_headers={"x-mock-tag": t})
    assert r.headers["x-weir-cache"] == "MISS"
    assert a.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msg, extra_headers={"x-mock-tag": t}).headers["x-weir-cache"] == "HIT"
    assert len(mock.requests(t)) == 2, "one call per key"


def test_cache_control_directives(cgw, mock):
    t, p = tag(), prompt()
    msg = [{"role": "user", "content": p}]
    c = openai_client(cgw, api_key=KEY_A)

    def ask(**headers):
        r = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msg,
                                                        extra_headers={"x-mock-tag": t, **headers})
        return r.headers

    assert ask(**{"cache-control": "no-store"})["x-weir-cache"] == "BYPASS"
    assert ask()["x-weir-cache"] == "MISS", "no-store stored nothing"
    assert ask(**{"cache-control": "no-cache"})["x-weir-cache"] == "STORED"
    assert ask(**{"cache-control": "max-age=3600"})["x-weir-cache"] == "HIT"
    assert ask()["x-weir-cache"] == "HIT"
    assert len(mock.requests(t)) == 3
    # Not cacheable: a sampled answer of a model not listed, an anonymous request (no key).
    h = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msg, temperature=0.7,
                                                    extra_headers={"x-mock-tag": t}).headers
    assert h["x-weir-cache"] == "MISS", "gpt-4o-mini is listed in `sampled`"
    with pytest.raises(openai.AuthenticationError):
        openai_client(cgw, api_key="sk-nobody").chat.completions.create(model="gpt-4o-mini", messages=msg)


def test_corrupt_stored_answer_is_a_miss_and_is_replaced(cgw, mock):
    t, p = tag(), prompt()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}]}
    c = openai_client(cgw, api_key=KEY_A)
    c.chat.completions.create(**body, extra_headers={"x-mock-tag": t})
    key = f"answer/principal/a/{canonical_digest('chat.completions', body)}//"
    wait_for(lambda: admin_kv(cgw, "cache", key)[0] == 200, "the answer stored (in on-complete)")
    status, stored = admin_kv(cgw, "cache", key)
    assert json.loads(stored)["v"] == 1
    assert admin_kv(cgw, "cache", key, "PUT", b'{"v": 1, "at": "garbage"}')[0] == 204
    r = c.chat.completions.with_raw_response.create(**body, extra_headers={"x-mock-tag": t})
    assert r.headers["x-weir-cache"] == "MISS" and r.parse().choices[0].message.content == expected_text()
    wait_for(lambda: json.loads(admin_kv(cgw, "cache", key)[1]).get("at") != "garbage", "stored again")
    assert len(mock.requests(t)) == 2


def test_hits_survive_a_restart(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="cache-restart", tail=plugins())
    try:
        t, p = tag(), prompt()
        msg = [{"role": "user", "content": p}]
        openai_client(g, api_key=KEY_A).chat.completions.create(model="gpt-4o-mini", messages=msg,
                                                               extra_headers={"x-mock-tag": t})
        # Stored in `on-complete`, after the answer was sent: wait for it before the `kill -9`.
        key = f"answer/principal/a/{canonical_digest('chat.completions', {'model': 'gpt-4o-mini', 'messages': msg})}//"
        wait_for(lambda: admin_kv(g, "cache", key)[0] == 200, "the answer stored")
        g.kill()
        g.start()
        r = openai_client(g, api_key=KEY_A).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=msg, extra_headers={"x-mock-tag": t})
        assert r.headers["x-weir-cache"] == "HIT" and len(mock.requests(t)) == 1
    finally:
        g.stop()


def test_two_replicas_on_redis_share_hits(session_tmp, mock, tmp_path):
    r = Redis(tmp_path)
    one = two = None
    try:
        kv = redis_kv(r, tmp_path, "cache-one", "cachetest")
        one = Gateway(session_tmp, mock, name="cache-one", tail=plugins(), kv=kv)
        two = Gateway(session_tmp, mock, name="cache-two", tail=plugins(), kv=redis_kv(r, tmp_path, "cache-two", "cachetest"))
        t, p = tag(), prompt()
        msg = [{"role": "user", "content": p}]
        anthropic_client(one, api_key=KEY_A).messages.create(model="claude-haiku-4-5", max_tokens=50, messages=msg,
                                                            extra_headers={"x-mock-tag": t})
        hit = anthropic_client(two, api_key=KEY_A).messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=50, messages=msg, extra_headers={"x-mock-tag": t})
        assert hit.headers["x-weir-cache"] == "HIT" and hit.parse().content[0].text == expected_text()
        assert len(mock.requests(t)) == 1
    finally:
        for g in (one, two):
            if g:
                g.stop()
        r.stop()


def test_a_burst_of_identical_requests_is_one_upstream_call(cgw, mock):
    """50 identical requests at once, half streamed: the first goes upstream (slowly), the others wait for its answer
    and get it in their own form."""
    from concurrent.futures import ThreadPoolExecutor

    t, p = tag(), prompt()
    client = openai_client(cgw, api_key=KEY_A, timeout=30)
    headers = {"x-mock-tag": t, "x-mock-header-delay-ms": "400"}

    def ask(i):
        if i % 2:
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": p}],
                                                    stream=True, extra_headers=headers)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": p}],
                                              extra_headers=headers).choices[0].message.content

    def cached():
        return sum(1 for r in cgw.records() if r.get("outcome") == "cached")

    before = cached()
    with ThreadPoolExecutor(50) as pool:
        texts = list(pool.map(ask, range(50)))
    assert texts == [expected_text()] * 50
    assert len(mock.requests(t)) == 1, f"{len(mock.requests(t))} upstream calls for 50 identical requests"
    wait_for(lambda: cached() - before == 49, "49 answers logged as cached")


def test_followers_go_on_by_themselves_when_the_first_fails(cgw, mock):
    from concurrent.futures import ThreadPoolExecutor

    t, p = tag(), prompt()
    client = openai_client(cgw, api_key=KEY_A, timeout=30)
    client = client.with_options(max_retries=0)
    # Only the first upstream call of the tag fails (after a delay, so the others are waiting on it by then).
    headers = {"x-mock-tag": t, "x-mock-header-delay-ms": "300", "x-mock-fail-times": "1", "x-mock-status": "400"}

    def ask(_):
        try:
            return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": p}],
                                                  extra_headers=headers).choices[0].message.content
        except openai.BadRequestError:
            return "failed"

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(ask, range(5)))
    assert results.count("failed") == 1, results
    assert results.count(expected_text()) == 4, results
    assert 2 <= len(mock.requests(t)) <= 5, "the followers went on (and may have coalesced among themselves)"


def test_the_first_hanging_up_mid_stream_lets_the_followers_go_on(cgw, mock):
    """The request the others wait on is cut by its own client after its first event: nothing is shared from a cut
    answer, so the waiting requests go on by themselves and each still gets the whole answer."""
    from concurrent.futures import ThreadPoolExecutor

    t, p = tag(), prompt()
    client = openai_client(cgw, api_key=KEY_A, timeout=30).with_options(max_retries=0)
    headers = {"x-mock-tag": t, "x-mock-delay-ms": "150"}
    msg = [{"role": "user", "content": p}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True, extra_headers=headers)
    it = iter(first)
    next(it)  # the first event is out: the request is in flight, and its key is taken

    def follow(_):
        return client.chat.completions.create(model="gpt-4o-mini", messages=msg, extra_headers=headers) \
            .choices[0].message.content

    with ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(follow, i) for i in range(3)]
        time.sleep(0.3)  # the followers are waiting on the first (its stream takes > 1 s)
        assert not any(f.done() for f in waiting)
        first.close()  # the first client hangs up mid-stream
        texts = [f.result(timeout=30) for f in waiting]
    assert texts == [expected_text()] * 3
    assert 2 <= len(mock.requests(t)) <= 4, "the followers called the upstream themselves (one may lead the rest)"
    cut = [r for r in cgw.records() if r.get("outcome") == "cancelled"]
    assert cut, "the first request ended cancelled"


def test_a_waiting_request_whose_client_hangs_up_harms_no_one(cgw, mock):
    """A request waiting on an identical one in flight is abandoned by its client: the first and the other waiting
    request get the answer, the upstream is called once, and the abandoned one is logged as cancelled."""
    from concurrent.futures import ThreadPoolExecutor

    t, p = tag(), prompt()
    msg = [{"role": "user", "content": p}]
    # The first streams its answer over ~2 s: the other requests arrive while it runs (ordering, not timing, is
    # what is asserted; the margins are wide).
    headers = {"x-mock-tag": t, "x-mock-delay-ms": "250"}
    client = openai_client(cgw, api_key=KEY_A, timeout=30).with_options(max_retries=0)
    impatient = openai_client(cgw, api_key=KEY_A, timeout=0.5).with_options(max_retries=0)

    def lead():
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True, extra_headers=headers)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def ask(c):
        return c.chat.completions.create(model="gpt-4o-mini", messages=msg, extra_headers=headers) \
            .choices[0].message.content

    before = sum(1 for r in cgw.records() if r.get("outcome") == "cancelled")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lead)
        time.sleep(0.3)
        other = pool.submit(ask, client)
        with pytest.raises(openai.APITimeoutError):
            ask(impatient)
        assert not first.done(), "the first was still streaming when the impatient client gave up"
        assert first.result(timeout=30) == expected_text() and other.result(timeout=30) == expected_text()
    assert len(mock.requests(t)) == 1
    wait_for(lambda: sum(1 for r in cgw.records() if r.get("outcome") == "cancelled") > before,
             "the abandoned request logged as cancelled")


def test_the_byte_quota_holds_by_evicting_the_least_recently_used(session_tmp, mock):
    """`kv_quota` on the cache: 40 distinct answers of ~1 KB into 12 KB; the plugin's bytes stay within it, the
    oldest answers are gone (misses again), the newest are hits, and a key read recently survives."""
    g = Gateway(session_tmp, mock, name="cache-quota",
                tail=plugins().replace('isolation = "shared"', 'isolation = "shared"\nkv_quota = "12KiB"'))
    try:
        c = openai_client(g, api_key=KEY_A)
        prompts = [prompt() for _ in range(40)]

        def ask(p):
            return c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": p}]).headers["x-weir-cache"]

        for i, p in enumerate(prompts):
            assert ask(p) == "MISS"
            if i >= 1:
                # Keep the first one in use: it is read (a hit) after every store, so it is never the oldest.
                wait_for(lambda: ask(prompts[0]) == "HIT", "the first answer stored and read")
        used = metric(g, 'weir_kv_bytes')
        assert 0 < used <= 12 * 1024, used
        assert metric(g, 'weir_kv_evictions_total') > 0
        assert ask(prompts[0]) == "HIT", "read recently: kept"
        assert ask(prompts[1]) == "MISS", "the least recently used: evicted"
        wait_for(lambda: ask(prompts[-1]) == "HIT", "the newest kept")
    finally:
        g.stop()


def test_answers_over_a_mebibyte_are_cached_up_to_kv_max_value(session_tmp, mock):
    """A streamed answer of 20,000 events (~3 MB as sent) is larger than the 1 MiB a plugin keeps by default: the
    default cache lets it pass uncached; with `kv_max_value = "8MiB"` it is stored and replayed, every event."""
    p = prompt()
    chunks = 20000

    def ask(g, t):
        c = openai_client(g, api_key=KEY_A, timeout=60)
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": p}], stream=True,
            extra_headers={"x-mock-chunks": str(chunks), "x-mock-tag": t})
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == expected_text(chunks)
        return raw.headers["x-weir-cache"]

    small = Gateway(session_tmp, mock, name="cache-1mib", tail=plugins())
    try:
        t = tag()
        assert ask(small, t) == "MISS"
        rec = small.record(small.records()[-1]["request_id"])
        assert "weir.plugin.cache.stored" not in (rec.get("plugin_attributes") or ""), rec
        assert ask(small, t) == "MISS", "over 1 MiB: not kept, so not cached"
        assert len(mock.requests(t)) == 2
    finally:
        small.stop()
    big = Gateway(session_tmp, mock, name="cache-8mib",
                  tail=plugins().replace('isolation = "shared"', 'isolation = "shared"\nkv_max_value = "8MiB"'))
    try:
        t = tag()
        assert ask(big, t) == "MISS"
        wait_for(lambda: plugin_events(big).get("store", 0) >= 1, "the large answer stored")
        assert plugin_events(big)["stored_bytes"] > 2 * 1024 * 1024
        assert ask(big, t) == "HIT"
        assert len(mock.requests(t)) == 1, "the second was replayed from the store"
    finally:
        big.stop()
    # The setting is bounded by the plugin's memory: a value is held in it while it is read or written.
    bad = plugins().replace('isolation = "shared"', 'isolation = "shared"\nkv_max_value = "16MiB"')
    cfg = session_tmp / "cache-16mib.toml"
    cfg.write_text(gateway_config(mock.port, free_port(), tail=bad))
    r = subprocess.run([str(WEIR), "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "kv_max_value must be" in r.stderr and "quarter of `memory`" in r.stderr, r.stderr


def test_the_cache_store_down_is_a_bypass_and_counted(session_tmp, mock, tmp_path):
    """Redis down under a cache with no auth before it (anonymous, global scope): the request goes on to the
    upstream, says BYPASS and why, and the failed kv call is counted."""
    r = Redis(tmp_path)
    g = None
    try:
        tail = cache_plugin('scope = "global"\nanonymous = true\nsampled = ["gpt-4o-mini"]')
        g = Gateway(session_tmp, mock, name="cache-down", tail=tail, kv=redis_kv(r, tmp_path, "cache-down", "down"))
        c = openai_client(g)
        p = prompt()
        msg = [{"role": "user", "content": p}]
        assert c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msg).headers["x-weir-cache"] == "MISS"
        wait_for(lambda: c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=msg).headers["x-weir-cache"] == "HIT", "a hit while Redis is up")
        r.kill()
        errors = metric(g, "weir_kv_errors_total")
        resp = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msg)
        assert resp.status_code == 200 and resp.parse().choices[0].message.content == expected_text()
        assert (resp.headers["x-weir-cache"], resp.headers["x-weir-cache-reason"]) == ("BYPASS", "kv-unavailable")
        assert metric(g, "weir_kv_errors_total") > errors
        assert plugin_events(g).get("bypass.kv-unavailable") == 1
    finally:
        if g:
            g.stop()
        r.stop()
