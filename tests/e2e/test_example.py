"""`examples/weir.toml` — what `make run` starts — works as the README says: the demo key, the `fast` alias on both
APIs, redaction of a streamed answer, and the built-in mock. The file is used as written, with only its ports and
plugin paths moved so the test can run beside a `make run`."""

import json
import subprocess

import openai
import pytest

from conftest import GUESTS, ROOT, WEIR, anthropic_client, free_port, openai_client, wait_http


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    port, mock_port = free_port(), free_port()
    text = (ROOT / "examples" / "weir.toml").read_text()
    assert "127.0.0.1:8080" in text and "127.0.0.1:8081" in text
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("127.0.0.1:8081", f"127.0.0.1:{mock_port}")
    for name in ("auth", "router", "redact", "cost"):
        built = f"../target/wasm32-wasip2/plugin/weir_plugin_{name}.wasm"
        assert built in text, name
        text = text.replace(built, str(GUESTS / f"{name}.wasm"))
    text = text.replace('plugins_dir = "plugins.d"', f'plugins_dir = "{tmp / "plugins.d"}"')
    (tmp / "plugins.d").mkdir()
    config = tmp / "weir.toml"
    config.write_text(text)
    log = tmp / "weir.log"
    proc = subprocess.Popen([str(WEIR), "serve", "--config", str(config)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", proc=proc, log=log)
    yield url
    proc.terminate()
    proc.wait(10)


def test_readme_sdk_snippets_work_with_the_demo_key(example):
    client = openai_client(example, api_key="sk-weir-demo")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True) if c.choices)
    assert text.startswith("Hello from the Weir mock")
    with anthropic_client(example, api_key="sk-weir-demo").messages.stream(
            model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hello"}]) as s:
        assert "".join(s.text_stream).startswith("Hello from the Weir mock")
    with pytest.raises(openai.AuthenticationError):
        openai_client(example, api_key="sk-something-else").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])


def test_fast_alias_serves_both_apis(example):
    r = openai_client(example, api_key="sk-weir-demo").chat.completions \
        .with_raw_response.create(model="fast", messages=[{"role": "user", "content": "Hello"}])
    assert (r.headers["x-weir-upstream"], r.parse().model) == ("openai", "gpt-4o-mini")
    r = anthropic_client(example, api_key="sk-weir-demo").messages \
        .with_raw_response.create(model="fast", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
    assert (r.headers["x-weir-upstream"], r.parse().model) == ("anthropic", "claude-haiku-4-5")


def test_readme_redaction_demo(example):
    deltas = ["Mail jane", ".doe@exa", "mple.com or call +1 415", " 555 0132."]
    client = openai_client(example, api_key="sk-weir-demo")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hello"}], stream=True,
        extra_headers={"x-mock-deltas": json.dumps(deltas)}) if c.choices)
    assert text == "Mail [EMAIL] or call [PHONE]."
