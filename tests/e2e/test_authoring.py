"""Writing a policy outside this repository, as its README says, in Rust, Python, JavaScript and C: `weir plugin new`
in a temporary directory → the project's own unit tests → `weir plugin build` (which installs the language's
componentizer into the project the first time) → `weir plugin check` → `weir plugin build --install` into a running
gateway's watched directory → the policy's rules applied to requests of the official SDKs, whole and streamed. The
time from `new` to live is printed (`pytest -s`); for Python and JavaScript it includes installing the componentizer
into the project from the local pip/npm cache."""

import subprocess
import time

import anthropic
import openai
import pytest

from conftest import WEIR, Gateway, anthropic_client, expected_text, openai_client, wait_for

TESTS = {"rust": ["cargo", "test", "--quiet"], "python": ["python3", "-m", "unittest", "-q"], "js": ["node", "--test"],
         "c": ["sh", "-c", "cc -Wall -Wextra -Werror -o test_policy test_policy.c policy.c && ./test_policy"]}


def weir(*args, cwd=None, timeout=600):
    p = subprocess.run([str(WEIR), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"weir {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.mark.parametrize("lang", ["rust", "python", "js", "c"])
def test_from_new_to_live(session_tmp, mock, tmp_path, lang):
    watched = tmp_path / "plugins.d"
    watched.mkdir()
    g = Gateway(session_tmp, mock, name=f"authoring-{lang}", top=f'plugins_dir = "{watched}"\n')
    try:
        name = f"gate-{lang}"
        project = tmp_path / "work" / name
        t0 = time.monotonic()
        out = weir("plugin", "new", name, "--lang", lang, "--dir", str(project))
        assert "weir plugin build" in out
        assert (project / "README.md").exists() and (project / f"{name}.toml").exists()

        tests = subprocess.run(TESTS[lang], cwd=project, capture_output=True, text=True, timeout=600)
        assert tests.returncode == 0, f"{lang} unit tests:\n{tests.stdout}\n{tests.stderr}"

        assert f"{name}.wasm" in weir("plugin", "build", "--dir", str(project))
        check = weir("plugin", "check", str(project / f"{name}.wasm"), "--config", str(project / f"{name}.toml"))
        assert "init accepted the config" in check and 'at most "shared"' in check, check

        weir("plugin", "build", "--dir", str(project), "--install", str(watched))
        deadline = time.time() + 240  # Python and JavaScript components compile in seconds
        while [p["name"] for p in g.admin()["plugins"]] != [name]:
            assert not g.admin()["load_errors"], g.admin()["load_errors"]
            assert time.time() < deadline, f"not loaded:\n{g.log_text()[-2000:]}"
            time.sleep(0.1)
        live = time.monotonic() - t0
        print(f"\n{lang}: weir plugin new → live in {live:.1f} s")

        # The rule: a request without `x-team` is refused, in each API's error shape, naming the header.
        with pytest.raises(openai.PermissionDeniedError) as e:
            openai_client(g).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert f"{name}: requests need the `x-team` header" in e.value.message
        with pytest.raises(anthropic.PermissionDeniedError) as e:
            anthropic_client(g).messages.create(model="claude-haiku-4-5", max_tokens=64,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert "x-team" in e.value.message
        # With it, the answer comes through with the configured word replaced, whole and streamed.
        want = expected_text().replace("mock", "MOCK")
        client = openai_client(g)
        whole = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                               extra_headers={"x-team": "search"})
        assert whole.choices[0].message.content == want
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                                stream=True, extra_headers={"x-team": "search"})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
        assert "mock" in expected_text() and "MOCK" in want

        # The next version in shadow: it would ask for another header. Live requests are unaffected; its refusals
        # are counted.
        settings = project / f"{name}.toml"
        original = settings.read_text()
        settings.write_text(original.replace('header = "x-team"', 'header = "x-group"'))
        weir("plugin", "build", "--dir", str(project), "--install", str(watched), "--shadow")
        wait_for(lambda: g.admin()["shadows"], "the shadow loaded", timeout=240)
        for _ in range(3):
            assert client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"x-team": "search"}).choices[0].message.content == want
        wait_for(lambda: g.admin()["shadows"][0]["requests"] == 3, "three requests shadowed")
        assert g.admin()["shadows"][0]["differences"] == {"reject": 3}, g.admin()["shadows"]
        (watched / f"{name}.shadow.wasm").unlink()
        wait_for(lambda: not g.admin()["shadows"], "the shadow removed")
        settings.write_text(original)

        if lang == "rust":
            # `weir plugin watch`: an edit of the policy's source goes live by itself.
            log = tmp_path / "watch.log"
            w = subprocess.Popen([str(WEIR), "plugin", "watch", "--dir", str(project), "--install", str(watched)],
                                 stdout=log.open("w"), stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: "installed" in log.read_text(), "the first build installed", timeout=240)
                src = project / "src" / "lib.rs"
                src.write_text(src.read_text().replace("requests need the", "requests must carry the"))
                wait_for(lambda: _refusal(client) and "must carry the `x-team` header" in _refusal(client),
                         "the edited policy live", timeout=240)
                assert log.read_text().count("installed") == 2, log.read_text()
            finally:
                w.kill()
                w.wait(10)

        # A broken config never goes live: the project's own check refuses it, the previous version keeps serving.
        settings.write_text(original.replace('header = "x-team"', 'header = ""'))
        weir("plugin", "build", "--dir", str(project), "--install", str(watched))
        wait_for(lambda: g.admin()["load_errors"], "the bad config reported", timeout=240)
        assert "non-empty" in str(g.admin()["load_errors"]), g.admin()["load_errors"]
        assert client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-team": "search"}).choices[0].message.content == want
    finally:
        g.stop()


def _refusal(client):
    """The message of the refusal of a request without `x-team` ("" when it is answered)."""
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        return ""
    except openai.PermissionDeniedError as e:
        return e.message


def test_new_refuses_a_bad_name_and_a_used_directory(tmp_path):
    bad = subprocess.run([str(WEIR), "plugin", "new", "Bad Name", "--lang", "rust", "--dir", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "cannot name a plugin" in bad.stderr
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    used = subprocess.run([str(WEIR), "plugin", "new", "gate", "--lang", "js", "--dir", str(tmp_path / "used")],
                          capture_output=True, text=True)
    assert used.returncode != 0 and "not empty" in used.stderr
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    build = subprocess.run([str(WEIR), "plugin", "build", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode != 0 and "not a plugin project" in build.stderr
