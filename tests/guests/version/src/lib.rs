//! A guest that stamps its build version (`WEIR_GUEST_VERSION` at build time) on the request and on every text
//! delta, so a test can see which version served each request and each chunk.

use weir_sdk::{ChangesExt, Chunk, ChunkDecision, Plugin, PluginError, Request, RequestDecision};

const VERSION: &str = match option_env!("WEIR_GUEST_VERSION") {
    Some(v) => v,
    None => "dev",
};

#[derive(Default)]
pub struct Version;

impl Plugin for Version {
    fn on_request(&mut self, _req: &Request) -> Result<RequestDecision, PluginError> {
        Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("x-guest-version", VERSION)))
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        Ok(match &chunk.text_delta {
            Some(t) => ChunkDecision::ReplaceText(format!("{t}<{VERSION}>")),
            None => ChunkDecision::Pass,
        })
    }
}

weir_sdk::export!(Version);
