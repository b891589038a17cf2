//! A guest built for `weir:plugin@0.1.0` directly with wit-bindgen (no SDK, which speaks 0.2.0): the `chunky`
//! guest's behaviour in the old contract, to prove that 0.1.0 components keep loading and keep 0.1.0's semantics
//! (a copy of the whole request, one `text-delta` per event, `replace-text`, `flush` without a stream, infallible
//! `kv`). The mode comes from the `x-chunky` header: `redact`, `hold`, `pairs`, `drop`, `abort` (see `chunky`).

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "plugin",
    generate_all,
});

use std::cell::RefCell;

use exports::weir::plugin::hooks::Guest;
use weir::plugin::types::{Chunk, ChunkDecision, PluginError, Request, RequestDecision, Summary};
use weir::plugin::{kv, log, trace};

#[derive(Default)]
struct State {
    mode: String,
    held: String,
    text_events: u32,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

#[allow(dead_code)]
struct Legacy;

impl Guest for Legacy {
    fn on_request(req: Request) -> Result<RequestDecision, PluginError> {
        let mode = req.headers.iter().find(|h| h.name == "x-chunky").map(|h| h.value.clone()).unwrap_or_default();
        trace::set_attribute("mode", &mode);
        let n = kv::increment("requests", 1, None);
        log::write(log::Level::Info, &format!("legacy request {n} mode={mode} body_bytes={}", req.body.len()));
        STATE.with(|s| *s.borrow_mut() = State { mode, ..State::default() });
        Ok(RequestDecision::Continue)
    }

    fn on_chunk(chunk: Chunk) -> Result<ChunkDecision, PluginError> {
        let Some(text) = chunk.text_delta else { return Ok(ChunkDecision::Pass) };
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.text_events += 1;
            Ok(match s.mode.as_str() {
                "redact" => ChunkDecision::ReplaceText(text.replace("Weir", "W***")),
                "hold" => {
                    s.held.push_str(&text);
                    ChunkDecision::Hold
                }
                "pairs" if s.text_events % 2 == 1 => {
                    s.held.push_str(&text);
                    ChunkDecision::Hold
                }
                "pairs" => ChunkDecision::ReplaceText(std::mem::take(&mut s.held) + &text),
                "drop" if text.contains("mock") => ChunkDecision::Drop,
                "abort" if text.contains("deterministic") => {
                    ChunkDecision::Abort("the answer mentions determinism".into())
                }
                _ => ChunkDecision::Pass,
            })
        })
    }

    fn flush() -> Result<Option<String>, PluginError> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let held = std::mem::take(&mut s.held);
            Ok((!held.is_empty()).then(|| if s.mode == "hold" { held.to_uppercase() } else { held }))
        })
    }

    fn on_complete(s: Summary) {
        let events = STATE.with(|st| st.borrow().text_events);
        kv::set(&format!("summary/{}", s.request_id), format!("{} {} {events}", s.outcome, s.status).as_bytes(), None);
    }
}

#[cfg(target_arch = "wasm32")]
export!(Legacy);
