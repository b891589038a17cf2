"""The conformance suite: one plugin written in Rust, Python and JavaScript (tests/conformance/), each loaded by
dropping it into a gateway's watched plugins directory, and the same scenarios run against all of them — the Python
source also built against contract 0.2.0 (`python-0.2`), which the gateway adapts to 0.3.0.

Each scenario returns what can be observed from outside — what the SDK client got, what the upstream received, the
request's log line (trace attributes, principal), the plugin's kv (through the admin API, including the `on-complete`
summary the plugin writes there) — and the test asserts that the three observations are identical and right.
"""

import json
import time

import anthropic
import openai
import pytest

from conftest import (
    GUESTS, WORDS, Gateway, admin_kv, anthropic_client, expected_text, install, openai_client,
)

LANGS = ["rust", "python", "js", "python-0.2"]
# The builds for contract 0.3.0, which has `reply`, `digest`, `add-response-header` and `coalesce`.
LANGS_03 = ["rust", "python", "js"]
MSG = [{"role": "user", "content": "Say hello"}]
SETTINGS = """order = 10
capabilities = ["log", "config", "kv", "trace", "clock"]
memory = "64MiB"
timeouts = { on_request = "500ms", on_chunk = "500ms", on_complete = "500ms" }

[config]
greeting = "Hello from the conformance plugin"
reject_message = "Blocked by conformance"
rewrite_model = "gpt-4o"
route_upstream = "mock-openai"
route_model = "gpt-4o"
abort_word = "deterministic"
"""


@pytest.fixture(scope="module")
def gws(session_tmp, mock):
    """One gateway per language, each with an empty watched directory into which the plugin is then dropped."""
    gateways = {}
    for lang in LANGS:
        d = session_tmp / f"conformance-{lang}.d"
        d.mkdir()
        tail = f"""
[admin]
token_env = "WEIR_TEST_ADMIN_TOKEN"

[plugin_runtime]
cache_dir = "{session_tmp / "plugin-cache"}"

[[routes]]
model = "gpt-4o"
candidates = [{{ upstream = "mock-openai", model = "gpt-4o" }}]
"""
        gateways[lang] = Gateway(session_tmp, mock, name=f"conformance-{lang}", top=f'plugins_dir = "{d}"\n', tail=tail)
        install(d, "conformance", f"conformance-{lang}.wasm", SETTINGS)
    # Python and JavaScript components take seconds to compile (once: the artifact is then cached on disk).
    deadline = time.time() + 240
    for lang, g in gateways.items():
        while [p["name"] for p in g.admin()["plugins"]] != ["conformance"]:
            assert not g.admin()["load_errors"], g.admin()["load_errors"]
            assert time.time() < deadline, f"{lang}: plugin not loaded:\n{g.log_text()[-2000:]}"
            time.sleep(0.1)
    yield gateways
    for g in gateways.values():
        g.stop()


def kv(g, key):
    status, body = admin_kv(g, "conformance", key)
    return body.decode() if status == 200 else None


def summary(g, request_id):
    """The summary the plugin wrote in on-complete (which runs after the response; wait for it)."""
    deadline = time.time() + 10
    while (value := kv(g, f"summary/{request_id}")) is None:
        assert time.time() < deadline, f"no summary for {request_id}"
        time.sleep(0.02)
    return json.loads(value)


def attributes(g, request_id):
    """The plugin's trace attributes on the request's log line (but `requests`, a counter checked on its own)."""
    attrs = g.record(request_id).get("plugin_attributes") or ""
    return dict(a.split("=", 1) for a in attrs.split(",") if a and not a.startswith("weir.plugin.conformance.requests="))


def chat(g, mode, stream=False, chunks=8, model="gpt-4o-mini", **headers):
    client = openai_client(g)
    h = {"x-conformance": mode, "x-mock-chunks": str(chunks), **headers}
    return client.chat.completions.with_raw_response.create(model=model, messages=MSG, stream=stream, extra_headers=h)


def messages(g, mode, stream=False, chunks=8):
    client = anthropic_client(g)
    h = {"x-conformance": mode, "x-mock-chunks": str(chunks)}
    return client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=MSG, stream=stream, extra_headers=h)


def openai_deltas(raw):
    return [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]


def anthropic_deltas(raw):
    return [e.delta.text for e in raw.parse() if e.type == "content_block_delta" and e.delta.type == "text_delta"]


