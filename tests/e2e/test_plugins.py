"""The plugin runtime end to end: real components built from source, loaded from the config and from the watched
directory, driven through the official SDKs."""

import concurrent.futures
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import (
    ALLOWLIST_PLUGIN, GUESTS, WEIR, Gateway, install, anthropic_client, expected_text, openai_client, wait_for,
)

MSG = [{"role": "user", "content": "Say hello"}]



@pytest.fixture(scope="module")
def pg(session_tmp, mock):
    """A gateway with four plugins: allowlist (config), and closed / open / chunky (watched directory)."""
    d = session_tmp / "plugins.d"
    d.mkdir()
    install(d, "closed", "misbehave.wasm", 'order = 20\nfailure = "fail-closed"\ncapabilities = ["config"]\n'
            'memory = "16MiB"\ntimeouts = { on_request = "300ms", on_chunk = "50ms" }\nconfig = { trigger = "x-closed" }\n')
    install(d, "open", "misbehave.wasm", 'order = 30\nfailure = "fail-open"\ncapabilities = ["config"]\n'
            'memory = "16MiB"\ntimeouts = { on_request = "100ms" }\nconfig = { trigger = "x-open" }\n')
    install(d, "chunky", "chunky.wasm", 'order = 40\ncapabilities = ["config", "kv", "trace", "log"]\n'
            'isolation = "request"\n')
    top = f'plugins_dir = "{d}"\n'
    tail = f"""
[plugin_runtime]
quarantine_after = 1000
cache_dir = "{session_tmp / 'plugin-cache'}"
""" + ALLOWLIST_PLUGIN
    g = Gateway(session_tmp, mock, name="plugins", top=top, tail=tail)
    g.dir = d
    yield g
    g.stop()


@pytest.fixture
def poai(pg):
    return openai_client(pg)


@pytest.fixture
def pant(pg):
    return anthropic_client(pg)


def chat(client, headers=None, stream=False, chunks=8):
    h = {"x-mock-chunks": str(chunks), **(headers or {})}
    if not stream:
        return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, extra_headers=h)
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, stream=True, extra_headers=h)


def streamed_text(raw):
    return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_chain_is_loaded_in_order(pg):
    doc = pg.admin()
    assert [p["name"] for p in doc["plugins"]] == ["allowlist", "closed", "open", "chunky"]
    allow = doc["plugins"][0]
    assert allow["source"].startswith("config: ") and len(allow["version"]) == 12
    assert doc["plugins"][1]["source"].startswith("dir: ")


def test_allowlist_allows_and_marks(pg, poai):
    raw = chat(poai)
    assert raw.parse().choices[0].message.content == expected_text(8)
    rec = pg.record(raw.headers["x-request-id"])
    assert "weir.plugin.allowlist.verdict=allowed" in rec["plugin_attributes"]


