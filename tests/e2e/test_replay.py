"""Record and replay: `[record]` writes live requests of both SDKs as fixtures (no credential, no prompt or answer
text by default); `weir plugin replay` runs them offline through a plugin and, `--against` another version or other
settings, prints exactly the requests decided differently and exits 1."""

import json
import subprocess

import anthropic
import openai
import pytest

from conftest import CLIENT_KEY, GUESTS, WEIR, Gateway, anthropic_client, expected_text, install, openai_client, wait_for

PROMPT = "canary prompt: my card is 4111 1111 1111 1111"
OLD = 'capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini", "claude-*"] }\n'
NEW = 'capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini"] }\n'


@pytest.fixture(scope="module")
def recorded(session_tmp, mock, tmp_path_factory):
    """Eight requests recorded through a gateway running `allowlist` (OLD settings): the fixtures file and the ids
    of the Anthropic requests."""
    tmp = tmp_path_factory.mktemp("record")
    d = tmp / "plugins.d"
    d.mkdir()
    install(d, "allowlist", "allowlist.wasm", OLD)
    fixtures = tmp / "fixtures.jsonl"
    g = Gateway(session_tmp, mock, name="record", top=f'plugins_dir = "{d}"\n',
                tail=f'[record]\npath = "{fixtures}"\nsample = 1.0\n')
    try:
        wait_for(lambda: g.admin()["plugins"], "allowlist loaded")
        oai, ant = openai_client(g), anthropic_client(g)
        msgs = [{"role": "user", "content": PROMPT}]
        for _ in range(3):
            assert oai.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content \
                == expected_text()
        for _ in range(2):
            s = oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == expected_text()
        assert ant.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=msgs).content[0].text \
            == expected_text()
        with ant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=msgs) as s:
            assert "".join(s.text_stream) == expected_text()
        with pytest.raises(openai.PermissionDeniedError):
            oai.chat.completions.create(model="gpt-4o", messages=msgs)
        wait_for(lambda: fixtures.exists() and len(fixtures.read_text().splitlines()) == 8, "eight fixtures")
        return fixtures, tmp
    finally:
        g.stop()


