"""Real coding agents through Weir: Claude Code (`claude -p`) and Codex CLI (`codex exec`), each on a model of its own
API family and of the other, streamed as the agents stream. The mock plays the model's side of an agent loop
(`x-mock-agent`): it asks the agent to run a harmless tool that reads a file in a temporary directory, then quotes the
tool's result. A fresh nonce in that file, in the agent's final answer, proves the whole loop ran: the tool call
reached the agent through translation, the agent ran it, and its result came back through translation.

The agents are installed by `make test` (tools/agents, pinned versions); each runs with a HOME of its own, so nothing
of the machine's user configuration is read. Their requests are recorded by the mock (`x-mock-tag`), so each test
also checks what the upstream received."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import CLIENT_KEY, ROOT, Gateway

AGENTS = ROOT / "tools" / "agents" / "node_modules" / ".bin"

TAIL = """
[[routes]]
model = "gpt-5-mini"
candidates = [{ upstream = "mock-openai", model = "gpt-5-mini" }]
"""


@pytest.fixture(scope="module")
def agw(session_tmp, mock):
    # Agents send large prompts (Claude Code's is ~80 KB) and take their time between turns.
    g = Gateway(session_tmp, mock, name="agents", tail=TAIL,
                limits='max_body = "8MiB"\nclient_header_timeout = "5s"\ndrain = "5s"',
                timeouts='connect = "1s"\nfirst_byte = "10s"\nidle = "10s"')
    yield g
    g.stop()


def agent_bin(name):
    path = AGENTS / name
    assert path.exists(), f"{path} is missing: `make test` installs the agents (tools/agents)"
    return str(path)


class Run:
    def __init__(self, tmp_path, tool):
        self.tag = "agent-" + uuid.uuid4().hex[:10]
        self.nonce = "nonce-" + uuid.uuid4().hex
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.secret = self.work / "secret.txt"
        self.secret.write_text(self.nonce + "\n")
        self.script = json.dumps(tool(self.secret))
        self.headers = {"x-mock-tag": self.tag, "x-mock-agent": self.script}

    def env(self, **extra):
        keep = {k: os.environ[k] for k in ("PATH", "LANG", "TERM") if k in os.environ}
        return {**keep, "HOME": str(self.home), "NO_COLOR": "1", **extra}

    def run(self, argv, env):
        p = subprocess.run(argv, cwd=self.work, env=env, capture_output=True, text=True, timeout=180,
                           stdin=subprocess.DEVNULL)
        self.out = p.stdout + p.stderr
        assert p.returncode == 0, f"exit {p.returncode}:\n{self.out[-3000:]}"
        return p.stdout

    def loop(self, mock, path):
        """The upstream requests of the agent's tool loop (those that offered tools), in order."""
        recs = mock.wait_requests(self.tag, lambda r: sum(1 for x in r if x["body"].get("tools")) >= 2, timeout=10)
        loop = [r for r in recs if r["body"].get("tools")]
        assert len(loop) >= 2, [(r["path"], r["status"]) for r in recs]
        assert all(r["path"] == path and r["status"] == 200 and r["stream"] for r in loop), \
            [(r["path"], r["status"], r["stream"]) for r in loop]
        return loop


def read_tool(secret):
    return {"Read": {"file_path": str(secret)}}


def exec_tool(secret):
    return {"exec_command": {"cmd": f"cat {secret}"}}


def claude(run, url, model, key=CLIENT_KEY, **env):
    """`claude -p` against Weir at `url` (`env`: more of Claude Code's variables, e.g. to use Bedrock)."""
    env = run.env(
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_API_KEY=key,
        ANTHROPIC_CUSTOM_HEADERS="\n".join(f"{k}: {v}" for k, v in run.headers.items()),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        **env,
    )
    return run.run([agent_bin("claude"), "-p", "Read secret.txt and tell me what it says.", "--model", model], env)


def codex(run, url, model, *extra, key=CLIENT_KEY):
    codex_home = run.home / ".codex"
    codex_home.mkdir()
    headers = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in run.headers.items())
    (codex_home / "config.toml").write_text(f"""
model_provider = "weir"
[model_providers.weir]
name = "Weir"
base_url = "{url}/v1"
env_key = "WEIR_API_KEY"
wire_api = "responses"
http_headers = {{ {headers} }}
""")
    env = run.env(CODEX_HOME=str(codex_home), WEIR_API_KEY=key)
    argv = [agent_bin("codex"), "exec", "--skip-git-repo-check", "-s", "danger-full-access", "-m", model, *extra,
            "Print the contents of secret.txt."]
    return run.run(argv, env)


def blocks(msg):
    c = msg.get("content")
    return c if isinstance(c, list) else [{"type": "text", "text": c or ""}]


# ---- Claude Code -------------------------------------------------------------------------------------------------