def observe(g, raw, content):
    rid = raw.headers["x-request-id"]
    return {"status": raw.status_code, "content": content, "summary": summary(g, rid), "attributes": attributes(g, rid)}


def same(scenario, gws, langs=LANGS):
    """Runs `scenario(g)` on every language's gateway (of `langs`); asserts identical observations and returns one
    of them."""
    seen = {lang: scenario(gws[lang]) for lang in langs}
    for lang in langs[1:]:
        assert seen[lang] == seen["rust"], f"{lang} differs from rust:\n{seen[lang]}\n{seen['rust']}"
    return seen["rust"]


def test_all_three_load_from_the_watched_directory(gws):
    def scenario(g):
        (p,) = g.admin()["plugins"]
        return {k: p[k] for k in ("name", "order", "failure_policy", "capabilities")}

    assert same(scenario, gws) == {"name": "conformance", "order": 10, "failure_policy": "fail-closed",
                                   "capabilities": ["log", "config", "kv", "trace", "clock"]}


def test_pass_non_streamed(gws):
    def scenario(g):
        raw = chat(g, "pass")
        return observe(g, raw, raw.parse().choices[0].message.content)

    o = same(scenario, gws)
    assert o["content"] == expected_text(8)
    s = o["summary"]
    assert (s["status"], s["outcome"], s["upstream"], s["attempts"], s["partial"]) == (200, "ok", "mock-openai", 1, False)
    assert s["output_tokens"] == 8 and s["input_tokens"] > 0 and s["has_error"] is False
    assert s["text_events"] == 1  # a whole body is one on-chunk call
    assert o["attributes"]["weir.plugin.conformance.mode"] == "pass"


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_replace_text_upper_cases_every_delta(gws, family):
    def scenario(g):
        if family == "openai":
            raw = chat(g, "upper", stream=True)
            return observe(g, raw, openai_deltas(raw))
        raw = messages(g, "upper", stream=True)
        return observe(g, raw, anthropic_deltas(raw))

    o = same(scenario, gws)
    assert o["content"] == [w.upper() for w in WORDS[:8]]
    assert o["summary"]["text_events"] == 8 and o["summary"]["has_ttft"] is True


def test_hold_everything_then_flush(gws):
    def scenario(g):
        raw = chat(g, "hold", stream=True)
        return observe(g, raw, openai_deltas(raw))

    o = same(scenario, gws)
    assert o["content"] == ["[" + expected_text(8) + "]"]  # nothing until the flush, then all of it at once


@pytest.mark.parametrize("chunks", [8, 7])
def test_hold_and_release_in_pairs(gws, chunks):
    def scenario(g):
        raw = messages(g, "pairs", stream=True, chunks=chunks)
        return observe(g, raw, anthropic_deltas(raw))

    o = same(scenario, gws)
    pairs = [WORDS[i] + (WORDS[i + 1] if i + 1 < chunks else "") for i in range(0, chunks, 2)]
    assert o["content"] == pairs  # with 7 deltas the last one is held until flush
    assert o["summary"]["text_events"] == chunks


def test_drop(gws):
    def scenario(g):
        raw = chat(g, "drop", stream=True)
        return observe(g, raw, openai_deltas(raw))

    o = same(scenario, gws)
    assert o["content"] == [w for w in WORDS[:8] if "mock" not in w]