def test_allowlist_rejects_in_each_api_shape(pg, poai, pant):
    with pytest.raises(openai.PermissionDeniedError) as e:
        poai.embeddings.create(model="text-embedding-3-small", input="x")
    assert "text-embedding-3-small" in e.value.message and "not allowed" in e.value.message
    assert e.value.response.headers["x-weir-error-source"] == "client"
    # Anthropic shape, via a raw request whose model is not on the list.
    req = urllib.request.Request(pg.url + "/v1/messages", method="POST",
                                 data=json.dumps({"model": "gpt-4o", "max_tokens": 5, "messages": MSG}).encode(),
                                 headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    body = json.loads(e.value.read())
    assert e.value.code == 403 and body["type"] == "error" and body["error"]["type"] == "permission_error"


@pytest.mark.parametrize("mode,expect", [
    ("trap", "trapped"),
    ("loop", "exceeded its on-request deadline of 300ms"),
    ("alloc", "exceeded its memory limit of 16 MiB"),
    ("recurse", ""),
    ("error", "returned an error: asked to fail"),
    ("crlf", "invalid value for header `x-evil`"),
    ("hop", "tried to set `transfer-encoding`"),
])
def test_failing_fail_closed_plugin_fails_only_its_request(pg, poai, mode, expect):
    with pytest.raises(openai.InternalServerError) as e:
        chat(poai, {"x-closed": mode})
    msg = e.value.message
    assert "plugin `closed`" in msg and "fail-closed" in msg, msg
    assert expect in msg, msg
    if mode == "recurse":
        assert "stack" in msg or "trapped" in msg, msg
    assert e.value.response.headers["x-weir-error-source"] == "gateway"
    # The gateway keeps serving everyone else.
    assert chat(poai).parse().choices[0].message.content == expected_text(8)


def test_failing_fail_open_plugin_is_skipped(pg, poai):
    for mode in ("trap", "loop", "alloc", "error", "crlf"):
        raw = chat(poai, {"x-open": mode})
        assert raw.parse().choices[0].message.content == expected_text(8), mode
    # Failures are counted once per request, when it completes (after the response).
    failures = lambda: {p["name"]: p for p in pg.admin()["plugins"]}["open"]  # noqa: E731
    wait_for(lambda: failures()["failures"] >= 5, "five failures counted", timeout=5)
    assert "on-request" in failures()["last_error"]


def test_spinning_plugin_does_not_stall_other_requests(pg, poai):
    """While one request's plugin spins until its 300 ms deadline, other requests keep completing."""
    done_normal = []
    spin_done = threading.Event()

    def spin():
        with pytest.raises(openai.InternalServerError):
            chat(poai, {"x-closed": "loop"})
        spin_done.set()

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.05)
    while not spin_done.is_set():
        started = time.monotonic()
        chat(poai)
        done_normal.append((time.monotonic() - started) * 1000)
    t.join()
    assert len(done_normal) >= 3, f"only {len(done_normal)} requests completed while a plugin spun"
    print(f"{len(done_normal)} requests during a 300 ms spin; latencies ms: {[round(x, 1) for x in done_normal]}")


def test_sandbox_reaches_nothing(pg, poai):
    raw = poai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-open": "sandbox"})
    body = json.loads(raw.http_response.text)
    assert body["fs"].startswith("Err("), body
    assert body["net"].startswith("Err("), body
    assert body["env"] == [], "no environment variables are visible"


def test_mid_stream_plugin_failure_is_an_error_event(pg, poai):
    raw = chat(poai, {"x-closed": "chunk-trap"}, stream=True)
    with pytest.raises(openai.APIError) as e:
        streamed_text(raw)
    assert "plugin `closed`" in e.value.message and "on-chunk" in e.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_redact_replaces_text_in_both_families(pg, poai, pant, stream):
    want = expected_text(12).replace("Weir", "W***")
    if stream:
        assert streamed_text(chat(poai, {"x-chunky": "redact"}, stream=True, chunks=12)) == want
        with pant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG,
                                  extra_headers={"x-chunky": "redact", "x-mock-chunks": "12"}) as s:
            assert "".join(s.text_stream) == want
    else:
        assert chat(poai, {"x-chunky": "redact"}, chunks=12).parse().choices[0].message.content == want
        m = pant.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSG,
                                 extra_headers={"x-chunky": "redact", "x-mock-chunks": "12"})
        assert m.content[0].text == want
        r = poai.responses.create(model="gpt-4o-mini", input="hi", extra_headers={"x-chunky": "redact", "x-mock-chunks": "12"})
        assert r.output_text == want


def test_hold_and_flush(pg, poai, pant):
    assert streamed_text(chat(poai, {"x-chunky": "hold"}, stream=True)) == expected_text(8).upper()
    with pant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers={"x-chunky": "hold"}) as s:
        assert "".join(s.text_stream) == expected_text(8).upper()
    events = [e for e in poai.responses.create(model="gpt-4o-mini", input="hi", stream=True, extra_headers={"x-chunky": "hold"})
              if e.type == "response.output_text.delta"]
    assert [e.delta for e in events] == [expected_text(8).upper()], "held text comes out as one delta at the end"


def test_hold_released_by_later_event(pg, poai):
    raw = chat(poai, {"x-chunky": "pairs"}, stream=True, chunks=7)
    chunks = [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]
    assert "".join(chunks) == expected_text(7), "nothing lost, nothing duplicated"
    assert len(chunks) == 4, f"7 deltas released in pairs (the last one by flush): {chunks}"


