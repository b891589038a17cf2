//! An in-memory fake host, used when hooks run natively (`cargo test` of a plugin crate, or the `testing` feature).
//!
//! ```ignore
//! weir_sdk::testing::reset(r#"{"allow": ["gpt-4o-mini"]}"#);
//! let mut p = MyPlugin::default();
//! let decision = p.on_request(&weir_sdk::testing::request("gpt-4o-mini", b"{}")).unwrap();
//! assert!(weir_sdk::testing::logs().is_empty());
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bindings::weir::plugin::log::Level;
use crate::{ApiFamily, Request};

#[derive(Default)]
struct Fake {
    config: String,
    kv: HashMap<String, Vec<u8>>,
    logs: Vec<(Level, String)>,
    attributes: Vec<(String, String)>,
    events: Vec<String>,
    now_ms: u64,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake { config: "{}".into(), ..Fake::default() });
}

/// Resets the fake host and sets the plugin's config (JSON).
pub fn reset(config_json: &str) {
    FAKE.with(|f| *f.borrow_mut() = Fake { config: config_json.to_string(), ..Fake::default() });
}

/// Sets the fake clock.
pub fn set_now_ms(ms: u64) {
    FAKE.with(|f| f.borrow_mut().now_ms = ms);
}

/// Lines logged so far.
pub fn logs() -> Vec<(Level, String)> {
    FAKE.with(|f| f.borrow().logs.clone())
}

/// Trace attributes set so far.
pub fn attributes() -> Vec<(String, String)> {
    FAKE.with(|f| f.borrow().attributes.clone())
}

/// A request for tests: OpenAI chat completions, no headers.
pub fn request(model: &str, body: &[u8]) -> Request {
    Request {
        id: "req_test".into(),
        family: ApiFamily::Openai,
        endpoint: "chat.completions".into(),
        headers: Vec::new(),
        body: body.to_vec(),
        model: model.into(),
        stream: false,
        principal: None,
        metadata: Vec::new(),
    }
}

pub(crate) mod log {
    use super::*;
    pub fn write(level: Level, message: &str) {
        FAKE.with(|f| f.borrow_mut().logs.push((level, message.to_string())));
    }
}

pub(crate) mod config {
    pub fn get_json() -> String {
        super::FAKE.with(|f| f.borrow().config.clone())
    }
}

pub(crate) mod kv {
    use super::FAKE;
    pub fn get(key: &str) -> Option<Vec<u8>> {
        FAKE.with(|f| f.borrow().kv.get(key).cloned())
    }
    pub fn set(key: &str, value: &[u8], _ttl_ms: Option<u64>) {
        FAKE.with(|f| f.borrow_mut().kv.insert(key.to_string(), value.to_vec()));
    }
    pub fn increment(key: &str, delta: i64, _ttl_ms: Option<u64>) -> i64 {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let cur = f.kv.get(key).and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()).unwrap_or(0);
            let new = cur + delta;
            f.kv.insert(key.to_string(), new.to_string().into_bytes());
            new
        })
    }
    pub fn delete(key: &str) {
        FAKE.with(|f| f.borrow_mut().kv.remove(key));
    }
}

pub(crate) mod trace {
    use super::FAKE;
    pub fn set_attribute(key: &str, value: &str) {
        FAKE.with(|f| f.borrow_mut().attributes.push((key.to_string(), value.to_string())));
    }
    pub fn add_event(name: &str) {
        FAKE.with(|f| f.borrow_mut().events.push(name.to_string()));
    }
}

pub(crate) mod clock {
    use super::FAKE;
    pub fn now_unix_ms() -> u64 {
        FAKE.with(|f| f.borrow().now_ms)
    }
    pub fn monotonic_ns() -> u64 {
        FAKE.with(|f| f.borrow().now_ms * 1_000_000)
    }
}