def replay(*args):
    return subprocess.run([str(WEIR), "plugin", "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_fixtures_hold_no_credential_and_no_text(recorded):
    fixtures, _ = recorded
    text = fixtures.read_text()
    for secret in (CLIENT_KEY, "canary", "4111 1111", "deterministic", "Hello"):
        assert secret not in text, f"{secret!r} in the fixtures"
    rows = [json.loads(l) for l in text.splitlines()]
    assert {(r["endpoint"], r["stream"]) for r in rows} == {
        ("chat.completions", False), ("chat.completions", True), ("messages", False), ("messages", True)}
    for r in rows:
        headers = dict(r["headers"])
        assert headers.get("authorization", headers.get("x-api-key")) == "[credential]", headers
        content = r["body"]["messages"][0]["content"]
        assert len(content) == len(PROMPT) and set(content) <= {"x", " "}, content
        assert r["body"]["messages"][0]["role"] == "user" and r["model"] == r["body"]["model"]
        assert r["decisions"][0]["plugin"] == "allowlist"
    refused = [r for r in rows if r["model"] == "gpt-4o"]
    assert len(refused) == 1 and refused[0]["decisions"][0]["decision"]["kind"] == "reject"
    assert refused[0]["summary"]["status"] == 403 and refused[0]["chunks"] == []
    streamed = [r for r in rows if r["stream"]]
    for r in streamed:
        pieces = [t for c in r["chunks"] for t in c["texts"]]
        assert "".join(t["text"] for t in pieces) == "".join(
            "x" if not ch.isspace() else ch for ch in expected_text()), r["chunks"]
        times = [c["ms"] for c in r["chunks"]]
        assert times == sorted(times) and r["summary"]["usage"]["output_tokens"] > 0
    whole = [r for r in rows if not r["stream"] and r["model"] != "gpt-4o"]
    assert all(len(r["chunks"]) == 1 and r["chunks"][0]["whole_body"] for r in whole)


def test_replay_prints_each_decision(recorded):
    fixtures, tmp = recorded
    (tmp / "old.toml").write_text(OLD)
    out = replay(GUESTS / "allowlist.wasm", fixtures, "--config", tmp / "old.toml")
    assert out.returncode == 0, out.stderr
    assert "8 requests replayed" in out.stdout
    assert out.stdout.count("allowed: header x-weir-allowlist: allowed") == 7, out.stdout
    assert "refused: 403 model `gpt-4o` is not allowed by this gateway's policy" in out.stdout
    assert out.stdout.count("answer: ") == 7 and "metadata: allowlist.count=5" in out.stdout, out.stdout


def test_against_shows_exactly_the_changed_decisions(recorded):
    fixtures, tmp = recorded
    (tmp / "old.toml").write_text(OLD)
    (tmp / "new.toml").write_text(NEW)
    rows = [json.loads(l) for l in fixtures.read_text().splitlines()]
    claude = {r["id"] for r in rows if r["family"] == "anthropic"}
    assert len(claude) == 2

    same = replay(GUESTS / "allowlist.wasm", fixtures, "--config", tmp / "old.toml",
                  "--against", GUESTS / "allowlist.wasm")
    assert same.returncode == 0 and "0 of 8 requests decided differently" in same.stdout, same.stdout + same.stderr

    changed = replay(GUESTS / "allowlist.wasm", fixtures, "--config", tmp / "new.toml",
                     "--against-config", tmp / "old.toml")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "2 of 8 requests decided differently" in changed.stdout
    shown = {l.split()[0] for l in changed.stdout.splitlines() if l.startswith("req_")}
    assert shown == claude, changed.stdout
    assert changed.stdout.count("+ refused: 403 model `claude-haiku-4-5` is not allowed") == 2, changed.stdout

    # Another component: every request differs, in the header and the answer text it stamps.
    versions = replay(GUESTS / "version-B.wasm", fixtures, "--against", GUESTS / "version-A.wasm")
    assert versions.returncode == 1 and "8 of 8 requests decided differently" in versions.stdout, versions.stdout
    assert "- allowed: header x-guest-version: A" in versions.stdout
    assert "+ allowed: header x-guest-version: B" in versions.stdout


def test_a_replay_decides_on_the_recorded_kv_state(recorded, tmp_path):
    """One fixture alone (the fifth gpt-4o-mini request): its counter is seeded from what allowlist read when it was
    recorded (4), so the replay counts 5 as the live plugin did — not 1, as an empty store would."""
    fixtures, tmp = recorded
    (tmp / "old.toml").write_text(OLD)
    rows = [json.loads(l) for l in fixtures.read_text().splitlines()]
    fifth = [r for r in rows if r["model"] == "gpt-4o-mini"][4]
    assert fifth["kv"] == [{"plugin": "allowlist", "key": "requests/gpt-4o-mini", "value": "4"}], fifth["kv"]
    live = dict(fifth["decisions"][0]["decision"]["metadata"])
    assert live == {"allowlist.count": "5"}
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(fifth) + "\n")
    out = replay(GUESTS / "allowlist.wasm", one, "--config", tmp / "old.toml")
    assert out.returncode == 0 and "metadata: allowlist.count=5" in out.stdout, out.stdout + out.stderr


def test_replay_errors_are_clear(recorded, tmp_path):
    fixtures, _ = recorded
    bad = tmp_path / "bad.jsonl"
    bad.write_text(fixtures.read_text().splitlines()[0] + "\n{not json\n")
    out = replay(GUESTS / "allowlist.wasm", bad)
    assert out.returncode == 2 and "line 2: not JSON" in out.stderr, out.stderr
    missing = replay(tmp_path / "none.wasm", fixtures)
    assert missing.returncode == 2 and "none.wasm" in missing.stderr


def test_content_opt_in_endpoint_filter_and_no_plugins(session_tmp, mock, tmp_path):
    """Without any plugin, with `content = true` and only `messages` recorded: the Anthropic request is written with
    its text (the credential still not), the OpenAI one is not written."""
    fixtures = tmp_path / "f.jsonl"
    g = Gateway(session_tmp, mock, name="record-content",
                tail=f'[record]\npath = "{fixtures}"\ncontent = true\nendpoints = ["messages"]\n')
    try:
        msgs = [{"role": "user", "content": PROMPT}]
        assert openai_client(g).chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content
        with anthropic_client(g).messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=msgs) as s:
            assert "".join(s.text_stream) == expected_text()
        wait_for(lambda: fixtures.exists() and fixtures.read_text().strip(), "a fixture")
        rows = [json.loads(l) for l in fixtures.read_text().splitlines()]
        assert [r["endpoint"] for r in rows] == ["messages"] and rows[0]["content"] is True
        assert rows[0]["body"]["messages"][0]["content"] == PROMPT and rows[0]["decisions"] == []
        assert "".join(t["text"] for c in rows[0]["chunks"] for t in c["texts"]) == expected_text()
        assert CLIENT_KEY not in fixtures.read_text()
    finally:
        g.stop()


def test_a_bad_record_section_is_refused(session_tmp, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('listen = "127.0.0.1:0"\n[record]\nendpoints = ["chat"]\n')
    out = subprocess.run([str(WEIR), "check-config", str(cfg)], capture_output=True, text=True)
    assert out.returncode != 0 and "record.endpoints" in out.stderr and "unknown endpoint `chat`" in out.stderr, \
        out.stderr


def test_kill_9_while_recording_leaves_fixtures_that_replay(session_tmp, mock, tmp_path):
    """`kill -9` in the middle of recorded traffic: every fixture written is whole (a line cut mid-write is skipped
    with a note), and the file replays."""
    import threading

    fixtures = tmp_path / "f.jsonl"
    g = Gateway(session_tmp, mock, name="record-kill", tail=f'[record]\npath = "{fixtures}"\n')
    stop = threading.Event()

    def traffic():
        c = openai_client(g, timeout=5)
        while not stop.is_set():
            try:
                list(c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                               stream=True))
            except openai.APIError:
                return

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: fixtures.exists() and len(fixtures.read_text().splitlines()) >= 20, "twenty fixtures")
        g.kill()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    text = fixtures.read_text()
    lines = text.splitlines()
    whole = lines if text.endswith("\n") else lines[:-1]
    assert all(json.loads(l)["v"] == 1 for l in whole)
    out = replay(GUESTS / "allowlist.wasm", fixtures, "--config", _toml(tmp_path, OLD))
    assert out.returncode == 0 and f"{len(whole)} requests replayed" in out.stdout, out.stdout + out.stderr
    # A cut last line (as a crash mid-write leaves it) is skipped, with a note.
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(l + "\n" for l in whole) + whole[0][: len(whole[0]) // 2])
    out = replay(GUESTS / "allowlist.wasm", cut, "--config", _toml(tmp_path, OLD))
    assert out.returncode == 0 and f"{len(whole)} requests replayed" in out.stdout, out.stdout + out.stderr
    assert "is cut" in out.stderr


def _toml(d, text):
    p = d / "settings.toml"
    p.write_text(text)
    return p
