// tier-router: routes requests by a header or by metadata an earlier plugin set, written in JavaScript and built
// with componentize-js.
//
// A "tier" is looked up, in order, in the request header `config.header` (default `x-weir-tier`) and in the
// metadata key `config.metadata_key` (e.g. `auth.team`, set by the auth plugin); `config.default` applies when
// neither is there. `config.tiers.<tier>` lists upstream ids (each optionally with a model to send instead) tried in
// that order, with the gateway's retries and failover. An unknown tier is refused with 400 when `config.strict` is
// true, else the request goes on with the gateway's own routing. The tier and the choice go to the trace.
import { increment } from "weir:plugin/kv@0.3.0";
import { write } from "weir:plugin/log@0.3.0";
import { setAttribute } from "weir:plugin/trace@0.3.0";

let settings; // parsed once per instance, by init (a bad config refuses the plugin at load)

function init(json) {
  settings = JSON.parse(json);
  for (const [tier, targets] of Object.entries(settings.tiers ?? {})) {
    if (!Array.isArray(targets) || targets.some((t) => typeof t.upstream !== "string")) {
      throw { message: `config: tiers.${tier} must be a list of { upstream, model }` };
    }
  }
}

function tierOf(req) {
  const header = (settings.header ?? "x-weir-tier").toLowerCase();
  const fromHeader = req.header(header);
  if (fromHeader) return fromHeader;
  if (settings.metadata_key) {
    const value = req.metadata(settings.metadata_key);
    if (value !== undefined) return value;
  }
  return settings.default;
}

function onRequest(req) {
  const tier = tierOf(req);
  if (tier === undefined) return { tag: "continue" };
  setAttribute("tier", tier);
  const targets = settings.tiers?.[tier];
  if (!Array.isArray(targets)) {
    if (settings.strict) {
      setAttribute("decision", "unknown-tier");
      return { tag: "reject", val: { status: 400, message: `unknown tier '${tier}'`, headers: [] } };
    }
    setAttribute("decision", "default-routing");
    return { tag: "continue" };
  }
  try {
    increment(`requests/${tier}`, 1n, undefined);
  } catch {
    // a counter: a kv failure does not change the route
  }
  setAttribute("decision", targets.map((t) => t.upstream).join(","));
  write("debug", `tier ${tier}: ${targets.length} targets`);
  return {
    tag: "route",
    val: targets.map((t) => ({ upstream: t.upstream, model: t.model ?? undefined })),
  };
}

export const hooks = {
  init,
  onRequest,
  onChunk: () => ({ tag: "pass" }),
  flush: (_stream) => undefined,
  onComplete: () => {},
  // Only onRequest is needed, and it keeps nothing between requests: any instance may serve any request.
  manifest: () => ({ hooks: {}, reuse: "always" }),
};
