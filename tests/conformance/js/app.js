// The conformance plugin in JavaScript (componentize-js). Behaviour: ../README.md.
import * as kv from "weir:plugin/kv@0.3.0";
import { write } from "weir:plugin/log@0.3.0";
import { addEvent, setAttribute } from "weir:plugin/trace@0.3.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Per-request state: reset at every onRequest, so an instance may serve several requests of one tenant.
let state = { mode: "pass", held: "", textEvents: 0 };

// The config, parsed once per instance by init.
let config = {};
const settings = () => config;

function init(json) {
  config = JSON.parse(json);
}

function answer(req, text) {
  const model = req.model();
  const body =
    req.family() === "anthropic"
      ? {
          id: "conformance", type: "message", role: "assistant", model,
          content: [{ type: "text", text }], stop_reason: "end_turn", stop_sequence: null,
          usage: { input_tokens: 0, output_tokens: 0 },
        }
      : {
          id: "conformance", object: "chat.completion", created: 0, model,
          choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
          usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
        };
  return encoder.encode(JSON.stringify(body));
}

// The chat-completions stream of `text` in two deltas (split after its 5th character), as SSE events.
function chatEvents(req, text) {
  const model = req.model();
  const chunk = (delta, finish) => ({
    event: undefined,
    data: JSON.stringify({
      id: "conformance", object: "chat.completion.chunk", created: 0, model,
      choices: [{ index: 0, delta, finish_reason: finish }],
    }),
  });
  const chars = [...text];
  return [
    chunk({ role: "assistant", content: "" }, null),
    chunk({ content: chars.slice(0, 5).join("") }, null),
    chunk({ content: chars.slice(5).join("") }, null),
    chunk({}, "stop"),
    { event: undefined, data: "[DONE]" },
  ];
}

function onRequest(req) {
  const cfg = settings();
  const mode = req.header("x-conformance") || cfg.default_mode || "pass";
  state = { mode, held: "", textEvents: 0 };
  const n = kv.increment("requests", 1n, undefined);
  kv.set("last_mode", encoder.encode(mode), undefined);
  setAttribute("mode", mode);
  setAttribute("requests", String(n));
  addEvent("request");
  write("info", `conformance request ${n} mode=${mode}`);

  switch (mode) {
    case "reject":
      return { tag: "reject", val: { status: 403, message: `${cfg.reject_message} (${req.model()})`, headers: [] } };
    case "respond": {
      // Through kv.batch (one operation), so the three languages exercise it: the value read.
      const [done] = kv.batch([{ tag: "get", val: "greeting" }]);
      if (done.tag === "err") throw done.val;
      const stored = done.val.val;
      const text = stored === undefined ? cfg.greeting : decoder.decode(stored);
      return { tag: "respond", val: { status: 200, contentType: undefined, body: answer(req, text) } };
    }
    case "rewrite":
      return {
        tag: "continue-with",
        val: {
          setHeaders: [{ name: "x-conformance-seen", value: "rewrite" }],
          body: undefined,
          model: cfg.rewrite_model,
          metadata: [["conformance.mode", "rewrite"]],
          principal: { id: "conformance-user", team: "conformance-team" },
        },
      };
    case "route":
      return { tag: "route", val: [{ upstream: cfg.route_upstream, model: cfg.route_model }] };
    case "error":
      // A thrown value is the hook's `plugin-error`.
      throw { message: "conformance error requested" };
    case "forget":
      {
        const [done] = kv.batch([{ tag: "delete", val: "greeting" }]);
        if (done.tag === "err") throw done.val;
      }
      break;
    case "reply":
      req.addResponseHeader("x-conformance-digest", req.digest());
      return {
        tag: "reply",
        val: {
          status: 200,
          body: { tag: "whole", val: answer(req, cfg.greeting) },
          headers: [{ name: "x-conformance-reply", value: "whole" }],
          cached: true,
        },
      };
    case "reply-events":
      if (req.family() === "anthropic") {
        return { tag: "reject", val: { status: 400, message: "reply-events is for OpenAI clients", headers: [] } };
      }
      return {
        tag: "reply",
        val: {
          status: 200,
          body: { tag: "events", val: chatEvents(req, cfg.greeting) },
          headers: [{ name: "x-conformance-reply", value: "events" }],
          cached: false,
        },
      };
    case "digest": {
      const digest = req.digest();
      req.addResponseHeader("x-conformance-digest", digest);
      req.coalesce(`conformance/${digest}`);
    }
  }
  return { tag: "continue" };
}

function onChunk(chunk) {
  const text = chunk.texts.find((p) => p.stream.kind === "answer")?.text;
  if (text === undefined) return { tag: "pass" };
  const replace = (t) => ({ tag: "replace-texts", val: chunk.texts.map(() => t) });
  state.textEvents += 1;
  const mode = state.mode;
  if (mode === "upper") return replace(text.toUpperCase());
  if (mode === "hold" || (mode === "pairs" && state.textEvents % 2 === 1)) {
    state.held += text;
    return { tag: "hold" };
  }
  if (mode === "pairs") {
    const held = state.held;
    state.held = "";
    return replace(held + text);
  }
  if (mode === "drop" && text.includes("mock")) return { tag: "drop" };
  if (mode === "abort") {
    const word = settings().abort_word;
    if (text.includes(word)) return { tag: "abort", val: `conformance abort: ${word}` };
  }
  return { tag: "pass" };
}

function flush(_stream) {
  const held = state.held;
  state.held = "";
  if (held === "") return undefined;
  return state.mode === "hold" ? `[${held}]` : held;
}

function onComplete(s) {
  const summary = {
    model: s.model,
    status: s.status,
    outcome: s.outcome,
    upstream: s.upstream ?? null,
    attempts: s.attempts,
    input_tokens: s.usage.inputTokens === undefined ? null : Number(s.usage.inputTokens),
    output_tokens: s.usage.outputTokens === undefined ? null : Number(s.usage.outputTokens),
    partial: s.partial,
    principal: s.principal === undefined ? null : s.principal.id,
    has_ttft: s.ttftMs !== undefined,
    has_error: s.error !== undefined,
    text_events: state.textEvents,
  };
  kv.set(`summary/${s.requestId}`, encoder.encode(JSON.stringify(summary)), undefined);
  kv.increment("completed", 1n, undefined);
}

// Every hook; per-request state is reset at every onRequest, so an instance may serve several requests of one tenant.
function manifest() {
  return { hooks: { onChunk: true, flush: true, onComplete: true }, reuse: "within-tenant" };
}

export const hooks = { init, onRequest, onChunk, flush, onComplete, manifest };
