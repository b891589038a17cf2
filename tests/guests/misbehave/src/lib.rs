//! A guest that misbehaves on request: the value of the request header named by its config's `trigger` (default
//! `x-misbehave`) picks what goes wrong, so only that request is affected.
//!
//! `trap`, `loop`, `alloc`, `recurse`, `error`, `sandbox` (tries a file and a socket and answers with what
//! happened), `crlf` and `hop` (malformed headers), `chunk-loop`, `chunk-trap` (misbehave in `on-chunk`), `remember`
//! (answers how many pages of a 2 MiB static it finds already written, then writes every one: a fresh instance must
//! find none, whichever pool slot it was given), `secret` (answers the secret an earlier request left in its globals
//! and its memory, then keeps the request's `x-secret` there: what a reused instance carries, by isolation mode),
//! `secret-spin` (keeps `x-secret` the same way, lets the request go on, and spins in `on-chunk` from the second
//! event: a client that hangs up then cuts the call short), `secret-grow` (as `secret`, and then keeps 10 MiB more
//! memory: an instance past its reuse memory limit is retired).
//!
//! With `principal_header` in its config it does nothing else: it sets the request's principal (id = that header's
//! value), as an authentication plugin would, for the plugins after it. It declares `Reuse::Always`, so that tests
//! can run it in every isolation mode.

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
    /// Sets the principal from this header instead of misbehaving.
    #[serde(default)]
    principal_header: Option<String>,
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

/// The secret the last `secret` request left: in a global, and copied into the first bytes of [`PAGES`].
static SECRET: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// What an earlier request left in this instance (globals, then memory), replaced by `new`.
fn swap_secret(new: &str) -> (String, String) {
    let mut global = SECRET.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let in_global = std::mem::replace(&mut *global, new.to_string());
    let page = &PAGES[4100..4100 + 256];
    let old: Vec<u8> = page.iter().map(|b| b.load(Ordering::Relaxed)).take_while(|b| *b != 0).collect();
    for (i, b) in page.iter().enumerate() {
        b.store(new.as_bytes().get(i).copied().unwrap_or(0), Ordering::Relaxed);
    }
    (in_global, String::from_utf8_lossy(&old).into_owned())
}

fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 256];
    black_box(&frame);
    if black_box(depth) == u64::MAX { 0 } else { 1 + recurse(depth + 1) }
}

impl Plugin for Misbehave {
    type Config = Config;
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(config: &Config) -> Result<(), PluginError> {
        if config.refuse_config {
            return Err(weir_sdk::error("refuse_config is set: this config is refused"));
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        if let Some(header) = &weir_sdk::config::<Self>().principal_header {
            let Some(id) = req.header(header) else { return Ok(RequestDecision::Continue) };
            let mut changes = weir_sdk::changes();
            changes.principal = Some(weir_sdk::Principal { id, team: None });
            return Ok(RequestDecision::ContinueWith(changes));
        }
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
            "secret" | "secret-grow" => {
                let (global, memory) = swap_secret(&req.header("x-secret").unwrap_or_default());
                if self.mode == "secret-grow" {
                    black_box(Box::leak(vec![1u8; 10 << 20].into_boxed_slice()));
                }
                let found = serde_json::json!({ "global": global, "memory": memory });
                Ok(RequestDecision::Respond(Response {
                    status: 200,
                    content_type: None,
                    body: found.to_string().into_bytes(),
                }))
            }
            "secret-spin" => {
                swap_secret(&req.header("x-secret").unwrap_or_default());
                Ok(RequestDecision::Continue)
            }
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
            "secret-spin" if chunk.index >= 1 => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            _ => Ok(ChunkDecision::Pass),
        }
    }
}

weir_sdk::export!(Misbehave);
