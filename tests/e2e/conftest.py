"""End-to-end harness: the real `weir` binary, its mock upstream, and the official OpenAI and Anthropic SDKs.

Every test talks to a gateway process over loopback. The mock upstream requires a canary API key, so a successful
request proves the gateway replaced the client's credentials with the upstream's configured key.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEIR = Path(os.environ.get("WEIR_BIN", ROOT / "target" / "debug" / "weir"))

# Canaries: these must never appear in the gateway's logs.
UPSTREAM_KEY = "sk-upstream-canary-7f3a9c1e"
CLIENT_KEY = "sk-client-canary-b52d8e04"
# The admin API's bearer token, for gateways whose config has `[admin] token_env = "WEIR_TEST_ADMIN_TOKEN"`.
ADMIN_TOKEN = "admin-canary-3c91f0"

# The mock's deterministic answer: delta i is WORDS[i % len(WORDS)] (see host/src/mock.rs).
WORDS = ["Hello", " from", " the", " Weir", " mock", " upstream", ".", " This", " answer", " is", " deterministic", "."]


def expected_text(chunks=8):
    return "".join(WORDS[i % len(WORDS)] for i in range(chunks))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30.0, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def wait_for(pred, what, timeout=10):
    """Polls `pred` until it is true (what the gateway does after a response, such as counting the request in the
    completion phase, is not done yet when the client has its answer)."""
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, what
        time.sleep(0.02)


def metric(g, name):
    """The sum of every series of Prometheus metric `name` on gateway `g` (0 when there is none yet)."""
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Mock:
    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "mock.log"
        env = dict(os.environ, WEIR_MOCK_API_KEY=UPSTREAM_KEY)
        self.proc = subprocess.Popen(
            [str(WEIR), "mock-upstream", "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env,
        )
        wait_http(self.url + "/v1/models", proc=self.proc, log=self.log)

    def requests(self, tag):
        return http_json(f"{self.url}/_mock/requests?tag={tag}")

    def wait_requests(self, tag, pred, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            recs = self.requests(tag)
            if pred(recs) or time.time() > deadline:
                return recs
            time.sleep(0.02)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


GUESTS = ROOT / "target" / "guests"

# The allowlist plugin as a `[[plugins]]` entry (for a gateway config's tail).
ALLOWLIST_PLUGIN = f"""
[[plugins]]
name = "allowlist"
file = "{GUESTS / 'allowlist.wasm'}"
order = 10
capabilities = ["config", "kv", "trace"]
config = {{ models = ["gpt-4o-mini", "claude-*", "failover-*"] }}
"""


def example_config(tmp):
    """`examples/weir.toml` as written, with only its ports and plugin paths moved (so a test can run beside a
    `make run`): returns (config path, gateway port). Its watched directory is `tmp/plugins.d`."""
    port, mock_port = free_port(), free_port()
    text = (ROOT / "examples" / "weir.toml").read_text()
    assert "127.0.0.1:8080" in text and "127.0.0.1:8081" in text
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("127.0.0.1:8081", f"127.0.0.1:{mock_port}")
    for name in ("auth", "ratelimit", "cache", "router", "redact", "cost"):
        built = f"../target/wasm32-wasip2/plugin/weir_plugin_{name}.wasm"
        assert built in text, name
        text = text.replace(built, str(GUESTS / f"{name}.wasm"))
    text = text.replace('plugins_dir = "plugins.d"', f'plugins_dir = "{tmp / "plugins.d"}"')
    (tmp / "plugins.d").mkdir()
    config = tmp / "weir.toml"
    config.write_text(text)
    return config, port


def install(dir_, name, wasm, settings=""):
    """Drops a plugin into the watched directory the way a user would: the .toml first, then the .wasm (copied
    under a temporary name and renamed, so the gateway never sees half a file)."""
    if settings:
        (dir_ / f"{name}.toml").write_text(settings)
    tmp = dir_ / f".{name}.wasm.partial"
    shutil.copy(GUESTS / wasm if isinstance(wasm, str) else wasm, tmp)
    tmp.rename(dir_ / f"{name}.wasm")


def auth_plugin(rows):
    """The first-party `auth` plugin as a `[[plugins]]` entry (order 10), with `rows`: its `keys` entries, each an
    inline table (`{ id = "a", hash = "sha256:…", team = "t" }`), joined by commas."""
    return f"""
[[plugins]]
name = "auth"
order = 10
file = "{GUESTS / 'auth.wasm'}"
capabilities = ["config", "kv", "trace", "clock"]
[plugins.config]
keys = [
  {rows},
]
"""


def plugin_toml(name, order, capabilities, config=""):
    """A `[[plugins]]` entry for guest `name` (from target/guests), its config table's lines after it."""
    caps = ", ".join(f'"{c}"' for c in capabilities)
    entry = f'[[plugins]]\nname = "{name}"\norder = {order}\nfile = "{GUESTS / (name + ".wasm")}"\ncapabilities = [{caps}]\n'
    return entry + (f"[plugins.config]\n{config}\n" if config else "")


