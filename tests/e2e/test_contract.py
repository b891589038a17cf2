"""The plugin contract `weir:plugin@0.2.0` and its promises, checked against real components: `init` refuses a bad
config at load (at startup, in the watched directory while the previous version keeps serving, and offline with
`weir plugin check --config`), a component built for 0.1.0 keeps loading with 0.1.0's semantics next to 0.2.0 ones,
and every plugin whose `on-request` started gets `on-complete`."""

import subprocess
import time

import openai
import pytest

from conftest import GUESTS, WEIR, Gateway, admin_kv, expected_text, install, openai_client, wait_for

MSG = [{"role": "user", "content": "Say hello"}]


def chat(client, headers=None, stream=False, chunks=8):
    h = {"x-mock-chunks": str(chunks), **(headers or {})}
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, stream=stream,
                                                            extra_headers=h)


def streamed_text(raw):
    return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_init_refuses_a_bad_config_at_startup(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'listen = "127.0.0.1:1"\n[[plugins]]\nname = "router"\nfile = "{GUESTS / "router.wasm"}"\n'
                   'capabilities = ["trace"]\nconfig = { rules = [{ model = "fast", targets = [] }] }\n')
    p = subprocess.run([str(WEIR), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "plugin `router`" in p.stderr and "refused its config" in p.stderr and "rules[0] has no targets" in p.stderr, p.stderr


def test_init_refusal_in_the_watched_directory_keeps_the_previous_version(session_tmp, mock):
    d = session_tmp / "init.d"
    d.mkdir()
    install(d, "mis", "misbehave.wasm", 'capabilities = ["config"]\nconfig = { trigger = "x-mis" }\n')
    g = Gateway(session_tmp, mock, name="init", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: [p["name"] for p in g.admin()["plugins"]] == ["mis"], "plugin loaded")
        version = g.admin()["plugins"][0]["version"]
        # The same component with a config its init refuses: not loaded, the error shown, the old one serving.
        (d / "mis.toml").write_text('capabilities = ["config"]\nconfig = { trigger = "x-mis", refuse_config = true }\n')
        wait_for(lambda: "mis" in g.admin()["load_errors"], "load error shown")
        err = g.admin()["load_errors"]["mis"]
        assert "refused its config" in err and "refuse_config is set" in err, err
        assert g.admin()["plugins"][0]["version"] == version
        c = openai_client(g)
        assert chat(c).parse().choices[0].message.content == expected_text(8)
        with pytest.raises(openai.InternalServerError):
            chat(c, {"x-mis": "error"})  # the previous version (and its config) still serves
        assert "plugin not loaded" in g.log_text()
        # A good config again clears the error.
        (d / "mis.toml").write_text('capabilities = ["config"]\nconfig = { trigger = "x-mis2" }\n')
        wait_for(lambda: "mis" not in g.admin()["load_errors"], "error cleared")
    finally:
        g.stop()


def test_plugin_check_runs_init_offline(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('capabilities = ["trace"]\nconfig = { rules = [{ model = "fast", targets = [{ upstream = "a" }] }] }\n')
    bad.write_text('capabilities = ["trace"]\nconfig = { rulez = [] }\n')
    wasm = str(GUESTS / "router.wasm")
    out = subprocess.run([str(WEIR), "plugin", "check", wasm, "--config", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "init accepted the config" in out.stdout, out.stderr
    out = subprocess.run([str(WEIR), "plugin", "check", wasm, "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "unknown field `rulez`" in out.stderr, out.stderr


@pytest.fixture(scope="module")
def both(session_tmp, mock):
    """One gateway with the same behaviour built twice: `chunky` (0.2.0, SDK) and `legacy` (0.1.0, no SDK)."""
    d = session_tmp / "versions.d"
    d.mkdir()
    g = Gateway(session_tmp, mock, name="versions", top=f'plugins_dir = "{d}"\n',
                tail='[admin]\ntoken_env = "WEIR_TEST_ADMIN_TOKEN"\n')
    g.dir = d
    yield g
    g.stop()


@pytest.mark.parametrize("mode,expect", [
    ("redact", expected_text(8).replace("Weir", "W***")),
    ("hold", expected_text(8).upper()),
    ("pairs", expected_text(8)),
    ("drop", expected_text(8).replace(" mock", "")),
])
@pytest.mark.parametrize("guest", ["chunky", "legacy"])
def test_0_1_0_and_0_2_0_components_behave_alike(both, guest, mode, expect):
    for f in both.dir.glob("*.wasm"):
        f.unlink()
    install(both.dir, guest, f"{guest}.wasm", 'capabilities = ["config", "kv", "trace", "log"]\n')
    wait_for(lambda: [p["name"] for p in both.admin()["plugins"]] == [guest], f"{guest} loaded")
    c = openai_client(both)
    assert streamed_text(chat(c, {"x-chunky": mode}, stream=True)) == expect
    if mode == "redact":
        whole = chat(c, {"x-chunky": mode}).parse().choices[0].message.content
        assert whole == expect, "a whole body's text is replaced too"


def test_legacy_component_reports_its_version_and_completes(both):
    for f in both.dir.glob("*.wasm"):
        f.unlink()
    install(both.dir, "legacy", "legacy.wasm", 'capabilities = ["kv", "trace", "log"]\n')
    wait_for(lambda: [p["name"] for p in both.admin()["plugins"]] == ["legacy"], "legacy loaded")
    out = subprocess.run([str(WEIR), "plugin", "check", str(GUESTS / "legacy.wasm")], capture_output=True, text=True)
    assert "weir:plugin@0.1.0" in out.stdout, out.stdout
    raw = chat(openai_client(both), {"x-chunky": "redact"}, stream=True)
    rid = raw.headers["x-request-id"]
    streamed_text(raw)
    wait_for(lambda: admin_kv(both, "legacy", f"summary/{rid}")[0] == 200, "on-complete ran")
    assert admin_kv(both, "legacy", f"summary/{rid}")[1] == b"ok 200 8"


def test_watched_directory_toml_removal_and_restored_file(session_tmp, mock):
    """Deleting only the `.toml` reloads the plugin with default settings (no capabilities, empty config): a plugin
    that needs either is refused and the previous version keeps serving. A broken copy is refused; restoring the
    byte-identical file clears that stale error."""
    d = session_tmp / "watch.d"
    d.mkdir()
    install(d, "allowlist", "allowlist.wasm", 'capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini"] }\n')
    g = Gateway(session_tmp, mock, name="watch", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: [p["name"] for p in g.admin()["plugins"]] == ["allowlist"], "loaded")
        version = g.admin()["plugins"][0]["version"]
        (d / "allowlist.toml").unlink()
        wait_for(lambda: "allowlist" in g.admin()["load_errors"], "refused without its settings")
        assert "capability is not granted" in g.admin()["load_errors"]["allowlist"]
        assert g.admin()["plugins"][0]["version"] == version, "the previous version keeps serving"
        assert chat(openai_client(g)).parse().choices[0].message.content == expected_text(8)
        (d / "allowlist.toml").write_text('capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini"] }\n')
        wait_for(lambda: "allowlist" not in g.admin()["load_errors"], "settings restored")
        # A broken copy, then the original bytes again.
        original = (d / "allowlist.wasm").read_bytes()
        (d / "allowlist.wasm").write_bytes(original[: len(original) // 2])
        wait_for(lambda: "allowlist" in g.admin()["load_errors"], "broken copy refused")
        assert g.admin()["plugins"][0]["version"] == version
        tmp = d / ".allowlist.wasm.partial"
        tmp.write_bytes(original)
        tmp.rename(d / "allowlist.wasm")
        wait_for(lambda: "allowlist" not in g.admin()["load_errors"], "the stale error is cleared")
        assert g.admin()["plugins"][0]["version"] == version
    finally:
        g.stop()
