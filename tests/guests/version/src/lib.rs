//! A guest that stamps its build version (`WEIR_GUEST_VERSION` at build time) on the request and on every answer
//! text delta, so a test can see which version served each request and each chunk.

use weir_sdk::{ChangesExt, Chunk, ChunkDecision, ChunkExt, Plugin, PluginError, Request, RequestDecision, TextKind};

const VERSION: &str = match option_env!("WEIR_GUEST_VERSION") {
    Some(v) => v,
    None => "dev",
};

#[derive(Default)]
pub struct Version;

impl Plugin for Version {
    type Config = serde_json::Value;
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn on_request(&mut self, _req: &Request) -> Result<RequestDecision, PluginError> {
        Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("x-guest-version", VERSION)))
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        if chunk.answer().is_none() {
            return Ok(ChunkDecision::Pass);
        }
        Ok(chunk.replace_texts(|p| match p.stream.kind {
            TextKind::Answer => format!("{}<{VERSION}>", p.text),
            _ => p.text.clone(),
        }))
    }
}

weir_sdk::export!(Version);