def admin_kv(g, plugin, key, method="GET", body=None, token=ADMIN_TOKEN):
    """A plugin's kv entry through the admin API: (status, body bytes). `key` as the plugin wrote it (it is
    percent-encoded here for the URL, `/` kept)."""
    path = urllib.parse.quote(key, safe="/")
    req = urllib.request.Request(f"{g.url}/admin/plugins/{plugin}/kv/{path}", data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def gateway_config(mock_port, port, top="", tail="", bind="127.0.0.1", **over):
    """The test gateway's config. `over` replaces sections by name; `top` adds top-level keys, `tail` tables."""
    sections = {
        "limits": 'max_body = "1MiB"\nclient_header_timeout = "1s"\ndrain = "5s"',
        "timeouts": 'connect = "1s"\nfirst_byte = "1s"\nidle = "1s"',
        "retry": 'attempts = 2\nbackoff_base = "50ms"\nbackoff_cap = "200ms"\nmax_retry_after = "3s"',
        "cooldown": 'failures = 1000\nduration = "1s"',
    }
    sections.update(over)
    dead = free_port()  # nothing listens here: connections are refused
    mock = f"http://127.0.0.1:{mock_port}/v1"
    text = f"""
listen = "{bind}:{port}"
forward_headers = ["x-mock-*"]
{top}

[log]
format = "json"
level = "info"
""" + "".join(f"\n[{k}]\n{v}\n" for k, v in sections.items()) + f"""
[[upstreams]]
id = "mock-openai"
kind = "openai"
base_url = "{mock}"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"
models = ["gpt-4o-mini", "text-embedding-3-small"]

[[upstreams]]
id = "mock-anthropic"
kind = "anthropic"
base_url = "{mock}"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"
models = ["claude-haiku-4-5"]

[[upstreams]]
id = "dead-openai"
kind = "openai"
base_url = "http://127.0.0.1:{dead}/v1"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"

[[upstreams]]
id = "dead-anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{dead}/v1"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"

[[upstreams]]
id = "flaky-openai"
kind = "openai"
base_url = "{mock}"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"
headers = {{ "x-mock-status" = "503" }}

[[upstreams]]
id = "wrong-key"
kind = "openai"
base_url = "{mock}"
api_key_env = "WEIR_TEST_WRONG_KEY"
models = ["wrong-key-model"]

[[routes]]
model = "failover-refused"
candidates = [{{ upstream = "dead-openai", model = "gpt-4o-mini" }}, {{ upstream = "mock-openai", model = "gpt-4o-mini" }}]

[[routes]]
model = "failover-503"
candidates = [{{ upstream = "flaky-openai", model = "gpt-4o-mini" }}, {{ upstream = "mock-openai", model = "gpt-4o-mini" }}]

[[routes]]
model = "claude-failover"
candidates = [{{ upstream = "dead-anthropic", model = "claude-haiku-4-5" }}, {{ upstream = "mock-anthropic", model = "claude-haiku-4-5" }}]
""" + tail
    return text


class Gateway:
    def __init__(self, tmp, mock, name="gateway", top="", tail="", env=None, bind="127.0.0.1", port=None, **over):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / f"{name}.toml"
        # Plugin state in a file store of its own (the default backend), unless the test chooses.
        over.setdefault("kv", f'path = "{name}-{self.port}-data"')
        self.config.write_text(gateway_config(mock.port, self.port, top=top, tail=tail, bind=bind, **over))
        self.log = tmp / f"{name}.log"
        self.log.write_text("")
        self.env = {**os.environ, "WEIR_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
                    "WEIR_TEST_WRONG_KEY": "sk-wrong-key-canary-0000", "WEIR_TEST_ADMIN_TOKEN": ADMIN_TOKEN,
                    **(env or {})}
        for attempt in range(3):
            try:
                self.start()
                return
            except RuntimeError as e:
                # A port picked free can be taken (by some connection's ephemeral port) before the gateway binds it:
                # try again on another, unless the test chose the port.
                if port is not None or "Address already in use" not in str(e) or attempt == 2:
                    raise
                old_port, self.port = self.port, free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.config.write_text(self.config.read_text().replace(f":{old_port}\"", f":{self.port}\"", 1))

    def start(self):
        """Starts (or restarts) the process on the same config and port; the log file is appended to."""
        self.proc = subprocess.Popen(
            [str(WEIR), "serve", "--config", str(self.config)],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, env=self.env,
        )
        wait_http(self.url + "/readyz", proc=self.proc, log=self.log)

    def kill(self):
        """`kill -9`: no drain, no cleanup."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def log_text(self):
        return self.log.read_text()

    def records(self):
        out = []
        for line in self.log_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("target") == "weir::request":
                out.append(rec)
        return out

    def record(self, request_id, timeout=5.0):
        """The request's log record (streams log theirs when they end, so wait for it)."""
        deadline = time.time() + timeout
        while True:
            for r in self.records():
                if r.get("request_id") == request_id:
                    return r
            if time.time() > deadline:
                raise AssertionError(f"no log record for {request_id}:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def admin(self):
        return http_json(self.url + "/admin/plugins")

    def wait_log(self, needle, timeout=5.0):
        deadline = time.time() + timeout
        while needle not in self.log_text():
            if time.time() > deadline:
                raise AssertionError(f"{needle!r} not in the log:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("weir")


@pytest.fixture(scope="session")
def mock(session_tmp):
    m = Mock(session_tmp)
    yield m
    m.stop()


@pytest.fixture(scope="session")
def gw(session_tmp, mock):
    g = Gateway(session_tmp, mock)
    yield g
    g.stop()


def openai_client(g, timeout=20, api_key=CLIENT_KEY):
    """An official OpenAI client for gateway `g` (or a base URL), without SDK retries (so the gateway's are what
    is tested)."""
    import openai

    url = g if isinstance(g, str) else g.url
    return openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=timeout)


def anthropic_client(g, timeout=20, api_key=CLIENT_KEY):
    """An official Anthropic client for gateway `g` (or a base URL), without SDK retries."""
    import anthropic

    url = g if isinstance(g, str) else g.url
    return anthropic.Anthropic(base_url=url, api_key=api_key, max_retries=0, timeout=timeout)


@pytest.fixture
def oai(gw):
    return openai_client(gw)


@pytest.fixture
def ant(gw):
    return anthropic_client(gw)
