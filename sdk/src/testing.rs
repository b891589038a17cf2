//! An in-memory fake host, used when hooks run natively (`cargo test` of a plugin crate, or the `testing` feature).
//!
//! ```ignore
//! weir_sdk::testing::init::<MyPlugin>(r#"{"allow": ["gpt-4o-mini"]}"#).unwrap();
//! let mut p = MyPlugin::default();
//! let decision = p.on_request(&weir_sdk::testing::request("gpt-4o-mini", b"{}").view()).unwrap();
//! assert!(weir_sdk::testing::logs().is_empty());
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bindings::weir::plugin::log::Level;
use crate::{ApiFamily, FakeRequest, KvError, Plugin, PluginError};

#[derive(Default)]
struct Fake {
    kv: HashMap<String, Vec<u8>>,
    logs: Vec<(Level, String)>,
    attributes: Vec<(String, String)>,
    events: Vec<String>,
    now_ms: u64,
    /// Every kv call fails with this, when set.
    kv_failure: Option<KvError>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// Resets the fake host (kv, logs, trace, clock).
pub fn reset() {
    FAKE.with(|f| *f.borrow_mut() = Fake::default());
}

/// Resets the fake host and runs plugin `P`'s `init` with this config (JSON), as the gateway does first in every
/// instance.
pub fn init<P: Plugin>(config_json: &str) -> Result<(), PluginError> {
    reset();
    crate::__private::init::<P>(config_json)
}

/// Makes every kv call fail with `e` (none: work again), to test how a plugin handles an unavailable backend.
pub fn fail_kv(e: Option<KvError>) {
    FAKE.with(|f| f.borrow_mut().kv_failure = e);
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

/// A request for tests: OpenAI chat completions, no headers (hooks take `request(..).view()`).
pub fn request(model: &str, body: &[u8]) -> FakeRequest {
    FakeRequest {
        id: "req_test".into(),
        family: Some(ApiFamily::Openai),
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

pub(crate) mod kv {
    use super::FAKE;
    use crate::KvError;

    fn failing() -> Result<(), KvError> {
        FAKE.with(|f| f.borrow().kv_failure.clone()).map_or(Ok(()), Err)
    }
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        failing()?;
        Ok(FAKE.with(|f| f.borrow().kv.get(key).cloned()))
    }
    pub fn set(key: &str, value: &[u8], _ttl_ms: Option<u64>) -> Result<(), KvError> {
        failing()?;
        FAKE.with(|f| f.borrow_mut().kv.insert(key.to_string(), value.to_vec()));
        Ok(())
    }
    pub fn increment(key: &str, delta: i64, _ttl_ms: Option<u64>) -> Result<i64, KvError> {
        failing()?;
        Ok(FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let cur = f.kv.get(key).and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()).unwrap_or(0);
            let new = cur + delta;
            f.kv.insert(key.to_string(), new.to_string().into_bytes());
            new
        }))
    }
    pub fn delete(key: &str) -> Result<(), KvError> {
        failing()?;
        FAKE.with(|f| f.borrow_mut().kv.remove(key));
        Ok(())
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
