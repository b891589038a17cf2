"""Bad input gets a clear error in the client's API shape, with a status that says who is at fault."""

import json
import subprocess
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from conftest import WEIR


def post(url, data, headers=None):
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_malformed_json_openai(gw):
    status, headers, body = post(gw.url + "/v1/chat/completions", b'{"model": "gpt-4o-mini", "messages": [')
    assert status == 400 and headers["x-weir-error-source"] == "client"
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"] and "line 1" in body["error"]["message"]


def test_malformed_json_anthropic(gw):
    status, _, body = post(gw.url + "/v1/messages", b"{nope", {"anthropic-version": "2023-06-01"})
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]


def test_body_without_model(gw):
    status, _, body = post(gw.url + "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and "no `model`" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_oversized_body_is_413(gw, path):
    big = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    status, headers, body = post(gw.url + path, big)
    assert status == 413 and headers["x-weir-error-source"] == "client"
    msg = body["error"]["message"]
    assert "1048576 bytes" in msg
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "request_too_large"


def test_oversized_streamed_body_without_length_is_413(gw):
    """A chunked upload that never says its size is cut off at the limit too."""
    def chunks():
        yield b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    req = urllib.request.Request(gw.url + "/v1/chat/completions", data=chunks(), method="POST",
                                 headers={"content-type": "application/json", "transfer-encoding": "chunked"})
    # The gateway reads the rest of an oversized upload (up to 16 MiB) before answering, so a client still writing
    # gets the 413 rather than a broken pipe.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 413 and "1048576 bytes" in json.loads(e.value.read())["error"]["message"]


def test_unknown_route_openai_shape(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.get("/nope", cast_to=object)
    assert e.value.body["code"] == "unknown_url"
    assert "no route for GET /v1/nope" in e.value.message


def test_unknown_route_anthropic_shape(gw):
    status, _, body = post(gw.url + "/v1/messages/nope", b"{}", {"anthropic-version": "2023-06-01"})
    assert status == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"


def test_wrong_method(gw):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(gw.url + "/v1/chat/completions", timeout=5)
    assert e.value.code == 405
    assert json.loads(e.value.read())["error"]["code"] == "method_not_allowed"


def test_unknown_model(oai, ant):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and "gpt-17" in e.value.message
    with pytest.raises(anthropic.NotFoundError) as e:
        ant.messages.create(model="claude-17", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "not_found_error"


def test_endpoint_the_other_family_lacks(oai):
    """Chat, responses and messages translate across families; embeddings have no Anthropic equivalent."""
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model="claude-haiku-4-5", input="hi")
    assert "no /v1/embeddings endpoint" in e.value.message


def test_upstream_client_error_passes_through(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-mock-status": "400"}
        )
    assert e.value.response.headers["x-weir-error-source"] == "client"
    assert "asked to fail" in e.value.message


def test_upstream_rejecting_the_gateway_key_is_a_gateway_fault(gw, oai):
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model="wrong-key-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.response.headers["x-weir-error-source"] == "gateway"
    assert "rejected the gateway's credentials" in e.value.message and "api_key_env" in e.value.message
    assert "sk-wrong-key-canary" not in json.dumps(e.value.body)


def check_config(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    p = subprocess.run([str(WEIR), "check-config", str(path)], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr, str(path)


GOOD = """listen = "127.0.0.1:8080"

[[upstreams]]
id = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = ["m"]

[[routes]]
model = "alias"
candidates = [{ upstream = "a" }]
"""


def test_check_config_accepts_and_describes(tmp_path):
    code, out, _ = check_config(tmp_path, GOOD)
    assert code == 0, out
    assert "OK" in out and "alias" in out and "http://127.0.0.1:1/v1" in out


def test_bad_config_unknown_key(tmp_path):
    code, out, path = check_config(tmp_path, GOOD.replace("models =", "modles ="))
    assert code == 1
    assert path in out and "line 7" in out and "modles" in out


def test_bad_config_unknown_upstream(tmp_path):
    code, out, path = check_config(tmp_path, GOOD.replace('{ upstream = "a" }', '{ upstream = "b" }'))
    assert code == 1
    assert f"{path}:11:" in out and "routes[0].candidates[0].upstream" in out and "no upstream `b`" in out


def test_bad_config_bad_duration(tmp_path):
    code, out, _ = check_config(tmp_path, GOOD + '\n[timeouts]\nidle = "soon"\n')
    assert code == 1 and "idle" in out and "duration" in out


def test_serve_refuses_missing_key_env(tmp_path):
    text = GOOD.replace('models = ["m"]', 'models = ["m"]\napi_key_env = "WEIR_TEST_SURELY_UNSET"')
    path = tmp_path / "c.toml"
    path.write_text(text)
    p = subprocess.run([str(WEIR), "serve", "--config", str(path)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "WEIR_TEST_SURELY_UNSET" in p.stderr and "not set" in p.stderr