def test_drop_and_abort(pg, poai):
    assert streamed_text(chat(poai, {"x-chunky": "drop"}, stream=True)) == expected_text(8).replace(" mock", "")
    raw = chat(poai, {"x-chunky": "abort"}, stream=True, chunks=12)
    with pytest.raises(openai.APIError) as e:
        streamed_text(raw)
    assert "determinism" in e.value.message and "plugin `chunky`" in e.value.message
    with pytest.raises(openai.PermissionDeniedError):
        chat(poai, {"x-chunky": "abort"}, chunks=12)


def test_on_complete_gets_the_summary(pg, poai):
    raw = chat(poai, {"x-chunky": "redact"}, stream=True)
    streamed_text(raw)
    rid = raw.headers["x-request-id"]
    pg.wait_log(f"chunky summary request={rid} outcome=ok status=200 output_tokens=8 partial=false text_events=8")


def test_fresh_instance_per_request_leaks_nothing(pg, poai):
    for mode in ("hold", "pairs", "redact"):
        streamed_text(chat(poai, {"x-chunky": mode}, stream=True))
    lines = [l for l in pg.log_text().splitlines() if "chunky request" in l]
    assert lines and all("instance_requests=1 " in l for l in lines), "every request got a fresh instance"
    chunky = next(p for p in pg.admin()["plugins"] if p["name"] == "chunky")
    assert chunky["preinitialized"], "fresh instances start from the snapshot of init (and still share nothing)"


def test_shared_instances_are_reused_without_leaking_plugin_state(session_tmp, mock):
    d = session_tmp / "warm.d"
    d.mkdir()
    install(d, "chunky", "chunky.wasm", 'capabilities = ["config", "kv", "trace", "log"]\nisolation = "shared"\n')
    g = Gateway(session_tmp, mock, name="warm", top=f'plugins_dir = "{d}"\n')
    try:
        c = openai_client(g)
        for mode in ("hold", "pairs", "hold", "redact"):
            raw = chat(c, {"x-chunky": mode}, stream=True, chunks=7)
            text = streamed_text(raw)
            assert text == {"hold": expected_text(7).upper(), "pairs": expected_text(7),
                            "redact": expected_text(7).replace("Weir", "W***")}[mode]
            # An instance returns to the pool when its request has completed (before its log line is written).
            g.record(raw.headers["x-request-id"])
        lines = [l for l in g.log_text().splitlines() if "chunky request" in l]
        assert any("instance_requests=4 " in l for l in lines), "one instance served all four"
        assert all("leaked_state=false" in l for l in lines), "the SDK resets per-request state"
    finally:
        g.stop()


def test_only_declared_hooks_are_called(pg, poai):
    """allowlist declares only on-request: a streamed answer calls chunky's on-chunk for every event and its
    on-complete, and never allowlist's (counted per plugin and hook in /metrics)."""
    def calls():
        with urllib.request.urlopen(pg.url + "/metrics", timeout=5) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        return {(s.labels["plugin"], s.labels["hook"]): s.value for s in fams["weir_plugin_calls"].samples
                if s.name == "weir_plugin_calls_total"}
    before = calls()
    raw = chat(poai, stream=True, chunks=6)
    assert streamed_text(raw)
    wait_for(lambda: calls()[("chunky", "on-complete")] > before[("chunky", "on-complete")], "on-complete ran")
    after = calls()
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta[("allowlist", "on-request")] == 1 and delta[("chunky", "on-request")] == 1
    assert delta[("chunky", "on-chunk")] >= 6
    assert delta[("allowlist", "on-chunk")] == 0 and delta[("allowlist", "flush")] == 0
    assert delta[("allowlist", "on-complete")] == 0 and delta[("chunky", "on-complete")] == 1
    assert pg.admin()["plugins"][0]["hooks"] == ["on-request"]


