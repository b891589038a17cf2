"""Shadow versions: `NAME.shadow.wasm` dropped beside a live plugin runs on a sample of live requests, its decisions
compared with the live version's and never applied; its failures never reach a client; promotion is a rename."""

import anthropic
import openai
import pytest

from conftest import Gateway, admin_kv, anthropic_client, expected_text, install, metric, openai_client, wait_for

LIVE = 'capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini", "claude-*"] }\n'
MSGS = [{"role": "user", "content": "Hi"}]


def shadows(g):
    return g.admin()["shadows"]


def test_a_candidate_that_would_refuse_a_tenth_refuses_nothing_live(session_tmp, mock, tmp_path):
    d = tmp_path / "plugins.d"
    d.mkdir()
    install(d, "allowlist", "allowlist.wasm", LIVE)
    g = Gateway(session_tmp, mock, name="shadow-refuse", top=f'plugins_dir = "{d}"\n',
                tail='[admin]\ntoken_env = "WEIR_TEST_ADMIN_TOKEN"\n')
    try:
        wait_for(lambda: [p["name"] for p in g.admin()["plugins"]] == ["allowlist"], "the live version loaded")
        # The candidate no longer allows Claude models: it would refuse the Anthropic tenth of the traffic.
        install(d, "allowlist.shadow", "allowlist.wasm",
                'capabilities = ["kv", "trace"]\nconfig = { models = ["gpt-4o-mini"] }\n')
        wait_for(lambda: len(shadows(g)) == 1, "the shadow loaded", timeout=30)
        s = shadows(g)[0]
        live_version = g.admin()["plugins"][0]["version"]
        assert (s["of"], s["live_version"], s["sample"], s["requests"]) == ("allowlist", live_version, 1.0, 0), s

        oai, ant = openai_client(g), anthropic_client(g)
        for i in range(40):
            if i % 10 == 0:
                r = ant.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSGS)
                assert r.content[0].text == expected_text()
            elif i % 10 == 5:
                stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text()
            else:
                r = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
                assert r.choices[0].message.content == expected_text()

        wait_for(lambda: shadows(g)[0]["requests"] == 40, "forty requests shadowed")
        s = shadows(g)[0]
        # Exactly the four refusals differ: the allowed requests' decisions (a header and the per-model count the
        # plugin reads from kv) are the live version's, because the shadow reads the same state.
        assert s["differences"] == {"reject": 4}, s
        assert metric(g, "weir_plugin_shadow_differences_total") == 4
        assert metric(g, "weir_plugin_shadow_requests_total") == 40
        # Its kv writes went to its scratch map: the live counters counted the live version's requests only.
        assert admin_kv(g, "allowlist", "requests/gpt-4o-mini") == (200, b"36")
        assert admin_kv(g, "allowlist", "requests/claude-haiku-4-5") == (200, b"4")

        # Promotion is a rename (the settings first): the candidate now decides, and refuses Claude.
        (d / "allowlist.shadow.toml").rename(d / "allowlist.toml")
        (d / "allowlist.shadow.wasm").rename(d / "allowlist.wasm")
        wait_for(lambda: not shadows(g), "the shadow gone")
        wait_for(lambda: _refuses_claude(ant), "the promoted version refuses Claude", timeout=10)
        assert not g.admin()["load_errors"]
        assert oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content
    finally:
        g.stop()


def _refuses_claude(ant):
    try:
        ant.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSGS)
        return False
    except anthropic.PermissionDeniedError as e:
        return "not allowed" in e.message


