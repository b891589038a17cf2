#!/usr/bin/env python3
"""Plugin safety, measured: the cases of the plugin-safety issue, run against one gateway binary and one set of
first-party plugins (so the same script measures a build from before a change and one from after it).

    python3 bench/plugin_safety.py --weir target/release/weir --plugins target/wasm32-wasip2/plugin

The gateway runs the example chain (auth → router → redact → cost, as examples/weir.toml composes it) in front of its
built-in mock, at log level info (JSON). Cases:

1. hang-ups: `wrk -c64 -d2s` of streamed Anthropic requests, five times (wrk closes its connections mid-stream when a
   run ends); after each burst one legitimate request. Once on a quiet machine, once with `--busy N` busy loops
   running beside (default 2): whether hang-ups land inside hook calls depends on preemption. Reports plugin failures (log lines), quarantines, the
   statuses of the legitimate requests, and whether cost's recorded spend equals the sum of the settled usages of the
   logged requests (partial ones included).
2. deep JSON: five ~450-byte chat requests nested 200 levels; then a legitimate request.
3. large inputs: prompts of 1, 2, 4 and 9.5 MiB (under the 10 MiB max_body) and a ~256 KiB non-streamed answer.

Prints one markdown table. Needs `wrk` (Debian package).
"""

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

DEMO_KEY = "sk-weir-demo"
DEMO_HASH = "sha256:5f514c4f6c70ebe6f9e8d2ae2bffc8f88dd2f6e2660a579d269d5cef701369f4"
ADMIN = "bench-admin-token"
# Round prices: nano-dollars per token 10_000 in, 20_000 out.
NANO_IN, NANO_OUT = 10_000, 20_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port, mock_port, plugins):
    p = Path(plugins)
    return f"""
listen = "127.0.0.1:{port}"
forward_headers = ["x-mock-*"]
[mock_upstream]
listen = "127.0.0.1:{mock_port}"
[log]
format = "json"
level = "info"
[admin]
token_env = "WEIR_BENCH_ADMIN"
[[upstreams]]
id = "openai"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
models = ["gpt-4o-mini"]
[[upstreams]]
id = "anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{mock_port}/v1"
models = ["claude-haiku-4-5"]
[timeouts]
connect = "5s"
first_byte = "60s"
idle = "60s"

[[plugins]]
name = "auth"
order = 10
file = "{p / 'weir_plugin_auth.wasm'}"
capabilities = ["config", "kv", "trace", "clock"]
config = {{ keys = [{{ id = "demo", hash = "{DEMO_HASH}", team = "demo" }}] }}

[[plugins]]
name = "router"
order = 20
file = "{p / 'weir_plugin_router.wasm'}"
capabilities = ["config", "trace"]
[[plugins.config.rules]]
name = "fast"
model = "fast"
targets = [{{ upstream = "openai", model = "gpt-4o-mini" }}, {{ upstream = "anthropic", model = "claude-haiku-4-5" }}]

[[plugins]]
name = "redact"
order = 30
file = "{p / 'weir_plugin_redact.wasm'}"
capabilities = ["config", "trace"]
config = {{ default = "mask", modes = {{ secret = "block" }} }}

[[plugins]]
name = "cost"
order = 40
file = "{p / 'weir_plugin_cost.wasm'}"
capabilities = ["log", "config", "kv", "trace", "clock"]
[plugins.config]
budgets = [{{ key = "demo", usd = 1000000.0, period = "day" }}]
[plugins.config.prices]
"gpt-4o-mini" = {{ input = 10.0, output = 20.0 }}
"claude-haiku-4-5" = {{ input = 10.0, output = 20.0 }}
"""