def test_hooks_start_with_a_fresh_deadline(pg, poai):
    """A hook's first deadline check is one epoch tick (1 ms) after the call starts. chunky's on-complete runs on
    the instance its on-request ran on, 30+ ms earlier (the mock waits before its headers): were the deadline
    left from on-request, every on-complete would pause at its first check and wait its turn behind other requests
    (milliseconds under load). Pauses are counted per plugin and hook in /metrics; a spinning plugin shows that
    the counter counts."""
    def metric(name):
        with urllib.request.urlopen(pg.url + "/metrics", timeout=5) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        fam = fams.get(name)
        return {(s.labels["plugin"], s.labels["hook"]): s.value for s in (fam.samples if fam else [])
                if s.name == name + "_total"}

    before, done = metric("weir_plugin_yields"), metric("weir_plugin_calls")[("chunky", "on-complete")]
    n = 10
    for _ in range(n):
        assert chat(poai, {"x-mock-header-delay-ms": "30"}).http_response.status_code == 200
    wait_for(lambda: metric("weir_plugin_calls")[("chunky", "on-complete")] >= done + n, "every on-complete ran")
    key = ("chunky", "on-complete")
    paused = metric("weir_plugin_yields").get(key, 0) - before.get(key, 0)
    # A call that happens to span a tick pauses once (a few % of these short calls); a stale deadline pauses all.
    assert paused <= n // 2, f"chunky's on-complete paused {paused} times in {n} requests"

    # The counter counts: a plugin spinning until its deadline (300 ms) pauses at nearly every tick.
    with pytest.raises(openai.InternalServerError):
        chat(poai, {"x-closed": "loop"})
    key = ("closed", "on-request")
    assert metric("weir_plugin_yields").get(key, 0) - before.get(key, 0) >= 50


def test_reserves_of_fresh_instances_never_take_the_slots_requests_need(session_tmp, mock):
    """The smallest pool (max_instances = 8) and four plugins: every request needs 4 instances. The plugins' reserves
    of fresh instances (made after each request) and their idle reused instances (allowlist runs `shared`, as it
    declares) may hold at most a quarter of the pool together, so request after request still finds the 4 it needs."""
    plugins = "".join(
        ALLOWLIST_PLUGIN.replace('name = "allowlist"', f'name = "allow{i}"').replace("order = 10", f"order = {i}")
        for i in range(4))
    g = Gateway(session_tmp, mock, name="tiny-pool", tail="[plugin_runtime]\nmax_instances = 8\n" + plugins)
    try:
        client = openai_client(g)
        for _ in range(12):
            raw = chat(client)
            assert raw.http_response.status_code == 200
            rid = raw.headers["x-request-id"]
            g.record(rid)  # logged after the completion phase (the refill follows it)
        assert all(p["failures"] == 0 for p in g.admin()["plugins"]), g.admin()["plugins"]
    finally:
        g.stop()


def test_foreign_import_is_refused_and_nothing_changes(pg, poai):
    install(pg.dir, "foreign", "foreign.wasm")
    deadline = time.time() + 5
    while "foreign" not in pg.admin()["load_errors"] and time.time() < deadline:
        time.sleep(0.05)
    err = pg.admin()["load_errors"]["foreign"]
    assert "test:foreign/raw-socket" in err and "neither" in err
    assert [p["name"] for p in pg.admin()["plugins"]] == ["allowlist", "closed", "open", "chunky"]
    assert chat(poai).parse().choices[0].message.content == expected_text(8)
    (pg.dir / "foreign.wasm").unlink()


