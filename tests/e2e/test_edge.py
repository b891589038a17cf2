"""Edge hardening: no unauthenticated way to exhaust, crash or confuse the gateway. Idle sockets far beyond the
file-descriptor limit, silent connections, bodies that never finish, and absurd values from upstreams."""

import json
import resource
import socket
import time
import urllib.request

import openai
import pytest

from conftest import Gateway, expected_text, openai_client

MSG = [{"role": "user", "content": "hi"}]


def limit_fds(n):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


@pytest.fixture(scope="module")
def edge(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="edge",
                limits='max_body = "1MiB"\nclient_header_timeout = "1s"\nbody_timeout = "1s"\ndrain = "5s"')
    yield g
    g.stop()


def test_ten_times_the_fd_limit_in_idle_sockets_still_serves(session_tmp, mock):
    """With `ulimit -n 256`, 2,560 idle TCP connections: /healthz and real requests are still served (a new
    connection evicts the oldest silent one), and nothing runs out of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        pytest.skip(f"this test needs 3000 file descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3000), hard))
    import subprocess
    orig_popen = subprocess.Popen

    class Limited(orig_popen):
        def __init__(self, *a, **kw):
            kw.setdefault("preexec_fn", limit_fds(256))
            super().__init__(*a, **kw)

    subprocess.Popen = Limited
    try:
        g = Gateway(session_tmp, mock, name="fds",
                    limits='max_body = "1MiB"\nclient_header_timeout = "10s"\ndrain = "1s"')
    finally:
        subprocess.Popen = orig_popen
    idle = []
    try:
        for _ in range(2560):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", g.port))
            except BlockingIOError:
                pass
            idle.append(s)
        time.sleep(1.0)
        t0 = time.monotonic()
        with urllib.request.urlopen(g.url + "/healthz", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 3
        c = openai_client(g)
        for _ in range(5):
            assert c.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content == \
                expected_text(8)
        log = g.log_text()
        assert "Too many open files" not in log, log[-2000:]
        with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        open_now = next(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("weir_open_connections "))
        assert open_now <= 192, "never more connections than the cap (the fd limit minus a reserve)"
        assert '"max_connections":192' in log.replace(" ", ""), "the cap is derived from the fd limit"
    finally:
        for s in idle:
            s.close()
        g.stop()


def test_a_connection_that_sends_nothing_is_closed(edge):
    s = socket.create_connection(("127.0.0.1", edge.port))
    s.settimeout(10)
    t0 = time.monotonic()
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    assert data == b"" and time.monotonic() - t0 < 5, "closed after client_header_timeout (1 s)"
    s.close()


def test_a_body_that_never_finishes_gets_408(edge):
    s = socket.create_connection(("127.0.0.1", edge.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"model\":")
    s.settimeout(10)
    t0 = time.monotonic()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert time.monotonic() - t0 < 5
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    assert b"body_timeout" in body or b"408" in data


@pytest.mark.parametrize("value", ["1e20", "1e300", "99999999999999999999999"])
def test_absurd_retry_after_from_the_upstream_is_survived(edge, value):
    c = openai_client(edge)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                  extra_headers={"x-mock-status": "429", "x-mock-retry-after": value})
    assert e.value.status_code == 429
    assert int(e.value.response.headers["retry-after"]) >= 3600, "saturated, passed on"
    assert c.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content


def test_a_compile_cache_others_can_write_is_refused_at_start(tmp_path):
    import os
    import subprocess
    from conftest import GUESTS, WEIR
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'listen = "127.0.0.1:1"\n[plugin_runtime]\ncache_dir = "{cache}"\n[[plugins]]\nname = "allowlist"\n'
                   f'file = "{GUESTS / "allowlist.wasm"}"\ncapabilities = ["kv", "trace"]\nconfig = {{ models = ["*"] }}\n')
    p = subprocess.run([str(WEIR), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "lets other users write" in p.stderr and "chmod 700" in p.stderr, p.stderr


def non_loopback_ip():
    """An address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_admin_is_not_for_the_public(session_tmp, mock):
    """/admin/plugins (file paths, versions, errors) answers loopback clients and admin-token holders on the API
    port; with [admin] listen it is served on that address only."""
    import urllib.error
    from conftest import ADMIN_TOKEN, free_port
    ip = non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback address on this machine")
    g = Gateway(session_tmp, mock, name="admin-all", bind="0.0.0.0",
                tail='[admin]\ntoken_env = "WEIR_TEST_ADMIN_TOKEN"\n')
    try:
        outside = f"http://{ip}:{g.port}/admin/plugins"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(outside, timeout=5)
        assert e.value.code == 403 and b"loopback" in e.value.read()
        req = urllib.request.Request(outside, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert "plugins" in json.loads(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{g.port}/admin/plugins", timeout=5) as r:
            assert r.status == 200, "loopback clients (local tooling) are served"
    finally:
        g.stop()
    # With [admin] listen: only there.
    admin_port = free_port()
    g = Gateway(session_tmp, mock, name="admin-own",
                tail=f'[admin]\ntoken_env = "WEIR_TEST_ADMIN_TOKEN"\nlisten = "127.0.0.1:{admin_port}"\n')
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(g.url + "/admin/plugins", timeout=5)
        assert e.value.code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/admin/plugins", timeout=5) as r:
            assert "plugins" in json.loads(r.read())
    finally:
        g.stop()


def test_a_slow_upstream_is_not_cut_by_the_idle_timeout(session_tmp, mock):
    """keep_alive_idle closes idle connections, never one with a request in progress: an upstream that takes longer
    than it to answer (slow first byte, long gaps in a stream) is bounded by the upstream timeouts only."""
    g = Gateway(session_tmp, mock, name="slow-idle",
                limits='max_body = "1MiB"\nclient_header_timeout = "1s"\nkeep_alive_idle = "1s"\ndrain = "1s"',
                timeouts='connect = "1s"\nfirst_byte = "5s"\nidle = "5s"')
    try:
        c = openai_client(g)
        r = c.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-mock-header-delay-ms": "2500"})
        assert r.choices[0].message.content == expected_text(8)
        chunks = c.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                           extra_headers={"x-mock-chunks": "3", "x-mock-delay-ms": "2000"})
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected_text(3)
        # And an idle keep-alive connection is closed after it.
        s = socket.create_connection(("127.0.0.1", g.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(4096) == b"", "closed once idle"
        assert 0.5 < time.monotonic() - t0 < 5
        s.close()
    finally:
        g.stop()