def test_abort_mid_stream(gws):
    def scenario(g):
        raw = chat(g, "abort", stream=True, chunks=12)
        got = []
        with pytest.raises(openai.APIError) as e:
            for c in raw.parse():
                if c.choices and c.choices[0].delta.content:
                    got.append(c.choices[0].delta.content)
        return {**observe(g, raw, got), "error": e.value.message}

    o = same(scenario, gws)
    assert o["content"] == WORDS[:10]  # everything before the event with the word
    assert "conformance abort: deterministic" in o["error"]
    assert o["summary"]["has_error"] is True


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_reject(gws, family):
    def scenario(g):
        if family == "openai":
            with pytest.raises(openai.PermissionDeniedError) as e:
                chat(g, "reject")
        else:
            with pytest.raises(anthropic.PermissionDeniedError) as e:
                messages(g, "reject")
        rid = e.value.response.headers["x-request-id"]
        return {"status": e.value.status_code, "body": e.value.body, "summary": summary(g, rid)}

    o = same(scenario, gws)
    model = "gpt-4o-mini" if family == "openai" else "claude-haiku-4-5"
    message = f"Blocked by conformance ({model})"
    assert o["status"] == 403
    if family == "openai":
        assert o["body"]["message"] == message
    else:
        assert o["body"]["error"]["message"] == message
    assert o["summary"]["upstream"] is None and o["summary"]["attempts"] == 0


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_respond_with_greeting_from_config_then_kv(gws, family):
    def answer(g, mode="respond"):
        if family == "openai":
            return chat(g, mode).parse().choices[0].message.content
        return messages(g, mode).parse().content[0].text

    def scenario(g):
        texts = [answer(g)]
        assert admin_kv(g, "conformance", "greeting", "PUT", b"Hello from kv")[0] == 204
        texts.append(answer(g))
        answer(g, "forget")  # the plugin deletes the kv greeting
        texts.append(answer(g))
        return texts

    assert same(scenario, gws) == ["Hello from the conformance plugin", "Hello from kv",
                                   "Hello from the conformance plugin"]


def test_rewrite_headers_model_metadata_principal(gws, mock):
    def scenario(g):
        tag = f"conformance-rewrite-{g.port}"
        raw = chat(g, "rewrite", **{"x-mock-tag": tag})
        (rec,) = mock.wait_requests(tag, lambda r: len(r) == 1)
        o = observe(g, raw, raw.parse().choices[0].message.content)
        log = g.record(raw.headers["x-request-id"])
        return {**o, "upstream_header": dict(rec["headers"]).get("x-conformance-seen"), "upstream_model": rec["body"]["model"],
                "principal": log["principal"]}

    o = same(scenario, gws)
    assert o["upstream_header"] == "rewrite" and o["upstream_model"] == "gpt-4o"
    assert o["principal"] == "conformance-user" and o["summary"]["principal"] == "conformance-user"
    assert o["summary"]["model"] == "gpt-4o"


def test_route(gws):
    def scenario(g):
        raw = chat(g, "route", model="no-such-model")
        o = observe(g, raw, raw.parse().choices[0].message.content)
        return {**o, "upstream_model": g.record(raw.headers["x-request-id"])["upstream_model"]}

    o = same(scenario, gws)
    assert o["upstream_model"] == "gpt-4o"
    assert (o["summary"]["upstream"], o["summary"]["model"]) == ("mock-openai", "gpt-4o")


def test_plugin_error_fails_closed(gws):
    def scenario(g):
        with pytest.raises(openai.InternalServerError) as e:
            chat(g, "error")
        rid = e.value.response.headers["x-request-id"]
        log = g.record(rid)
        s = summary(g, rid)
        return {"status": e.value.status_code, "message": e.value.message, "outcome": log["outcome"],
                "attempts": log["attempts"], "error": log["error"],
                "summary": (s["outcome"], s["status"], s["has_error"], s["text_events"])}

    o = same(scenario, gws)
    assert o["status"] == 500 and "`conformance`" in o["message"] and "conformance error requested" in o["message"]
    assert (o["outcome"], o["attempts"]) == ("gateway_error", 0)
    # A plugin whose on-request failed still gets on-complete (on a fresh instance: its own is not called again),
    # so whatever it reserved before failing can be settled.
    assert o["summary"] == ("gateway_error", 500, True, 0)


def test_cancelled_stream_is_summarised_as_partial(gws):
    def scenario(g):
        raw = chat(g, "pass", stream=True, chunks=50, **{"x-mock-delay-ms": "20"})
        stream = raw.parse()
        next(iter(stream))
        stream.close()
        s = summary(g, raw.headers["x-request-id"])
        return {"outcome": s["outcome"], "partial": s["partial"], "status": s["status"]}

    assert same(scenario, gws) == {"outcome": "cancelled", "partial": True, "status": 200}


def test_kv_counters(gws):
    def scenario(g):
        before = int(kv(g, "requests"))
        chat(g, "upper")
        after = int(kv(g, "requests"))
        return {"delta": after - before, "last_mode": kv(g, "last_mode")}

    assert same(scenario, gws) == {"delta": 1, "last_mode": "upper"}
    # Every language counted the same requests in on-request and the same completions in on-complete (every
    # request whose on-request started is completed). on-complete runs after the response.
    deadline = time.time() + 5
    while True:
        counts = {lang: (kv(g, "requests"), kv(g, "completed")) for lang, g in gws.items()}
        if len(set(counts.values())) == 1 and all(r == c for r, c in counts.values()):
            break
        assert time.time() < deadline, f"(requests, completed) per language: {counts}"
        time.sleep(0.05)