def test_claude_code_on_claude(agw, mock, tmp_path):
    run = Run(tmp_path, read_tool)
    out = claude(run, agw.url, "claude-haiku-4-5")
    assert run.nonce in out, run.out[-3000:]
    first, second = run.loop(mock, "/messages")[:2]
    # Same family: Claude Code's own fields reach Anthropic untouched, thinking included (and the mock checked that
    # the thinking block came back signed before the tool result).
    assert first["body"]["thinking"]["type"] in ("enabled", "adaptive")
    assert second["body"]["messages"][-2]["content"][0]["type"] == "thinking"


def test_claude_code_on_openai_model(agw, mock, tmp_path):
    run = Run(tmp_path, read_tool)
    out = claude(run, agw.url, "gpt-4o-mini")
    assert run.nonce in out, run.out[-3000:]
    first, second = run.loop(mock, "/chat/completions")[:2]
    b = first["body"]
    # Translated: Claude Code's system blocks and in-conversation system message are chat system messages; its
    # thinking request is left out for a model without reasoning (OpenAI would refuse it: the mock does too).
    assert b["messages"][0]["role"] == "system" and any(m["role"] == "system" for m in b["messages"][1:])
    assert "reasoning_effort" not in b and "context_management" not in b and "thinking" not in b
    names = {t["function"]["name"] for t in b["tools"]}
    assert {"Read", "Bash"} <= names and "DeferredToolPlaceholder" not in names
    tool_msgs = [m for m in second["body"]["messages"] if m["role"] == "tool"]
    assert tool_msgs and run.nonce in json.dumps(tool_msgs[-1]["content"])
    assert second["body"]["messages"][-2]["tool_calls"][0]["function"]["name"] == "Read"


def test_claude_code_through_weirs_bedrock_face_on_openai_model(agw, mock, tmp_path):
    """Claude Code set up for Bedrock (a Bedrock API key = the Weir key) against Weir's Bedrock routes."""
    run = Run(tmp_path, read_tool)
    out = claude(run, agw.url, "gpt-4o-mini", CLAUDE_CODE_USE_BEDROCK="1", ANTHROPIC_BEDROCK_BASE_URL=agw.url,
                 AWS_BEARER_TOKEN_BEDROCK=CLIENT_KEY, AWS_REGION="us-east-1")
    assert run.nonce in out, run.out[-3000:]
    run.loop(mock, "/chat/completions")


def test_claude_code_on_openai_reasoning_model(agw, mock, tmp_path):
    run = Run(tmp_path, read_tool)
    out = claude(run, agw.url, "gpt-5-mini")
    assert run.nonce in out, run.out[-3000:]
    first = run.loop(mock, "/chat/completions")[0]
    # A reasoning model takes the effort Claude Code asked for.
    assert first["body"]["reasoning_effort"] in ("low", "medium", "high", "xhigh"), first["body"].get("reasoning_effort")
    assert "max_completion_tokens" in first["body"]


# ---- Codex -------------------------------------------------------------------------------------------------------


def test_codex_on_openai_model(agw, mock, tmp_path):
    run = Run(tmp_path, exec_tool)
    out = codex(run, agw.url, "gpt-4o-mini")
    assert run.nonce in out, run.out[-3000:]
    first, second = run.loop(mock, "/responses")[:2]
    assert first["body"]["include"] == ["reasoning.encrypted_content"]
    assert second["body"]["input"][-1]["type"] == "function_call_output"


def test_codex_on_claude(agw, mock, tmp_path):
    run = Run(tmp_path, exec_tool)
    out = codex(run, agw.url, "claude-haiku-4-5")
    assert run.nonce in out, run.out[-3000:]
    first, second = run.loop(mock, "/messages")[:2]
    b = first["body"]
    names = [t.get("name") for t in b["tools"]]
    # Namespaced tools flattened; the hosted search became Anthropic's (or was left out when declined); the prompt
    # cache key became cache breakpoints; nothing of Codex's client metadata reached the model.
    assert "exec_command" in names and any(n and n.startswith("multi_agent_v1__") for n in names), names
    assert all(t.get("type") in (None, "web_search_20250305") for t in b["tools"])
    assert b["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert blocks(b["messages"][-1])[-1]["cache_control"] == {"type": "ephemeral"}
    assert "client_metadata" not in b and "prompt_cache_key" not in b and "thinking" not in b
    assert [m["role"] for m in b["messages"]][0] == "user" and b["system"]
    last = second["body"]["messages"][-1]["content"]
    assert last[0]["type"] == "tool_result" and run.nonce in json.dumps(last[0]["content"])


def test_codex_on_claude_with_reasoning_carries_signed_thinking(agw, mock, tmp_path):
    run = Run(tmp_path, exec_tool)
    out = codex(run, agw.url, "claude-haiku-4-5", "-c", "model_reasoning_effort=high")
    assert run.nonce in out, run.out[-3000:]
    first, second = run.loop(mock, "/messages")[:2]
    assert first["body"]["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert first["body"]["max_tokens"] > 16384
    # Codex got the thinking as a reasoning item with encrypted_content and sent it back; Weir restored the signed
    # block at the head of the tool-use turn (the mock refuses a turn without it or with an altered signature).
    turn = second["body"]["messages"][-2]
    assert turn["role"] == "assistant" and [b["type"] for b in turn["content"]] == ["thinking", "tool_use"]
