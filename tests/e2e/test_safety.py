"""Credentials stay out of logs, slow clients are dropped, and SIGTERM drains open streams within the drain time."""

import socket
import threading
import time

import anthropic
import openai
import pytest

from conftest import (CLIENT_KEY, UPSTREAM_KEY, Gateway, anthropic_client, expected_text, metric, openai_client,
                      wait_for)


def test_canary_keys_never_logged(gw, oai, ant):
    # Traffic of every kind: success, streams, client errors, upstream errors, failover.
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "canary prompt text"}])
    list(oai.chat.completions.create(model="failover-refused", messages=[{"role": "user", "content": "x"}], stream=True))
    ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "canary prompt text"}])
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model="wrong-key-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"x-mock-status": "500"})
    log = gw.log_text()
    assert "weir::request" in log, "the log has request lines (so the check below can fail)"
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "sk-wrong-key-canary", "canary prompt text"):
        assert secret not in log, f"{secret!r} leaked into the gateway log"


def test_slow_client_headers_are_dropped(gw):
    """A client that never finishes its request headers is disconnected after client_header_timeout (1 s here)."""
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
    s.settimeout(10)
    started = time.monotonic()
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    waited = time.monotonic() - started
    s.close()
    assert waited < 5, f"connection still open after {waited:.1f}s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data


def test_sigterm_drains_open_streams_then_exits(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="drain", limits='max_body = "1MiB"\nclient_header_timeout = "1s"\ndrain = "2s"')
    client = anthropic_client(g, timeout=30)
    results = {}

    def run(name, chunks):
        try:
            with client.messages.stream(
                model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-mock-chunks": str(chunks), "x-mock-delay-ms": "100"},
            ) as s:
                results[name] = "".join(s.text_stream)
        except Exception as e:  # noqa: BLE001 - the long stream is expected to break
            results[name] = e

    short = threading.Thread(target=run, args=("short", 8))  # ~1.1 s: finishes within the drain time
    long = threading.Thread(target=run, args=("long", 100))  # ~10 s: cut at the drain time
    short.start()
    long.start()
    wait_for(lambda: metric(g, "weir_open_streams") == 2, "both streams open")
    sent = time.monotonic()
    g.terminate()
    code = g.proc.wait(15)
    exited = time.monotonic() - sent
    short.join(10)
    long.join(10)
    assert code == 0
    assert results["short"] == expected_text(8), "an open stream that fits in the drain time completes"
    assert isinstance(results["long"], anthropic.APIError), f"a stream longer than the drain time ends with an " \
        f"error event the SDK raises, not a broken connection: {results['long']!r}"
    assert "shutting down" in str(results["long"]), results["long"]
    assert 1.5 < exited < 6, f"exited {exited:.1f}s after SIGTERM with drain = 2s"
    assert "draining open requests" in g.log_text()


def test_sigterm_does_not_wait_for_a_plugin_compile(session_tmp, mock, tmp_path):
    """A component dropped into the watched directory just before SIGTERM is still compiling when the drain ends
    (a Python component takes seconds, here without a compile cache): the process exits without waiting for it."""
    from conftest import GUESTS

    watched = tmp_path / "plugins.d"
    watched.mkdir()
    g = Gateway(session_tmp, mock, name="stop-mid-compile", top=f'plugins_dir = "{watched}"\n',
                plugin_runtime=f'cache_dir = "{tmp_path / "cwasm"}"')
    try:
        (watched / "slow.wasm").write_bytes((GUESTS / "conformance-python.wasm").read_bytes())
        time.sleep(0.5)  # the watcher's debounce is 25 ms: the compile has started
        assert g.proc.poll() is None
        assert "plugin loaded" not in g.log_text(), "the compile had finished before SIGTERM: this test shows nothing"
        sent = time.monotonic()
        g.terminate()
        code = g.proc.wait(30)
        exited = time.monotonic() - sent
        assert code == 0
        assert exited < 3, f"exited {exited:.1f}s after SIGTERM with no open request: it waited for the compile"
    finally:
        g.stop()


def test_drain_delay_keeps_accepting_while_readyz_says_503(session_tmp, mock):
    """Kubernetes pre-stop: on SIGTERM /readyz answers 503 at once, requests are still served (with
    `connection: close`) for `drain_delay`, then the listener closes."""
    import urllib.error
    import urllib.request
    g = Gateway(session_tmp, mock, name="predrain",
                limits='max_body = "1MiB"\nclient_header_timeout = "1s"\ndrain = "1s"\ndrain_delay = "2s"')
    g.terminate()
    time.sleep(0.3)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(g.url + "/readyz", timeout=2)
    assert e.value.code == 503
    raw = openai_client(g).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == expected_text(8), "still serving during drain_delay"
    assert raw.headers["connection"] == "close"
    assert g.proc.wait(10) == 0
    assert "still accepting" in g.log_text()
