"""guard: a prompt-injection and banned-topic guard, written in Python and built with componentize-py.

Each rule is a name, a regular expression (Python `re`, case-insensitive) and where it applies: `request` (the
client's prompt text: messages, system, instructions, input, prompt, in both API families), `answer` (the generated
text, streamed or not) or `both`. A request that matches is refused with `status` (default 400); an answer that
matches is stopped with an error event (streams) or an error response (whole bodies). The client is told which rule
matched, never the matching text. Counts per rule go to kv (`blocked/<rule>`), the verdict to the trace.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.hooks import OptionalHooks, PluginManifest, Reuse
from wit_world.imports import kv, log, trace
from wit_world.imports.types import (
    ChunkDecision_Abort,
    ChunkDecision_Pass,
    PluginError,
    Rejection,
    RequestDecision_Continue,
    RequestDecision_Reject,
    TextKind,
)

# Per-instance state. `init` compiles the rules once per instance (and at load, where a bad rule refuses the
# plugin); the answer windows live one request (on_request resets them), so an instance may serve any request:
# the manifest says `always`, and guard.toml runs it `shared` (it runs before auth, when no tenant is known yet).
_rules = []
_windows = {}
_settings = {}


def rules():
    """[(name, compiled pattern, applies to request, applies to answer)], from the plugin's config."""
    return _rules


def texts(value):
    """Every string a person wrote in a chat-style value: a string, a list of parts or messages, a dict with text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif isinstance(value, dict):
        for key in ("text", "content", "input"):
            if key in value:
                yield from texts(value[key])


def prompt_text(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return "\n".join(t for key in ("system", "instructions", "messages", "input", "prompt") for t in texts(doc.get(key)))


def block(where, name):
    try:
        kv.increment(f"blocked/{name}", 1, None)
    except Err:
        pass  # a counter: a kv failure does not change the verdict
    trace.set_attribute("verdict", "blocked")
    trace.set_attribute("rule", name)
    log.write(log.Level.INFO, f"guard: {where} blocked by rule {name}")


class Hooks(exports.Hooks):
    def manifest(self):
        return PluginManifest(OptionalHooks.ON_CHUNK | OptionalHooks.FLUSH, Reuse.ALWAYS)

    def init(self, config):
        global _settings
        _settings = json.loads(config)
        _rules.clear()
        for i, r in enumerate(_settings.get("rules", [])):
            on = r.get("on", "both")
            if on not in ("request", "answer", "both"):
                raise Err(PluginError(f"config: rules[{i}].on must be request, answer or both"))
            try:
                pattern = re.compile(r["pattern"], re.IGNORECASE)
            except (KeyError, re.error) as e:
                raise Err(PluginError(f"config: rules[{i}].pattern: {e}"))
            _rules.append((r.get("name", f"rules[{i}]"), pattern, on in ("request", "both"), on in ("answer", "both")))

    def on_request(self, req):
        _windows.clear()
        text = prompt_text(req.body())
        for name, pattern, on_request, _ in rules():
            if on_request and pattern.search(text):
                block("request", name)
                status = int(_settings.get("status", 400))
                return RequestDecision_Reject(Rejection(status, f"request blocked by guard rule '{name}'", []))
        trace.set_attribute("verdict", "allowed")
        return RequestDecision_Continue()

    def on_chunk(self, chunk):
        for piece in chunk.texts:
            if piece.stream.kind != TextKind.ANSWER:
                continue
            # Search the new text together with the tail of what came before in the same stream (choice, block), so
            # a phrase split across events is seen.
            key = (piece.stream.choice, piece.stream.part)
            seen = _windows.get(key, "") + piece.text
            for name, pattern, _, on_answer in rules():
                if on_answer and pattern.search(seen):
                    block("answer", name)
                    return ChunkDecision_Abort(f"answer stopped by guard rule '{name}'")
            _windows[key] = seen[-int(_settings.get("window", 256)):]
        return ChunkDecision_Pass()

    def flush(self, stream):
        return None

    def on_complete(self, summary):
        pass
