"""Plugin isolation modes (docs/plugins.md, "Isolation"), checked from outside with a real guest: `misbehave` in
`secret` mode answers what an earlier request left in its instance — in a global and in its linear memory — and then
leaves the request's own `x-secret` there. A first plugin sets the principal from `x-tenant`, as auth would.

- `request`: nothing is ever found;
- `tenant`: only a secret of the same tenant is ever found (and it is, once the instance is back: reuse happens);
  requests without a principal never find anything;
- `shared`: another tenant's secret is found — the control that shows the check can see a carry-over.

And the rules for reused instances: dropped after a trap, a deadline, an error or a call cut short by a client that
went away; retired after `reuse.max_requests`; a component may not be run looser than its manifest declares."""

import concurrent.futures
import json
import re
import subprocess
import time
import urllib.request

import httpx2 as httpx  # the HTTP client the official SDKs use
import openai
import pytest

from conftest import GUESTS, WEIR, Gateway, install, openai_client, wait_for

MSG = [{"role": "user", "content": "Say hello"}]
SETTINGS = 'capabilities = ["config"]\nmemory = "16MiB"\n'


@pytest.fixture(scope="module")
def iso(session_tmp, mock):
    d = session_tmp / "isolation-modes.d"
    d.mkdir()
    install(d, "who", "misbehave.wasm", SETTINGS + 'order = 1\nconfig = { principal_header = "x-tenant" }\n')
    install(d, "t", "misbehave.wasm", SETTINGS + 'order = 10\nisolation = "tenant"\nconfig = { trigger = "x-t" }\n')
    install(d, "s", "misbehave.wasm", SETTINGS + 'order = 20\nisolation = "shared"\nconfig = { trigger = "x-s" }\n')
    install(d, "r", "misbehave.wasm", SETTINGS + 'order = 30\nisolation = "request"\nconfig = { trigger = "x-r" }\n')
    # One idle instance at most, retired after 3 requests; hooks slow enough to be cut short by a hang-up.
    install(d, "one", "misbehave.wasm", SETTINGS + 'order = 40\nisolation = "shared"\n'
            'reuse = { instances = 1, max_requests = 3 }\n'
            'timeouts = { on_request = "100ms", on_chunk = "5s" }\nconfig = { trigger = "x-one" }\n')
    # One idle instance at most, retired only by its memory (default limit: 3/4 of its 16 MiB).
    install(d, "big", "misbehave.wasm", SETTINGS + 'order = 50\nisolation = "shared"\nreuse = { instances = 1 }\n'
            'config = { trigger = "x-big" }\n')
    g = Gateway(session_tmp, mock, name="isolation-modes", top=f'plugins_dir = "{d}"\n',
                tail=f'[plugin_runtime]\nquarantine_after = 1000\ncache_dir = "{session_tmp / "plugin-cache"}"\n')
    wait_for(lambda: len(g.admin()["plugins"]) == 6, "plugins loaded", timeout=30)
    yield g
    g.stop()


def instances(g, plugin):
    """`weir_plugin_instances_total` of `plugin`, by source."""
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = rf'^weir_plugin_instances_total{{(?=[^}}]*plugin="{plugin}")[^}}]*source="(\w+)"[^}}]*}} ([0-9.e+-]+)$'
    return {source: float(v) for source, v in re.findall(pattern, text, re.M)}


def secret(g, header, value, tenant=None, mode="secret"):
    """Sends `value` as the secret to the plugin triggered by `header`; returns what it found, once the request's
    instance is back (its log line is written after that)."""
    headers = {header: mode, "x-secret": value}
    if tenant is not None:
        headers["x-tenant"] = tenant
    raw = openai_client(g).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG,
                                                                    extra_headers=headers)
    g.record(raw.headers["x-request-id"])
    found = json.loads(raw.http_response.text)
    assert found["global"] == found["memory"], found
    return found["global"]


def test_request_mode_never_carries_anything(iso):
    for i, tenant in enumerate(["a", "a", "b", None, "a"]):
        assert secret(iso, "x-r", f"r{i}", tenant) == ""
    got = instances(iso, "r")
    assert got.get("reused", 0) == 0 and got.get("reserve", 0) + got.get("new", 0) >= 5, got


def test_tenant_mode_carries_only_within_a_tenant(iso):
    assert secret(iso, "x-t", "a1", "a") == ""
    assert secret(iso, "x-t", "a2", "a") == "a1", "the same tenant reuses its instance"
    assert secret(iso, "x-t", "b1", "b") == "", "never another tenant's instance"
    assert secret(iso, "x-t", "a3", "a") == "a2"
    assert secret(iso, "x-t", "b2", "b") == "b1"
    # Without a principal: a fresh instance each time, never kept.
    assert secret(iso, "x-t", "n1") == ""
    assert secret(iso, "x-t", "n2") == ""
    # Many tenants at once: whatever an instance carries is its own tenant's.
    def one(i):
        tenant = "abcd"[i % 4]
        return tenant, secret(iso, "x-t", f"{tenant}-{i}", tenant)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        found = list(pool.map(one, range(80)))
    leaked = [(t, f) for t, f in found if f and f[0] != t]
    assert not leaked, f"an instance carried another tenant's secret: {leaked}"
    assert sum(1 for _, f in found if f) > 40, "instances were reused within tenants"
    assert instances(iso, "t")["reused"] > 40, instances(iso, "t")


