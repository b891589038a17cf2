//! A guest that exercises every `on-chunk` decision, chosen per request by the `x-chunky` header (read in
//! `on-request` and kept in the instance: per-request state). Also writes kv, reads config, sets trace attributes,
//! and logs its `on-complete` summary.
//!
//! Modes: `redact` (replace "Weir" with "W***"), `hold` (hold all text, flush it upper-cased at the end),
//! `pairs` (hold every other text event and release it with the next), `drop` (drop text containing "mock"),
//! `abort` (abort on "deterministic"), `data` (replace the data of non-text events: only on whole bodies).

use serde::Deserialize;
use weir_sdk::{
    Chunk, ChunkDecision, ChunkExt, Plugin, PluginError, Request, RequestDecision, Summary, TextStream, log::Level,
};

#[derive(Deserialize, Default)]
pub struct Config {
    #[serde(default)]
    default_mode: String,
}

/// Requests this instance has served: 1 with a fresh instance per request, more only with warm reuse.
static INSTANCE_REQUESTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Default)]
pub struct Chunky {
    mode: String,
    held: String,
    text_events: u32,
}

impl Plugin for Chunky {
    type Config = Config;
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let default = &weir_sdk::config::<Self>().default_mode;
        self.mode = req.header("x-chunky").unwrap_or_else(|| default.clone());
        weir_sdk::trace::set_attribute("mode", &self.mode);
        let n =
            weir_sdk::kv::increment("requests", 1, None).map_err(|e| weir_sdk::error(weir_sdk::kv::describe(&e)))?;
        let here = INSTANCE_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let leaked = !self.held.is_empty() || self.text_events != 0;
        weir_sdk::log::write(
            Level::Info,
            &format!("chunky request {n} mode={} instance_requests={here} leaked_state={leaked}", self.mode),
        );
        Ok(RequestDecision::Continue)
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        let Some(text) = chunk.answer() else { return Ok(ChunkDecision::Pass) };
        let replace = |t: String| chunk.replace_texts(|_| t.clone());
        self.text_events += 1;
        Ok(match self.mode.as_str() {
            "redact" => replace(text.replace("Weir", "W***")),
            "hold" => {
                self.held.push_str(text);
                ChunkDecision::Hold
            }
            "pairs" if self.text_events % 2 == 1 => {
                self.held.push_str(text);
                ChunkDecision::Hold
            }
            "pairs" => replace(std::mem::take(&mut self.held) + text),
            "drop" if text.contains("mock") => ChunkDecision::Drop,
            "abort" if text.contains("deterministic") => ChunkDecision::Abort("the answer mentions determinism".into()),
            _ => ChunkDecision::Pass,
        })
    }

    fn flush(&mut self, _stream: TextStream) -> Result<Option<String>, PluginError> {
        let held = std::mem::take(&mut self.held);
        Ok((!held.is_empty()).then(|| if self.mode == "hold" { held.to_uppercase() } else { held }))
    }

    fn on_complete(&mut self, s: &Summary) {
        weir_sdk::log::write(
            Level::Info,
            &format!(
                "chunky summary request={} outcome={} status={} output_tokens={} partial={} text_events={}",
                s.request_id,
                s.outcome,
                s.status,
                s.usage.output_tokens.unwrap_or(0),
                s.partial,
                self.text_events
            ),
        );
    }
}

weir_sdk::export!(Chunky);
