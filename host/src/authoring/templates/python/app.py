"""`{{name}}`: a Weir policy (componentize-py). Requests without the configured header are refused (403, in the
client's API error shape); in every answer, streamed or whole, the configured words are replaced. The rules are in
`policy.py`; this module connects them to the hooks of contract weir:plugin@{{contract}} (`wit/`).

Build with `weir plugin build`; test with `python3 -m unittest`."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.hooks import OptionalHooks, PluginManifest, Reuse
from wit_world.imports.types import (
    ChunkDecision_Pass,
    ChunkDecision_ReplaceTexts,
    PluginError,
    Rejection,
    RequestDecision_Continue,
    RequestDecision_Reject,
)

import policy

# The config, parsed once per instance by init. Nothing of a request is kept anywhere.
CONFIG = {}


class Hooks(exports.Hooks):
    def manifest(self):
        # on-chunk only (no flush: nothing is held back; no on-complete); any instance may serve any request.
        return PluginManifest(OptionalHooks.ON_CHUNK, Reuse.ALWAYS)

    def init(self, config):
        parsed = json.loads(config)
        problem = policy.check(parsed)
        if problem:
            raise Err(PluginError(problem))
        CONFIG.clear()
        CONFIG.update(parsed)

    def on_request(self, req):
        message = policy.refusal(CONFIG, req.header(CONFIG["header"].lower()))
        if message:
            return RequestDecision_Reject(Rejection(403, message, []))
        return RequestDecision_Continue()

    def on_chunk(self, chunk):
        texts = [policy.rewrite(CONFIG, p.text) for p in chunk.texts]
        if texts == [p.text for p in chunk.texts]:
            return ChunkDecision_Pass()
        return ChunkDecision_ReplaceTexts(texts)

    def flush(self, stream):
        return None

    def on_complete(self, summary):
        pass