def sdk_digest(body):
    """The host's digest of a chat completions request, recomputed here (test_cache.canonical_digest)."""
    from test_cache import canonical_digest
    return canonical_digest("chat.completions", body)


@pytest.mark.parametrize("stream", [False, True])
def test_reply_whole_is_delivered_in_the_form_asked_and_is_cached(gws, mock, stream):
    """`reply` with a whole body (`cached`): a non-streaming client gets it as it is, a streaming one as the API's
    events; the plugin's response headers (`add-response-header` and the reply's own) are on it; no upstream is
    called; `on-complete` sees the outcome `cached`."""
    tags = []

    def scenario(g):
        tags.append(t := f"conformance-reply-{len(tags)}-{time.time_ns()}")
        raw = chat(g, "reply", stream=stream, **{"x-mock-tag": t})
        content = "".join(openai_deltas(raw)) if stream else raw.parse().choices[0].message.content
        return {**observe(g, raw, content), "reply": raw.headers["x-conformance-reply"],
                "digest": raw.headers["x-conformance-digest"]}

    o = same(scenario, gws, LANGS_03)
    assert o["content"] == "Hello from the conformance plugin" and o["reply"] == "whole"
    assert o["digest"] == sdk_digest({"messages": MSG, "model": "gpt-4o-mini"}), "stream is not part of the digest"
    assert (o["summary"]["status"], o["summary"]["outcome"], o["summary"]["upstream"]) == (200, "cached", None)
    assert all(mock.requests(t) == [] for t in tags), "no upstream call"


@pytest.mark.parametrize("stream", [False, True])
def test_reply_events_are_streamed_or_put_together(gws, stream):
    """`reply` with SSE events (not cached): a streaming client gets those deltas, a non-streaming one the whole
    answer put together from them; an Anthropic client is refused by the plugin, in its own error shape."""
    def scenario(g):
        raw = chat(g, "reply-events", stream=stream)
        content = openai_deltas(raw) if stream else raw.parse().choices[0].message.content
        out = {**observe(g, raw, content), "reply": raw.headers["x-conformance-reply"]}
        with pytest.raises(anthropic.BadRequestError) as e:
            messages(g, "reply-events")
        return {**out, "anthropic": e.value.message}

    o = same(scenario, gws, LANGS_03)
    assert o["content"] == (["Hello", " from the conformance plugin"] if stream else "Hello from the conformance plugin")
    assert o["reply"] == "events" and o["summary"]["outcome"] != "cached" and o["summary"]["upstream"] is None
    assert "reply-events is for OpenAI clients" in o["anthropic"]


def test_digest_header_on_an_upstream_answer_and_one_call_for_a_burst(gws, mock):
    """`digest` and `add-response-header` on an answer that came from the upstream; `coalesce` with the digest as
    key: four identical concurrent requests make one upstream call."""
    from concurrent.futures import ThreadPoolExecutor

    def scenario(g):
        t = f"conformance-digest-{time.time_ns()}"
        prompt = [{"role": "user", "content": f"Say hello {t}"}]
        client = openai_client(g, timeout=30)
        h = {"x-conformance": "digest", "x-mock-tag": t, "x-mock-header-delay-ms": "400"}

        def ask(_):
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=prompt, extra_headers=h)

        with ThreadPoolExecutor(4) as pool:
            raws = list(pool.map(ask, range(4)))
        up = mock.requests(t)
        digests = {r.headers["x-conformance-digest"] for r in raws}
        return {"texts": [r.parse().choices[0].message.content for r in raws], "upstream_calls": len(up),
                "digest_is_the_body's": digests == {sdk_digest(up[0]["body"])},
                "coalesced": sorted(r.headers.get("x-weir-coalesced", "") for r in raws)}

    o = same(scenario, gws, LANGS_03)
    assert o == {"texts": [expected_text(8)] * 4, "upstream_calls": 1, "digest_is_the_body's": True,
                 "coalesced": ["", "true", "true", "true"]}
