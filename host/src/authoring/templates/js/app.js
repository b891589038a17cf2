// `{{name}}`: a Weir policy (componentize-js). Requests without the configured header are refused (403, in the
// client's API error shape); in every answer, streamed or whole, the configured words are replaced. The rules are in
// `policy.js`; this module connects them to the hooks of contract weir:plugin@{{contract}} (`wit/`).
//
// Build with `weir plugin build`; test with `node --test`.
import { check, refusal, rewrite } from "./policy.js";

// The config, parsed once per instance by init. Nothing of a request is kept anywhere.
let config = {};

function init(json) {
  const parsed = JSON.parse(json);
  const problem = check(parsed);
  // A thrown value is the hook's `plugin-error`: the gateway refuses the load and says why.
  if (problem) throw { message: problem };
  config = parsed;
}

function onRequest(req) {
  const message = refusal(config, req.header(config.header.toLowerCase()));
  if (message) return { tag: "reject", val: { status: 403, message, headers: [] } };
  return { tag: "continue" };
}

function onChunk(chunk) {
  const texts = chunk.texts.map((p) => rewrite(config, p.text));
  if (texts.every((t, i) => t === chunk.texts[i].text)) return { tag: "pass" };
  return { tag: "replace-texts", val: texts };
}

function flush(_stream) {
  return undefined;
}

function onComplete(_summary) {}

// on-chunk only (no flush: nothing is held back; no on-complete); any instance may serve any request.
function manifest() {
  return { hooks: { onChunk: true, flush: false, onComplete: false }, reuse: "always" };
}

export const hooks = { init, onRequest, onChunk, flush, onComplete, manifest };
