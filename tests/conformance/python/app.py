"""The conformance plugin in Python (componentize-py). Behaviour: ../README.md."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, log, trace
from wit_world.imports.types import (
    ApiFamily,
    ChunkDecision_Abort,
    ChunkDecision_Drop,
    ChunkDecision_Hold,
    ChunkDecision_Pass,
    ChunkDecision_ReplaceTexts,
    Header,
    PluginError,
    Principal,
    Rejection,
    RequestChanges,
    RequestDecision_Continue,
    RequestDecision_ContinueWith,
    RequestDecision_Reject,
    RequestDecision_Respond,
    RequestDecision_Route,
    Response,
    RouteTarget,
    TextKind,
)

try:
    from wit_world.exports.hooks import OptionalHooks, PluginManifest, Reuse
    from wit_world.imports.types import AnswerBody_Events, AnswerBody_Whole, Reply, RequestDecision_Reply, SseEvent
except ImportError:  # built against weir:plugin@0.2.0 (the 0.2.0 conformance build): no manifest, no reply
    PluginManifest = None
    RequestDecision_Reply = None

# Per-request state: reset at every on-request, so an instance may serve several requests of one tenant.
state = {"mode": "pass", "held": "", "text_events": 0}
# The config, parsed once per instance by init.
CONFIG = {}


def settings():
    return CONFIG


def answer(req, text):
    model = req.model()
    if req.family() == ApiFamily.ANTHROPIC:
        body = {
            "id": "conformance", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    else:
        body = {
            "id": "conformance", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    return json.dumps(body).encode()


def chat_events(req, text):
    """The chat-completions stream of `text` in two deltas (split after its 5th character), as SSE events."""
    model = req.model()

    def chunk(delta, finish):
        data = {"id": "conformance", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return SseEvent(None, json.dumps(data))

    return [
        chunk({"role": "assistant", "content": ""}, None),
        chunk({"content": text[:5]}, None),
        chunk({"content": text[5:]}, None),
        chunk({}, "stop"),
        SseEvent(None, "[DONE]"),
    ]


class Hooks(exports.Hooks):
    def manifest(self):
        every = OptionalHooks.ON_CHUNK | OptionalHooks.FLUSH | OptionalHooks.ON_COMPLETE
        return PluginManifest(every, Reuse.WITHIN_TENANT)

    def init(self, config):
        CONFIG.clear()
        CONFIG.update(json.loads(config))

    def on_request(self, req):
        cfg = settings()
        mode = req.header("x-conformance") or cfg.get("default_mode") or "pass"
        state.update(mode=mode, held="", text_events=0)
        n = kv.increment("requests", 1, None)
        kv.set("last_mode", mode.encode(), None)
        trace.set_attribute("mode", mode)
        trace.set_attribute("requests", str(n))
        trace.add_event("request")
        log.write(log.Level.INFO, f"conformance request {n} mode={mode}")

        if mode == "reject":
            return RequestDecision_Reject(Rejection(403, f"{cfg['reject_message']} ({req.model()})", []))
        if mode == "respond":
            if hasattr(kv, "batch"):  # through kv.batch (one operation), so the three languages exercise it
                done = kv.batch([kv.Op_Get("greeting")])[0]
                if isinstance(done, Err):
                    raise done
                stored = done.value.value
            else:  # 0.2.0: no batch
                stored = kv.get("greeting")
            text = stored.decode() if stored is not None else cfg["greeting"]
            return RequestDecision_Respond(Response(200, None, answer(req, text)))
        if mode == "rewrite":
            return RequestDecision_ContinueWith(RequestChanges(
                set_headers=[Header("x-conformance-seen", "rewrite")],
                body=None,
                model=cfg["rewrite_model"],
                metadata=[("conformance.mode", "rewrite")],
                principal=Principal("conformance-user", "conformance-team"),
            ))
        if mode == "route":
            return RequestDecision_Route([RouteTarget(cfg["route_upstream"], cfg["route_model"])])
        if mode == "error":
            raise Err(PluginError("conformance error requested"))
        if mode == "forget":
            if hasattr(kv, "batch"):
                done = kv.batch([kv.Op_Delete("greeting")])[0]
                if isinstance(done, Err):
                    raise done
            else:
                kv.delete("greeting")
        if RequestDecision_Reply is not None:  # contract 0.3.0
            if mode == "reply":
                req.add_response_header("x-conformance-digest", req.digest())
                body = AnswerBody_Whole(answer(req, cfg["greeting"]))
                return RequestDecision_Reply(Reply(200, body, [Header("x-conformance-reply", "whole")], True))
            if mode == "reply-events" and req.family() == ApiFamily.ANTHROPIC:
                return RequestDecision_Reject(Rejection(400, "reply-events is for OpenAI clients", []))
            if mode == "reply-events":
                body = AnswerBody_Events(chat_events(req, cfg["greeting"]))
                return RequestDecision_Reply(Reply(200, body, [Header("x-conformance-reply", "events")], False))
            if mode == "digest":
                digest = req.digest()
                req.add_response_header("x-conformance-digest", digest)
                req.coalesce(f"conformance/{digest}")
        return RequestDecision_Continue()

    def on_chunk(self, chunk):
        text = next((p.text for p in chunk.texts if p.stream.kind == TextKind.ANSWER), None)
        if text is None:
            return ChunkDecision_Pass()

        def replace(t):
            return ChunkDecision_ReplaceTexts([t for _ in chunk.texts])

        state["text_events"] += 1
        mode = state["mode"]
        if mode == "upper":
            return replace(text.upper())
        if mode == "hold" or (mode == "pairs" and state["text_events"] % 2 == 1):
            state["held"] += text
            return ChunkDecision_Hold()
        if mode == "pairs":
            held, state["held"] = state["held"], ""
            return replace(held + text)
        if mode == "drop" and "mock" in text:
            return ChunkDecision_Drop()
        if mode == "abort":
            word = settings()["abort_word"]
            if word in text:
                return ChunkDecision_Abort(f"conformance abort: {word}")
        return ChunkDecision_Pass()

    def flush(self, stream):
        held, state["held"] = state["held"], ""
        if not held:
            return None
        return f"[{held}]" if state["mode"] == "hold" else held

    def on_complete(self, s):
        summary = {
            "model": s.model,
            "status": s.status,
            "outcome": s.outcome,
            "upstream": s.upstream,
            "attempts": s.attempts,
            "input_tokens": s.usage.input_tokens,
            "output_tokens": s.usage.output_tokens,
            "partial": s.partial,
            "principal": s.principal.id if s.principal is not None else None,
            "has_ttft": s.ttft_ms is not None,
            "has_error": s.error is not None,
            "text_events": state["text_events"],
        }
        kv.set(f"summary/{s.request_id}", json.dumps(summary).encode(), None)
        kv.increment("completed", 1, None)
