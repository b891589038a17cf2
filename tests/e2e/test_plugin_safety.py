"""The plugin layer cannot be turned against the gateway: clients that hang up at any phase, one tenant's odd or
large requests, and a plugin that fails for some inputs never fail anybody else's request.

The gateway runs the example chain (auth → router → redact → cost) as `examples/weir.toml` composes it, with round
prices so that the spend cost records can be checked exactly against the usage the gateway logged.
"""

import concurrent.futures
import json
import random
import socket
import time

import anthropic
import openai
import pytest

from conftest import GUESTS, Gateway, admin_kv, anthropic_client, install, openai_client, wait_for

DEMO_KEY = "sk-weir-demo"
DEMO_HASH = "sha256:5f514c4f6c70ebe6f9e8d2ae2bffc8f88dd2f6e2660a579d269d5cef701369f4"
# Nano-dollars per token: $10 and $20 per million.
NANO_IN, NANO_OUT = 10_000, 20_000


def chain_tail():
    return f"""
[admin]
token_env = "WEIR_TEST_ADMIN_TOKEN"

[plugin_runtime]
quarantine_after = 5

[[plugins]]
name = "auth"
order = 10
file = "{GUESTS / 'auth.wasm'}"
capabilities = ["config", "kv", "trace", "clock"]
config = {{ keys = [{{ id = "demo", hash = "{DEMO_HASH}", team = "demo" }}] }}

[[plugins]]
name = "router"
order = 20
file = "{GUESTS / 'router.wasm'}"
capabilities = ["config", "trace"]
[[plugins.config.rules]]
name = "fast"
model = "fast"
targets = [{{ upstream = "mock-openai", model = "gpt-4o-mini" }}, {{ upstream = "mock-anthropic", model = "claude-haiku-4-5" }}]

[[plugins]]
name = "redact"
order = 30
file = "{GUESTS / 'redact.wasm'}"
capabilities = ["config", "trace"]
config = {{ default = "mask", modes = {{ secret = "block" }} }}

[[plugins]]
name = "cost"
order = 40
file = "{GUESTS / 'cost.wasm'}"
capabilities = ["log", "config", "kv", "trace", "clock"]
[plugins.config]
default_max_tokens = 64
budgets = [{{ key = "demo", usd = 1000.0, period = "day" }}]
[plugins.config.prices]
"gpt-4o-mini" = {{ input = 10.0, output = 20.0 }}
"claude-haiku-4-5" = {{ input = 10.0, output = 20.0 }}
"""


@pytest.fixture(scope="module")
def chain(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="safety", tail=chain_tail(),
                limits='max_body = "8MiB"\nclient_header_timeout = "2s"\ndrain = "5s"',
                timeouts='connect = "1s"\nfirst_byte = "5s"\nidle = "5s"')
    yield g
    g.stop()


def failures_and_quarantines(g):
    return {p["name"]: (p["failures"], p["quarantines"]) for p in g.admin()["plugins"]}


