//! What crosses families besides text: reasoning effort ↔ thinking budgets, Anthropic thinking blocks carried
//! through a Responses client as reasoning items, and namespaced tools flattened to plain names and restored in the
//! answer ([`Back`]). The mapping is documented in `docs/translation.md` ("Reasoning", "Tools").

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::api::Endpoint;

/// What translating the answer back needs to know of the request. Made from the client's body by [`back`], beside
/// the request's translation (which renames with the same [`flat_name`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Back {
    /// Tools the upstream knows by another name: (the upstream's name, the client's namespace, the client's name).
    pub renamed: Vec<(String, String, String)>,
    /// The client asked for `reasoning.encrypted_content`: thinking is returned in reasoning items it can send back.
    pub encrypted_reasoning: bool,
}

impl Back {
    /// The client's (namespace, name) for a tool the upstream called `name`; `None`: not renamed.
    pub fn restore(&self, name: &str) -> Option<(&str, &str)> {
        self.renamed.iter().find(|(flat, _, _)| flat == name).map(|(_, ns, n)| (ns.as_str(), n.as_str()))
    }
}

/// What the answer of a request from `client` needs (nothing unless it is a Responses request with namespaced tools
/// or `include: ["reasoning.encrypted_content"]`).
pub fn back(client: Endpoint, body: &Value) -> Back {
    if client != Endpoint::Responses {
        return Back::default();
    }
    let mut b = Back::default();
    for t in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
        if t.get("type").and_then(Value::as_str) != Some("namespace") {
            continue;
        }
        let ns = t.get("name").and_then(Value::as_str).unwrap_or_default();
        for inner in t.get("tools").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = inner.get("name").and_then(Value::as_str) {
                b.renamed.push((flat_name(ns, name), ns.to_string(), name.to_string()));
            }
        }
    }
    b.encrypted_reasoning = body
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"));
    b
}

/// The plain name a namespaced tool gets (`namespace__name`; Anthropic allows 64 characters of `[A-Za-z0-9_-]`,
/// so a longer one is cut and made unique with a hash of the whole).
pub fn flat_name(namespace: &str, name: &str) -> String {
    let flat = format!("{namespace}__{name}");
    if flat.len() <= 64 {
        return flat;
    }
    let h = flat.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let head: String = flat.chars().take(51).collect();
    format!("{head}_{:012x}", h & 0xffff_ffff_ffff)
}

// ---------------------------------------------------------------------------------------------------------------
// Reasoning effort ↔ thinking budget
// ---------------------------------------------------------------------------------------------------------------

/// An OpenAI reasoning effort → an Anthropic thinking budget (`None`: no thinking).
pub fn budget_for(effort: &str) -> Option<u32> {
    match effort {
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(16384),
        "xhigh" | "max" => Some(32768),
        // "none", "minimal"
        _ => None,
    }
}

/// An Anthropic thinking budget → the OpenAI effort whose budget is nearest below.
pub fn effort_for(budget: u64) -> &'static str {
    match budget {
        0..4096 => "low",
        4096..12288 => "medium",
        _ => "high",
    }
}

/// An Anthropic `output_config.effort` → an OpenAI reasoning effort.
pub fn effort_from_anthropic(effort: &str) -> Option<&'static str> {
    match effort {
        "low" => Some("low"),
        "medium" => Some("medium"),
        "high" => Some("high"),
        "xhigh" | "max" => Some("xhigh"),
        _ => None,
    }
}

/// Whether `model` takes `reasoning_effort` (the patterns of `translation.reasoning_models`: exact, or a `*` at
/// the end).
pub fn is_reasoning_model(model: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => model == p,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Thinking blocks carried as Responses reasoning items
// ---------------------------------------------------------------------------------------------------------------

/// Marks `encrypted_content` that holds an Anthropic thinking block (Weir's, not OpenAI's).
const PREFIX: &str = "weir.anthropic-thinking.v1.";

/// A thinking or redacted-thinking block as a reasoning item's `encrypted_content`: the block itself, base64url.
/// Not encrypted — the thinking is the client's own conversation — but opaque to the client, like OpenAI's, and
/// Anthropic's signature inside it still proves the block unaltered when it comes back.
pub fn seal(block: &Value) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(block.to_string()))
}

/// The thinking block inside a reasoning item's `encrypted_content`, if Weir made it.
pub fn unseal(encrypted: &str) -> Option<Value> {
    let raw = URL_SAFE_NO_PAD.decode(encrypted.strip_prefix(PREFIX)?).ok()?;
    let block: Value = serde_json::from_slice(&raw).ok()?;
    matches!(block.get("type").and_then(Value::as_str), Some("thinking" | "redacted_thinking")).then_some(block)
}

/// A Responses reasoning item for a thinking block (`sealed`: with `encrypted_content`).
pub fn reasoning_item(id: &str, block: &Value, sealed: bool) -> Value {
    let text = block.get("thinking").and_then(Value::as_str).unwrap_or_default();
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    let mut item = json!({"id": id, "type": "reasoning", "summary": summary});
    if sealed {
        super::put(&mut item, "encrypted_content", json!(seal(block)));
    }
    item
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn flat_names_fit_anthropic_and_stay_unique() {
        assert_eq!(flat_name("multi_agent_v1", "spawn_agent"), "multi_agent_v1__spawn_agent");
        let long = "n".repeat(40);
        let (a, b) = (flat_name(&long, &"a".repeat(40)), flat_name(&long, &format!("{}b", "a".repeat(39))));
        assert!(a.len() <= 64 && b.len() <= 64 && a != b, "{a} {b}");
    }

    #[test]
    fn sealed_thinking_round_trips_and_foreign_content_is_not_ours() {
        let block = json!({"type": "thinking", "thinking": "First, the file.", "signature": "sig=="});
        assert_eq!(unseal(&seal(&block)).unwrap(), block);
        assert!(unseal("gAAAAABo-openai-encrypted").is_none());
        assert!(unseal(&format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(r#"{"type":"text"}"#))).is_none());
    }

    #[test]
    fn effort_and_budget_map_both_ways() {
        for e in ["low", "medium", "high"] {
            assert_eq!(effort_for(u64::from(budget_for(e).unwrap())), e);
        }
        assert_eq!(budget_for("minimal"), None);
        assert_eq!(effort_for(31999), "high");
        let p = vec!["o3*".to_string(), "gpt-5*".to_string(), "my-reasoner".to_string()];
        assert!(is_reasoning_model("gpt-5-mini", &p) && is_reasoning_model("my-reasoner", &p));
        assert!(!is_reasoning_model("gpt-4o-mini", &p) && !is_reasoning_model("my-reasoner-2", &p));
    }
}