def post(url, body, headers, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def chat(url, content="hi", extra=None):
    return post(url + "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
                {"authorization": f"Bearer {DEMO_KEY}", **(extra or {})})


def admin(url):
    req = urllib.request.Request(url + "/admin/plugins")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def spend(url, day):
    req = urllib.request.Request(f"{url}/admin/plugins/cost/kv/spend/key/demo/{day}",
                                 headers={"authorization": f"Bearer {ADMIN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.read())
    except urllib.error.HTTPError:
        return 0


def records(log):
    out = []
    for line in log.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("target") == "weir::request":
            out.append(r)
    return out


def quiet(log, timeout=30):
    last, deadline = -1, time.time() + timeout
    while time.time() < deadline:
        n = len(records(log))
        if n == last:
            return
        last = n
        time.sleep(1.0)


def failures_and_quarantines(url):
    doc = admin(url)
    return sum(p["failures"] for p in doc["plugins"]), sum(p["quarantines"] for p in doc["plugins"])


class Gateway:
    """A fresh gateway (and its built-in mock) for one case."""

    def __init__(self, weir, plugins, tmp, name):
        port, mock_port = free_port(), free_port()
        (tmp / f"{name}.toml").write_text(config(port, mock_port, plugins))
        self.log = tmp / f"{name}.log"
        env = {**os.environ, "WEIR_BENCH_ADMIN": ADMIN}
        self.proc = subprocess.Popen([weir, "serve", "--config", str(tmp / f"{name}.toml")],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(self.log.read_text()[-2000:])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def hang_ups(g, tmp, busy=0):
    day = time.strftime("%Y-%m-%d", time.gmtime())
    lua = tmp / "stream.lua"
    lua.write_text(
        'wrk.method = "POST"\n'
        'wrk.body = \'{"model":"claude-haiku-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Tell me about weirs"}]}\'\n'
        'wrk.headers["content-type"] = "application/json"\n'
        f'wrk.headers["x-api-key"] = "{DEMO_KEY}"\n'
        'wrk.headers["anthropic-version"] = "2023-06-01"\n'
        'wrk.headers["x-mock-chunks"] = "40"\n'
        'wrk.headers["x-mock-delay-ms"] = "5"\n')
    statuses = []
    # Optional background load (the machine busy with something else): where hook calls get preempted at epoch
    # ticks, and hang-ups land inside them.
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(busy)]
    try:
        for _ in range(5):
            subprocess.run(["wrk", "-t2", "-c64", "-d2s", "-s", str(lua), g.url + "/v1/messages"],
                           capture_output=True, text=True, timeout=60)
            statuses.append(chat(g.url))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    quiet(g.log)
    recs = records(g.log)
    fails = sum(1 for l in g.log.read_text().splitlines() if "plugin failed" in l)
    f, q = failures_and_quarantines(g.url)
    cancelled = sum(1 for r in recs if r.get("outcome") == "cancelled")
    settled = sum((r.get("input_tokens") or 0) * NANO_IN + (r.get("output_tokens") or 0) * NANO_OUT
                  for r in recs if r.get("principal") == "demo")
    recorded = spend(g.url, day)
    load = f", {busy} busy loops beside" if busy else ""
    return (f"hang-ups: 5 × wrk -c64 -d2s, streamed{load}", f"{len(recs)} requests, {cancelled} cancelled",
            f"{fails} plugin-failure log lines, failures {f}, quarantines {q}",
            "next requests " + ",".join(map(str, statuses)),
            f"spend {recorded / 1e9:.6f} vs settled usage {settled / 1e9:.6f} USD "
            f"({'equal' if recorded == settled else 'differ by %.6f' % ((recorded - settled) / 1e9)})")


def deep_json(g):
    deep = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "x": json.loads("[" * 200 + "1" + "]" * 200)}
    body = json.dumps(deep, separators=(",", ":")).encode()
    st = [post(g.url + "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"}) for _ in range(5)]
    after = chat(g.url)
    f, q = failures_and_quarantines(g.url)
    return (f"deep JSON: 5 × {len(body)} bytes nested 200 levels", "statuses " + ",".join(map(str, st)),
            f"failures {f}, quarantines {q}", f"next request {after}", "")


def large(g):
    st = []
    for mib in (1, 2, 4, 9.5):
        text = ("The quick brown fox writes to someone about the weir. " * int(mib * 20000))[: int(mib * (1 << 20))]
        t0 = time.time()
        st.append(f"{mib} MiB: {chat(g.url, text)} ({time.time() - t0:.2f} s)")
    t0 = time.time()
    big = chat(g.url, "long", {"x-mock-chunks": "48000"})
    st.append(f"~256 KiB answer: {big} ({time.time() - t0:.2f} s)")
    after = chat(g.url)
    f, q = failures_and_quarantines(g.url)
    return ("large prompts and answer (each case on a fresh gateway)", "; ".join(st), f"failures {f}, quarantines {q}",
            f"next request {after}", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--plugins", required=True, help="directory with weir_plugin_{auth,router,redact,cost}.wasm")
    ap.add_argument("--label", default="")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the hang-up case (0: none)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rows = []
    cases = [("hangups-quiet", lambda g: hang_ups(g, tmp)), ("hangups-busy", lambda g: hang_ups(g, tmp, a.busy)),
             ("deep", deep_json), ("large", large)]
    if a.busy == 0:
        cases.pop(1)
    for name, case in cases:
        g = Gateway(a.weir, a.plugins, tmp, name)
        try:
            rows.append(case(g))
        finally:
            g.stop()
    print(f"\n### {a.label or a.weir}\n")
    print("| case | what happened | plugin failures | other clients | accounting |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
