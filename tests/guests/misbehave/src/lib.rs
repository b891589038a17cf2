//! A guest that misbehaves on request: the value of the request header named by its config's `trigger` (default
//! `x-misbehave`) picks what goes wrong, so only that request is affected.
//!
//! `trap`, `loop`, `alloc`, `recurse`, `error`, `sandbox` (tries a file and a socket and answers with what
//! happened), `crlf` and `hop` (malformed headers), `chunk-loop`, `chunk-trap` (misbehave in `on-chunk`), `remember`
//! (answers how many pages of a 2 MiB static it finds already written, then writes every one: a fresh instance must
//! find none, whichever pool slot it was given).

use serde::Deserialize;
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};
use weir_sdk::{ChangesExt, Chunk, ChunkDecision, Plugin, PluginError, Request, RequestDecision, Response};

#[derive(Deserialize)]
pub struct Config {
    /// The request header that picks what goes wrong.
    #[serde(default = "default_trigger")]
    trigger: String,
    /// `init` fails when set (a plugin with a config it refuses).
    #[serde(default)]
    refuse_config: bool,
}

fn default_trigger() -> String {
    "x-misbehave".into()
}

#[derive(Default)]
pub struct Misbehave {
    mode: String,
}

/// Two MiB of linear memory that starts zeroed in every fresh instance (it lies past the first MiB, the part of a
/// pool slot the gateway keeps resident, so both reset paths are exercised).
static PAGES: [AtomicU8; 2 << 20] = [const { AtomicU8::new(0) }; 2 << 20];

/// Counts the pages of [`PAGES`] an earlier request wrote in this memory, then writes each one.
fn remember() -> usize {
    let mut dirty = 0;
    for page in PAGES.iter().step_by(4096) {
        if page.swap(0xA5, Ordering::Relaxed) != 0 {
            dirty += 1;
        }
    }
    dirty
}

fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 256];
    black_box(&frame);
    if black_box(depth) == u64::MAX { 0 } else { 1 + recurse(depth + 1) }
}

impl Plugin for Misbehave {
    type Config = Config;

    fn check(config: &Config) -> Result<(), PluginError> {
        if config.refuse_config {
            return Err(weir_sdk::error("refuse_config is set: this config is refused"));
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let trigger = &weir_sdk::config::<Self>().trigger;
        self.mode = req.header(trigger).unwrap_or_default();
        match self.mode.as_str() {
            "trap" => panic!("misbehave: asked to trap"),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(RequestDecision::ContinueWith(weir_sdk::changes().meta("depth", &recurse(0).to_string()))),
            "error" => Err(weir_sdk::error("asked to fail")),
            "sandbox" => {
                let fs = std::fs::read_to_string("/etc/passwd").map(|s| format!("read {} bytes", s.len()));
                let net = std::net::TcpStream::connect("127.0.0.1:9").map(|_| "connected".to_string());
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let body = serde_json::json!({
                    "fs": format!("{fs:?}"), "net": format!("{net:?}"), "env": env,
                });
                Ok(RequestDecision::Respond(Response {
                    status: 200,
                    content_type: None,
                    body: body.to_string().into_bytes(),
                }))
            }
            "remember" => Ok(RequestDecision::Respond(Response {
                status: 200,
                content_type: None,
                body: serde_json::json!({ "dirty_pages": remember(), "pages": PAGES.len() / 4096 })
                    .to_string()
                    .into_bytes(),
            })),
            "crlf" => Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("x-evil", "a\r\nx-injected: 1"))),
            "hop" => Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("transfer-encoding", "chunked"))),
            _ => Ok(RequestDecision::Continue),
        }
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        match self.mode.as_str() {
            "chunk-loop" if chunk.index >= 3 => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "chunk-trap" if chunk.index >= 3 => panic!("misbehave: asked to trap in on-chunk"),
            _ => Ok(ChunkDecision::Pass),
        }
    }
}

weir_sdk::export!(Misbehave);
