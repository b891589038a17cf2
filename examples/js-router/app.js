// tier-router: routes requests by a header or by metadata an earlier plugin set, written in JavaScript and built
// with componentize-js.
//
// A "tier" is looked up, in order, in the request header `config.header` (default `x-weir-tier`) and in the
// metadata key `config.metadata_key` (e.g. `auth.team`, set by the auth plugin); `config.default` applies when
// neither is there. `config.tiers.<tier>` lists upstream ids (each optionally with a model to send instead) tried in
// that order, with the gateway's retries and failover. An unknown tier is refused with 400 when `config.strict` is
// true, else the request goes on with the gateway's own routing. The tier and the choice go to the trace.
import { getJson } from "weir:plugin/config@0.1.0";
import { increment } from "weir:plugin/kv@0.1.0";
import { write } from "weir:plugin/log@0.1.0";
import { setAttribute } from "weir:plugin/trace@0.1.0";

let settings; // parsed once per instance: the config never changes under a running instance

function tierOf(req) {
  const header = (settings.header ?? "x-weir-tier").toLowerCase();
  const fromHeader = req.headers.find((h) => h.name === header)?.value;
  if (fromHeader) return fromHeader;
  if (settings.metadata_key) {
    const entry = req.metadata.find(([key]) => key === settings.metadata_key);
    if (entry) return entry[1];
  }
  return settings.default;
}

function onRequest(req) {
  settings ??= JSON.parse(getJson());
  const tier = tierOf(req);
  if (tier === undefined) return { tag: "continue" };
  setAttribute("tier", tier);
  const targets = settings.tiers?.[tier];
  if (!Array.isArray(targets)) {
    if (settings.strict) {
      setAttribute("decision", "unknown-tier");
      return { tag: "reject", val: { status: 400, message: `unknown tier '${tier}'` } };
    }
    setAttribute("decision", "default-routing");
    return { tag: "continue" };
  }
  increment(`requests/${tier}`, 1n, undefined);
  setAttribute("decision", targets.map((t) => t.upstream).join(","));
  write("debug", `tier ${tier}: ${targets.length} targets`);
  return {
    tag: "route",
    val: targets.map((t) => ({ upstream: t.upstream, model: t.model ?? undefined })),
  };
}

export const hooks = {
  onRequest,
  onChunk: () => ({ tag: "pass" }),
  flush: () => undefined,
  onComplete: () => {},
};