def test_plugin_check_cli():
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "allowlist.wasm")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "weir:plugin/hooks@0.3.0" in out.stdout and 'needs capabilities: ["kv", "trace"]' in out.stdout
    assert "weir:plugin@0.3.0" in out.stdout
    # allowlist declares in its manifest (weir_sdk `Plugin::HOOKS`, `Plugin::REUSE`) that it only decides on
    # requests and that any instance may serve any request; chunky implements every hook.
    assert "hooks called: on-request  (declared in its manifest)" in out.stdout
    assert 'isolation: at most "shared"' in out.stdout
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "chunky.wasm")], capture_output=True, text=True)
    assert "hooks called: on-request, on-chunk, flush, on-complete  (declared in its manifest)\n" in out.stdout
    # A 0.1.0 component has no manifest: every hook, fresh instances only.
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "legacy.wasm")], capture_output=True, text=True)
    assert "hooks called: on-request, on-chunk, flush, on-complete  (no manifest)\n" in out.stdout, out.stdout
    assert 'isolation: at most "request"' in out.stdout
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "foreign.wasm")], capture_output=True, text=True)
    assert out.returncode == 1 and "test:foreign/raw-socket" in out.stderr
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "allowlist.wasm")[:-5] + ".nope"], capture_output=True, text=True)
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_not_granted_capability_is_refused_at_startup(session_tmp, mock, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'listen = "127.0.0.1:1"\n[[plugins]]\nname = "allowlist"\nfile = "{GUESTS / "allowlist.wasm"}"\ncapabilities = ["config"]\n')
    p = subprocess.run([str(WEIR), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "weir:plugin/kv@0.3.0" in p.stderr and "`kv` capability" in p.stderr, p.stderr


def test_quarantine_after_repeated_failures(session_tmp, mock):
    d = session_tmp / "quarantine.d"
    d.mkdir()
    install(d, "closed", "misbehave.wasm", 'capabilities = ["config"]\nconfig = { trigger = "x-closed" }\n')
    g = Gateway(session_tmp, mock, name="quarantine", top=f'plugins_dir = "{d}"\n',
                tail='[plugin_runtime]\nquarantine_after = 3\nquarantine_for = "1s"\n')
    try:
        c = openai_client(g)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                chat(c, {"x-closed": "error"})
        # A request's failure is counted when the request completes (just after its response).
        wait_for(lambda: g.admin()["plugins"][0]["quarantined"], "quarantined", timeout=5)
        with pytest.raises(openai.InternalServerError) as e:
            chat(c)
        assert "quarantined" in e.value.message, "a fail-closed plugin in quarantine refuses, it never passes through"
        assert g.admin()["plugins"][0]["quarantined"] is True
        time.sleep(1.2)
        assert chat(c).parse().choices[0].message.content == expected_text(8)
    finally:
        g.stop()


def test_hot_swap_under_load(session_tmp, mock):
    """50 concurrent streams while the plugin is replaced 20 times: no failure, and every stream sees one version
    from start to end. A half-written file and an invalid component never replace the working version. The plugin
    runs `shared`: reused instances are in flight at every swap, finish on their version and are dropped with it
    (an instance given back to the new version's pool would show as a stream with two versions)."""
    d = session_tmp / "swap.d"
    d.mkdir()
    install(d, "version", "version-A.wasm", 'isolation = "shared"\n')
    # Generous upstream timeouts: this test is about swaps, and 50 streams on a debug build on 2 cores are slow.
    g = Gateway(session_tmp, mock, name="swap", top=f'plugins_dir = "{d}"\n',
                tail=f'[plugin_runtime]\ncache_dir = "{session_tmp / "swap-cache"}"\n',
                timeouts='connect = "1s"\nfirst_byte = "10s"\nidle = "10s"')
    c = openai_client(g, timeout=30)

    finished = []  # (start, versions) of every stream done

    def one_stream(_):
        started = time.monotonic()
        raw = chat(c, {"x-mock-delay-ms": "20"}, stream=True, chunks=15)
        deltas = [ch.choices[0].delta.content for ch in raw.parse() if ch.choices and ch.choices[0].delta.content]
        versions = {d_[d_.rindex("<") + 1:-1] for d_ in deltas}
        assert len(deltas) == 15
        finished.append((started, versions))
        return versions

    def version_now():
        deltas = [ch.choices[0].delta.content for ch in chat(c, stream=True, chunks=1).parse()
                  if ch.choices and ch.choices[0].delta.content]
        return deltas[0][deltas[0].rindex("<") + 1:-1]

    try:
        assert version_now() == "A"
        swap_ms = []
        stop = threading.Event()

        def swapper():
            for i in range(20):
                v = "B" if i % 2 == 0 else "A"
                t0 = time.monotonic()
                install(d, "version", f"version-{v}.wasm")
                while version_now() != v:
                    time.sleep(0.002)
                swap_ms.append((time.monotonic() - t0) * 1000)
                # Hold this version until a stream that started under it has finished, so that every version
                # serves streams (the swaps could otherwise all happen within one batch of streams).
                live = time.monotonic()
                while not any(t >= live for t, _ in list(finished)) and time.monotonic() < live + 15:
                    time.sleep(0.005)
            stop.set()

        sw = threading.Thread(target=swapper)
        sw.start()
        seen = []
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            while not stop.is_set():
                seen.extend(pool.map(one_stream, range(50)))
        sw.join()
        assert all(len(v) == 1 for v in seen), "a stream saw two versions"
        assert {next(iter(v)) for v in seen} == {"A", "B"}
        with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
            reused = re.search(r'^weir_plugin_instances_total{plugin="version",source="reused"} (\S+)$',
                               r.read().decode(), re.M)
        assert reused and float(reused.group(1)) > 100, "instances were reused across the swaps"
        print(f"{len(seen)} streams, 0 failed; swap → first request on the new version: "
              f"median {sorted(swap_ms)[len(swap_ms) // 2]:.0f} ms, max {max(swap_ms):.0f} ms")

        # Now at A (20 swaps end on A). A half-written B does not replace it...
        assert version_now() == "A"
        # (Each write is followed by the failed load it causes: the admin document counts them.)
        failed = lambda: g.admin()["reloads"]["failed"]
        data = (GUESTS / "version-B.wasm").read_bytes()
        before = failed()
        (d / "version.wasm").write_bytes(data[: len(data) // 2])
        wait_for(lambda: failed() > before, "the half-written file was tried and refused")
        assert version_now() == "A"
        # ...nor does garbage...
        before = failed()
        (d / "version.wasm").write_bytes(b"\0asm garbage")
        wait_for(lambda: failed() > before, "the garbage file was tried and refused")
        assert version_now() == "A"
        assert "version" in g.admin()["load_errors"]
        # ...and once the file is complete, B serves.
        (d / "version.wasm").write_bytes(data)
        deadline = time.time() + 5
        while version_now() != "B":
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        g.stop()


def test_a_fresh_instance_never_sees_memory_an_earlier_request_wrote(session_tmp, mock):
    """`remember` writes every page of a 2 MiB static and answers how many it found written already. With a fresh
    instance per request (the default) no request may find any, however the pool's slots are reused, sequentially
    or 8 at a time; with `isolation = "shared"` the same instance is reused and the second request finds them all —
    which shows the check can see a leak."""
    d = session_tmp / "isolation.d"
    d.mkdir()
    settings = 'capabilities = ["config"]\nmemory = "16MiB"\n'
    install(d, "fresh", "misbehave.wasm", settings + 'isolation = "request"\nconfig = { trigger = "x-fresh" }\n')
    install(d, "reused", "misbehave.wasm",
            settings + 'isolation = "shared"\nreuse = { instances = 1 }\nconfig = { trigger = "x-reused" }\n')
    g = Gateway(session_tmp, mock, name="isolation", top=f'plugins_dir = "{d}"\n',
                tail=f'[plugin_runtime]\ncache_dir = "{session_tmp / "plugin-cache"}"\n')
    try:
        c = openai_client(g)

        def remember(header):
            raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG,
                                                              extra_headers={header: "remember"})
            return json.loads(raw.http_response.text)

        first = remember("x-fresh")
        assert first["dirty_pages"] == 0 and first["pages"] == 512, first
        seen = [remember("x-fresh")["dirty_pages"] for _ in range(50)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seen += list(pool.map(lambda _: remember("x-fresh")["dirty_pages"], range(200)))
        assert seen == [0] * 250, f"a fresh instance found pages written by an earlier request: {sorted(set(seen))}"
        # The control: a reused instance keeps what the last request wrote, and the check sees it.
        remember("x-reused")
        wait_for(lambda: remember("x-reused")["dirty_pages"] == 512, "the reused instance remembers", timeout=5)
    finally:
        g.stop()
