//! `{{name}}`: a Weir policy. Requests without the configured header are refused (403, in the client's API error
//! shape); in every answer, streamed or whole, the configured words are replaced.
//!
//! Build with `weir plugin build`, test with `cargo test`, and drop `{{name}}.wasm` with `{{name}}.toml` into a
//! gateway's watched plugins directory (`weir plugin build --install DIR` does both).

use std::collections::BTreeMap;

use weir_sdk::{Chunk, ChunkDecision, ChunkExt, Plugin, PluginError, Request, RequestDecision};

/// The `[config]` table of `{{name}}.toml`.
#[derive(serde::Deserialize)]
pub struct Config {
    /// Requests must carry this header (any value).
    pub header: String,
    /// Words replaced in answers: `from = "to"`. A word split across two streamed events is not matched.
    #[serde(default)]
    pub replace: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Policy;

fn rewrite(text: &str, replace: &BTreeMap<String, String>) -> String {
    replace.iter().fold(text.to_string(), |t, (from, to)| t.replace(from.as_str(), to))
}

impl Plugin for Policy {
    type Config = Config;
    /// It reads answers (`on-chunk`) and never holds text back, so no `flush`; nothing after the request ends.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::CHUNKS;
    /// It keeps nothing of a request anywhere (no per-request state at all): any instance may serve any request.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(c: &Config) -> Result<(), PluginError> {
        if c.header.is_empty() || c.replace.keys().any(String::is_empty) {
            return Err(weir_sdk::error("config: `header` and every word of `replace` must be non-empty"));
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let c = weir_sdk::config::<Self>();
        if req.header(&c.header.to_ascii_lowercase()).is_none() {
            return Ok(weir_sdk::reject(403, format!("{{name}}: requests need the `{}` header", c.header)));
        }
        Ok(RequestDecision::Continue)
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        let c = weir_sdk::config::<Self>();
        if !chunk.texts.iter().any(|p| c.replace.keys().any(|w| p.text.contains(w.as_str()))) {
            return Ok(ChunkDecision::Pass);
        }
        Ok(chunk.replace_texts(|p| rewrite(&p.text, &c.replace)))
    }
}

weir_sdk::export!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing;
    use weir_sdk::{TextKind, TextPiece, TextStream};

    const CONFIG: &str = r#"{"header": "x-team", "replace": {"mock": "MOCK"}}"#;

    #[test]
    fn refuses_requests_without_the_header() {
        testing::init::<Policy>(CONFIG).unwrap();
        let mut req = testing::request("gpt-4o-mini", br#"{"model": "gpt-4o-mini"}"#);
        let decision = Policy::default().on_request(&req.view()).unwrap();
        assert!(matches!(decision, RequestDecision::Reject(r) if r.status == 403 && r.message.contains("x-team")));
        req.headers.push(("x-team".into(), "search".into()));
        assert_eq!(Policy::default().on_request(&req.view()).unwrap(), RequestDecision::Continue);
    }

    #[test]
    fn replaces_words_in_answers() {
        testing::init::<Policy>(CONFIG).unwrap();
        let piece = |text: &str| TextPiece {
            stream: TextStream { choice: 0, part: 0, kind: TextKind::Answer },
            text: text.into(),
        };
        let chunk = |text: &str| Chunk {
            index: 0,
            event: None,
            data: String::new(),
            texts: vec![piece(text)],
            whole_body: false,
        };
        let mut p = Policy::default();
        assert_eq!(p.on_chunk(&chunk(" the Weir")).unwrap(), ChunkDecision::Pass);
        assert_eq!(p.on_chunk(&chunk(" mock upstream")).unwrap(), ChunkDecision::ReplaceTexts(vec![" MOCK upstream".into()]));
    }

    #[test]
    fn an_empty_header_name_is_refused_at_load() {
        assert!(testing::init::<Policy>(r#"{"header": ""}"#).is_err());
    }
}