def test_a_failing_shadow_changes_nothing_for_clients_and_runs_on_its_sample(session_tmp, mock, tmp_path):
    d = tmp_path / "plugins.d"
    d.mkdir()
    install(d, "allowlist", "allowlist.wasm", LIVE)
    # A candidate that traps, spins past its deadline or runs out of memory when asked, on half of the requests.
    install(d, "allowlist.shadow", "misbehave.wasm",
            'capabilities = ["config"]\nshadow_sample = 0.5\nmemory = "8MiB"\n'
            '[timeouts]\non_request = "50ms"\n[config]\ntrigger = "x-candidate"\n')
    g = Gateway(session_tmp, mock, name="shadow-fail", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: len(shadows(g)) == 1 and g.admin()["plugins"], "both loaded", timeout=30)
        assert shadows(g)[0]["sample"] == 0.5
        oai = openai_client(g)
        modes = ["trap", "loop", "alloc", "error"]
        for i in range(16):
            headers = {"x-candidate": modes[(i // 2) % 4]}  # the sample takes every second request
            if i % 3 == 0:
                stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True,
                                                     extra_headers=headers)
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text()
            else:
                r = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, extra_headers=headers)
                assert r.choices[0].message.content == expected_text()
        wait_for(lambda: shadows(g)[0]["requests"] == 8, "half of the sixteen requests shadowed")
        s = shadows(g)[0]
        assert s["differences"] == {"failed": 8}, s
        p = g.admin()["plugins"][0]
        assert (p["name"], p["failures"], p["quarantined"]) == ("allowlist", 0, False), p
        log = g.log_text()
        for why in ("trapped", "exceeded its on-request deadline", "exceeded its memory limit", "returned an error"):
            assert f"shadow failed (the request is not affected): {why}" in log, why
    finally:
        g.stop()


def test_a_candidate_that_rewrites_answers_differently_is_counted_once_per_answer(session_tmp, mock, tmp_path):
    """The live version passes the answer; the candidate would mask "Weir" in it. Clients get the live answer, whole
    and streamed, and each answer counts one `on-chunk` difference however many events differ."""
    d = tmp_path / "plugins.d"
    d.mkdir()
    caps = 'capabilities = ["config", "kv", "trace", "log"]\n'
    install(d, "chunky", "chunky.wasm", caps)
    install(d, "chunky.shadow", "chunky.wasm", caps + 'config = { default_mode = "redact" }\n')
    g = Gateway(session_tmp, mock, name="shadow-chunks", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: len(shadows(g)) == 1 and g.admin()["plugins"], "both loaded", timeout=30)
        oai, ant = openai_client(g), anthropic_client(g)
        for _ in range(2):
            assert oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content \
                == expected_text()
            stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text()
            with ant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSGS) as s:
                assert "".join(s.text_stream) == expected_text()
        wait_for(lambda: shadows(g)[0]["requests"] == 6, "six requests shadowed")
        assert shadows(g)[0]["differences"] == {"on-chunk": 6}, shadows(g)[0]
        # A candidate that decides like the live version differs in nothing: the same settings as the live one.
        install(d, "chunky.shadow", "chunky.wasm", caps)
        wait_for(lambda: shadows(g)[0]["requests"] == 0, "the new candidate loaded", timeout=30)
        for _ in range(3):
            stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text()
        wait_for(lambda: shadows(g)[0]["requests"] == 3, "three requests shadowed")
        assert shadows(g)[0]["differences"] == {}, shadows(g)[0]
    finally:
        g.stop()


def test_a_candidate_that_holds_and_releases_text_like_the_live_version_differs_in_nothing(session_tmp, mock,
                                                                                           tmp_path):
    """Both versions hold the whole answer and release it upper-cased at the end of the stream (`flush`): the shadow's
    `flush` runs and releases the same text, so nothing differs; the client gets the live version's answer."""
    d = tmp_path / "plugins.d"
    d.mkdir()
    settings = 'capabilities = ["config", "kv", "trace", "log"]\nconfig = { default_mode = "hold" }\n'
    install(d, "chunky", "chunky.wasm", settings)
    install(d, "chunky.shadow", "chunky.wasm", settings)
    g = Gateway(session_tmp, mock, name="shadow-flush", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: len(shadows(g)) == 1 and g.admin()["plugins"], "both loaded", timeout=30)
        oai, ant = openai_client(g), anthropic_client(g)
        for _ in range(2):
            stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text().upper()
            with ant.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSGS) as s:
                assert "".join(s.text_stream) == expected_text().upper()
        wait_for(lambda: shadows(g)[0]["requests"] == 4, "four requests shadowed")
        assert shadows(g)[0]["differences"] == {}, shadows(g)[0]
        assert "shadow failed" not in g.log_text()
    finally:
        g.stop()


def test_clients_hanging_up_on_shadowed_requests_harm_no_one(session_tmp, mock, tmp_path):
    """A client hangs up mid-stream on a request whose shadow rewrites the answer, and another while the shadow's
    `on-request` spins (up to its 300 ms deadline): the requests after them are answered, nothing is counted as the
    live plugin's failure, and every shadowed request is counted."""
    import time

    d = tmp_path / "plugins.d"
    d.mkdir()
    caps = 'capabilities = ["config", "kv", "trace", "log"]\n'
    install(d, "chunky", "chunky.wasm", caps)
    install(d, "chunky.shadow", "misbehave.wasm",
            'capabilities = ["config"]\n[timeouts]\non_request = "300ms"\n[config]\ntrigger = "x-candidate"\n')
    g = Gateway(session_tmp, mock, name="shadow-hangup", top=f'plugins_dir = "{d}"\n')
    try:
        wait_for(lambda: len(shadows(g)) == 1 and g.admin()["plugins"], "both loaded", timeout=30)
        oai = openai_client(g)
        # Mid-stream: the first event is out, then the client goes.
        slow = {"x-mock-delay-ms": "100"}
        stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True, extra_headers=slow)
        next(iter(stream))
        stream.close()
        # During the shadow's spin: the client gives up after 50 ms.
        impatient = openai_client(g, timeout=0.05)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model="gpt-4o-mini", messages=MSGS, extra_headers={"x-candidate": "loop"})
        time.sleep(0.4)
        for _ in range(3):
            assert oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content \
                == expected_text()
        wait_for(lambda: shadows(g)[0]["requests"] == 5, "five requests shadowed")
        p = g.admin()["plugins"][0]
        assert (p["failures"], p["quarantined"]) == (0, False), p
        cancelled = [r for r in g.records() if r.get("outcome") == "cancelled"]
        assert len(cancelled) == 2, [r.get("outcome") for r in g.records()]
    finally:
        g.stop()