def test_shared_mode_carries_across_tenants_the_control(iso):
    secret(iso, "x-s", "s-a", "a")
    assert secret(iso, "x-s", "s-b", "b") == "s-a", "shared: any request may get the instance"


def test_a_reused_instance_is_dropped_after_any_failure(iso):
    c = openai_client(iso)

    def fails(mode):
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-one": mode})
        assert e.value.status_code >= 500
        iso.record(e.value.response.headers["x-request-id"])

    for mode in ("trap", "loop", "error"):
        secret(iso, "x-one", "before")  # the pool's one instance now holds "before" (or a fresh one does)
        assert secret(iso, "x-one", f"kept-{mode}") == "before"
        fails(mode)  # the instance holding the secret failed: dropped
        assert secret(iso, "x-one", "after") == "", f"an instance was reused after `{mode}`"


def test_a_reused_instance_is_dropped_when_a_hang_up_cuts_a_call_short(iso):
    secret(iso, "x-one", "x")  # whatever the pool had is now at most one instance
    body = {"model": "gpt-4o-mini", "messages": MSG, "stream": True}
    headers = {"authorization": "Bearer x", "x-one": "secret-spin", "x-secret": "cut", "x-mock-chunks": "8"}
    with httpx.Client(timeout=10) as h:
        with h.stream("POST", iso.url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            rid = r.headers["x-request-id"]
            time.sleep(0.3)  # the plugin spins in on-chunk; the client goes away mid-call
    rec = iso.record(rid)
    assert rec["outcome"] == "cancelled", rec
    assert secret(iso, "x-one", "next") == "", "the instance whose call was cut short was not reused"


def test_a_reused_instance_retires_when_its_memory_grew_past_the_limit(iso):
    assert secret(iso, "x-big", "x") == ""
    assert secret(iso, "x-big", "before") == "x"
    # Grows by 10 MiB, past the default limit of 3/4 of its 16 MiB cap: served, then retired.
    assert secret(iso, "x-big", "grown", mode="secret-grow") == "before"
    assert secret(iso, "x-big", "after") == "", "the instance that grew past reuse.memory was not reused"
    assert secret(iso, "x-big", "again") == "after"


def test_a_reused_instance_retires_after_max_requests(iso):
    # Start from a fresh instance: a failure drops whatever the pool held.
    with pytest.raises(openai.APIStatusError):
        openai_client(iso).chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-one": "error"})
    time.sleep(0.2)
    seen = [secret(iso, "x-one", f"m{i}") for i in range(7)]
    assert seen == ["", "m0", "m1", "", "m3", "m4", ""], seen


def test_looser_isolation_than_declared_is_refused(session_tmp, mock, tmp_path):
    # At start-up: a 0.1.0 component (no manifest) cannot be reused.
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'listen = "127.0.0.1:1"\n[[plugins]]\nname = "old"\nfile = "{GUESTS / "legacy.wasm"}"\n'
                   'capabilities = ["config", "kv", "trace", "log", "clock"]\nisolation = "tenant"\n')
    p = subprocess.run([str(WEIR), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert 'ask for `isolation = "tenant"`' in p.stderr and "weir:plugin@0.1.0" in p.stderr, p.stderr
    assert "rebuild against 0.3.0" in p.stderr, p.stderr
    # `warm_instances` is gone, and the error says what replaced it.
    cfg.write_text(f'listen = "127.0.0.1:1"\n[[plugins]]\nname = "x"\nfile = "{GUESTS / "allowlist.wasm"}"\n'
                   'warm_instances = 4\n')
    p = subprocess.run([str(WEIR), "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "`warm_instances` was replaced by `isolation`" in p.stderr, p.stderr
    # In the watched directory: a 0.3.0 component that declares no reuse is refused `shared`, with the reason
    # shown, and loads once its settings ask for what it declares.
    d = session_tmp / "isolation-refused.d"
    d.mkdir()
    install(d, "conf", "conformance-rust.wasm", 'capabilities = ["log", "config", "kv", "trace", "clock"]\n'
            'isolation = "shared"\n')
    g = Gateway(session_tmp, mock, name="isolation-refused", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: "conf" in g.admin()["load_errors"], "load error shown")
        err = g.admin()["load_errors"]["conf"]
        assert 'ask for `isolation = "shared"`' in err and "at most as `request`" in err, err
        assert g.admin()["plugins"] == []
        (d / "conf.toml").write_text('capabilities = ["log", "config", "kv", "trace", "clock"]\n')
        wait_for(lambda: [p["name"] for p in g.admin()["plugins"]] == ["conf"], "loaded with its declared isolation")
        p = g.admin()["plugins"][0]
        assert (p["isolation"], p["declared_reuse"]) == ("request", "request"), p
    finally:
        g.stop()