def assert_healthy(g):
    """No plugin failed or was quarantined, and a legitimate request is served."""
    assert "plugin failed" not in g.log_text(), [l for l in g.log_text().splitlines() if "plugin failed" in l][:3]
    assert all(v == (0, 0) for v in failures_and_quarantines(g).values()), failures_and_quarantines(g)
    r = openai_client(g, api_key=DEMO_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.status_code == 200


# ---- clients that hang up ----

def raw_request(port, path, body, headers, stream_read=0, close_after=0.0, partial_body=False, reset=False):
    """Sends one request on a raw socket and hangs up: after `close_after` seconds, having read up to `stream_read`
    bytes of the answer (or with only half the body sent, if `partial_body`); with a reset (like a killed client)
    or a normal close."""
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: gw", "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        s.sendall(data[: len(data) // 2] if partial_body else data)
        deadline = time.monotonic() + close_after
        got = 0
        s.settimeout(0.005)
        while time.monotonic() < deadline and got < max(stream_read, 1):
            try:
                chunk = s.recv(4096)
            except (socket.timeout, BlockingIOError):
                continue
            if not chunk:
                break
            got += len(chunk)
    finally:
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def hang_up(port, i, prompt):
    rnd = random.Random(i)
    phase = i % 5
    anthropic_api = rnd.random() < 0.6
    if anthropic_api:
        path = "/v1/messages"
        body = {"model": rnd.choice(["claude-haiku-4-5", "fast"]), "max_tokens": 64,
                "messages": [{"role": "user", "content": prompt}]}
        headers = {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"}
    else:
        path = "/v1/chat/completions"
        body = {"model": rnd.choice(["gpt-4o-mini", "fast"]), "messages": [{"role": "user", "content": prompt}]}
        headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    reset = rnd.random() < 0.3
    if phase == 0:  # while the body is still arriving
        raw_request(port, path, body, headers, close_after=rnd.uniform(0, 0.02), partial_body=True, reset=True)
    elif phase == 1:  # right after the request: during on-request
        raw_request(port, path, body, headers, close_after=rnd.uniform(0, 0.004))
    elif phase == 2:  # while waiting for the upstream
        headers["x-mock-header-delay-ms"] = "30"
        raw_request(port, path, body | {"stream": rnd.random() < 0.5}, headers, close_after=rnd.uniform(0.005, 0.03),
                    reset=reset)
    elif phase == 3:  # mid-stream: after a few hundred bytes to a few KB of the answer
        headers |= {"x-mock-chunks": "40", "x-mock-delay-ms": "3"}
        small = body | {"stream": True, "messages": [{"role": "user", "content": "Tell me about weirs"}]}
        raw_request(port, path, small, headers, stream_read=rnd.randint(300, 5000), close_after=5, reset=reset)
    else:  # around the end of the answer (flush, the last events, on-complete)
        headers |= {"x-mock-chunks": "8", "x-mock-delay-ms": "1"}
        small = body | {"stream": rnd.random() < 0.7, "messages": [{"role": "user", "content": "Hi"}]}
        raw_request(port, path, small, headers, stream_read=rnd.randint(500, 2500), close_after=5, reset=reset)


def spend(g, day):
    status, body = admin_kv(g, "cost", f"spend/key/demo/{day}")
    return int(body) if status == 200 else 0


def wait_quiet(g, timeout=30):
    """Waits until no new request line has been logged for a second (on-complete runs after the response)."""
    deadline = time.time() + timeout
    last = -1
    while time.time() < deadline:
        n = len(g.records())
        if n == last:
            return n
        last = n
        time.sleep(1.0)
    raise AssertionError("the gateway kept logging requests")


def test_clients_dropped_at_every_phase_harm_nobody(chain):
    day = time.strftime("%Y-%m-%d", time.gmtime())
    before_spend = spend(chain, day)
    before_records = len(chain.records())
    # Large enough that redact's on-request runs for a while (so hang-ups land inside plugin calls), small enough
    # to keep the run short.
    prompt = ("Please summarise this paragraph about rivers and weirs. " * 4000)[:200_000]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: hang_up(chain.port, i, prompt), range(300)))
    wait_quiet(chain)
    records = chain.records()[before_records:]
    outcomes = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    assert outcomes.get("cancelled", 0) >= 150, outcomes
    assert_healthy(chain)
    # Every reservation was settled to the usage the gateway saw, partial usage of cancelled streams included.
    expected = sum((r.get("input_tokens") or 0) * NANO_IN + (r.get("output_tokens") or 0) * NANO_OUT
                   for r in records if r.get("principal") == "demo")
    wait_quiet(chain)
    expected += sum((r.get("input_tokens") or 0) * NANO_IN + (r.get("output_tokens") or 0) * NANO_OUT
                    for r in chain.records()[before_records + len(records):] if r.get("principal") == "demo")
    assert spend(chain, day) - before_spend == expected, (outcomes, spend(chain, day) - before_spend, expected)
    partial_with_usage = [r for r in records if r["outcome"] == "cancelled" and r.get("input_tokens")]
    assert len(partial_with_usage) >= 10, "cancelled streams with partial usage are part of the check above"
    assert expected > 0
    mid_call = {p["name"]: p["cancelled_mid_call"] for p in chain.admin()["plugins"]}
    print("records", outcomes, "instances cancelled mid-call", mid_call)


# ---- one tenant's odd or large input ----

def test_deeply_nested_json_is_refused_up_front_and_harms_nobody(chain):
    deep = {"role": "user", "content": "hi", "x": json.loads("[" * 200 + "1" + "]" * 200)}
    c = openai_client(chain, api_key=DEMO_KEY)
    for _ in range(6):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="gpt-4o-mini", messages=[deep])
        assert "max_json_depth" in e.value.message and "64" in e.value.message, e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        anthropic_client(chain, api_key=DEMO_KEY).messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[deep])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    # Deep but within the limit: handled by every plugin of the chain.
    ok = {"role": "user", "content": "hi", "x": json.loads("[" * 60 + "1" + "]" * 60)}
    assert c.chat.completions.create(model="gpt-4o-mini", messages=[ok]).choices[0].message.content
    assert_healthy(chain)


def test_large_prompts_and_answers_pass_the_plugins(chain):
    c = openai_client(chain, api_key=DEMO_KEY, timeout=60)
    for size in (1 << 20, 4 << 20, 7 << 20):
        text = ("The quick brown fox writes to alice@example.com about the weir. " * (size // 64 + 1))[:size]
        r = c.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                        messages=[{"role": "user", "content": text}])
        assert r.status_code == 200, size
    # A ~256 KiB non-streamed answer goes through redact's whole-body on-chunk.
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "long"}],
                                  extra_headers={"x-mock-chunks": "40000"})
    assert len(r.choices[0].message.content) > 200_000
    assert_healthy(chain)


# ---- quarantine is for broken plugins ----

def test_failures_for_some_inputs_do_not_quarantine(session_tmp, mock):
    """A fail-closed plugin that fails for one tenant's requests fails those requests only; healthy traffic around
    them keeps the failure rate under the threshold, so nobody else is refused."""
    d = session_tmp / "rate.d"
    d.mkdir()
    install(d, "picky", "misbehave.wasm", 'capabilities = ["config"]\nconfig = { trigger = "x-picky" }\n')
    g = Gateway(session_tmp, mock, name="rate", top=f'plugins_dir = "{d}"\n',
                tail='[plugin_runtime]\nquarantine_after = 5\nquarantine_rate = 0.5\nquarantine_window = "60s"\n')
    try:
        c = openai_client(g)
        msgs = [{"role": "user", "content": "hi"}]
        for i in range(40):
            if i % 4 == 0:
                with pytest.raises(openai.InternalServerError):
                    c.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers={"x-picky": "trap"})
            else:
                assert c.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content
        # Requests are counted when they complete (just after their responses).
        wait_for(lambda: g.admin()["plugins"][0]["requests"] >= 40, "forty requests counted", timeout=5)
        p = g.admin()["plugins"][0]
        assert (p["requests"], p["failures"], p["quarantines"], p["quarantined"]) == (40, 10, 0, False), p
    finally:
        g.stop()
