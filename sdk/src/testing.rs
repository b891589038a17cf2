//! An in-memory fake host, used when hooks run natively (`cargo test` of a plugin crate, or the `testing` feature).
//!
//! Its kv has the gateway's semantics: a TTL expires a key on the fake clock ([`set_now_ms`]); `increment` counts a
//! missing, expired or non-integer value as 0, applies its TTL on creation only and saturates; a value over 1 MiB
//! is refused with `too-large`.
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

/// Largest kv value, as the gateway's store has it.
pub const MAX_KV_VALUE: usize = 1 << 20;

#[derive(Default)]
struct Fake {
    /// Value and expiry (fake-clock ms).
    kv: HashMap<String, (Vec<u8>, Option<u64>)>,
    logs: Vec<(Level, String)>,
    attributes: Vec<(String, String)>,
    events: Vec<String>,
    now_ms: u64,
    /// Every kv call fails with this, when set.
    kv_failure: Option<KvError>,
    /// What `answer::get` returns.
    answer: Option<crate::answer::ClientAnswer>,
    /// `metrics::count` totals by event.
    counts: HashMap<String, u64>,
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

/// Sets what `answer::get` returns (the client's answer, as in `on-complete`).
pub fn set_answer(answer: Option<crate::answer::ClientAnswer>) {
    FAKE.with(|f| f.borrow_mut().answer = answer);
}

/// Sets the fake clock.
pub fn set_now_ms(ms: u64) {
    FAKE.with(|f| f.borrow_mut().now_ms = ms);
}

/// Lines logged so far.
pub fn logs() -> Vec<(Level, String)> {
    FAKE.with(|f| f.borrow().logs.clone())
}

/// `metrics::count` totals so far, by event.
pub fn counts() -> HashMap<String, u64> {
    FAKE.with(|f| f.borrow().counts.clone())
}

/// Trace attributes set so far.
pub fn attributes() -> Vec<(String, String)> {
    FAKE.with(|f| f.borrow().attributes.clone())
}

/// A summary for `on-complete` tests: request `req_test`, `model`, status 200, outcome `ok`, one attempt, `input`
/// and `output` tokens, no principal, no metadata (set the fields a test needs).
pub fn summary(model: &str, input: u64, output: u64) -> crate::Summary {
    crate::Summary {
        request_id: "req_test".into(),
        model: model.into(),
        status: 200,
        outcome: "ok".into(),
        upstream: None,
        attempts: 1,
        usage: crate::Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cached_tokens: None,
            reasoning_tokens: None,
        },
        ttft_ms: None,
        duration_ms: 1.0,
        principal: None,
        metadata: Vec::new(),
        error: None,
        partial: false,
    }
}

/// A request for tests: OpenAI chat completions, no headers (hooks take `request(..).view()`).
pub fn request(model: &str, body: &[u8]) -> FakeRequest {
    request_to("chat.completions", model, body)
}

/// A request to another endpoint (`chat.completions`, `responses`, `embeddings`, `messages`,
/// `messages.count_tokens`, or `models` for a model-listing check), with the API family that endpoint belongs to.
pub fn request_to(endpoint: &str, model: &str, body: &[u8]) -> FakeRequest {
    let family = if endpoint.starts_with("messages") { ApiFamily::Anthropic } else { ApiFamily::Openai };
    FakeRequest {
        id: "req_test".into(),
        family: Some(family),
        endpoint: endpoint.into(),
        headers: Vec::new(),
        body: body.to_vec(),
        model: model.into(),
        stream: false,
        principal: None,
        metadata: Vec::new(),
        digest: None,
        response_headers: Default::default(),
        coalesce: Default::default(),
    }
}

pub(crate) mod log {
    use super::*;
    pub fn write(level: Level, message: &str) {
        FAKE.with(|f| f.borrow_mut().logs.push((level, message.to_string())));
    }
}

pub(crate) mod kv {
    use super::{FAKE, Fake, MAX_KV_VALUE};
    use crate::KvError;

    fn failing() -> Result<(), KvError> {
        FAKE.with(|f| f.borrow().kv_failure.clone()).map_or(Ok(()), Err)
    }
    fn expiry(f: &Fake, ttl_ms: Option<u64>) -> Option<u64> {
        ttl_ms.map(|t| f.now_ms.saturating_add(t))
    }
    /// The live value of `key` (an expired one is removed).
    fn live(f: &mut Fake, key: &str) -> Option<(Vec<u8>, Option<u64>)> {
        let now = f.now_ms;
        match f.kv.get(key) {
            Some((_, Some(at))) if *at <= now => {
                f.kv.remove(key);
                None
            }
            other => other.cloned(),
        }
    }
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        failing()?;
        Ok(FAKE.with(|f| live(&mut f.borrow_mut(), key).map(|(v, _)| v)))
    }
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        failing()?;
        if value.len() > MAX_KV_VALUE {
            return Err(KvError::TooLarge(MAX_KV_VALUE as u64));
        }
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let at = expiry(&f, ttl_ms);
            f.kv.insert(key.to_string(), (value.to_vec(), at));
        });
        Ok(())
    }
    pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        failing()?;
        Ok(FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let (cur, at) = match live(&mut f, key) {
                Some((v, at)) => (std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), at),
                None => (0, expiry(&f, ttl_ms)),
            };
            let new = cur.saturating_add(delta);
            f.kv.insert(key.to_string(), (new.to_string().into_bytes(), at));
            new
        }))
    }
    pub fn delete(key: &str) -> Result<(), KvError> {
        failing()?;
        FAKE.with(|f| f.borrow_mut().kv.remove(key));
        Ok(())
    }
    /// As the gateway does it outside `on-complete`: the single calls in order, up to and including the first that
    /// fails (the fake does not know which hook runs; in `on-complete` the gateway attempts every operation).
    pub fn batch(ops: &[crate::kv::Op]) -> Vec<Result<crate::kv::Outcome, KvError>> {
        use crate::kv::{Op, Outcome};
        if ops.len() > crate::kv::MAX_BATCH {
            return vec![Err(KvError::TooMany(crate::kv::MAX_BATCH as u32))];
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                Op::Get(key) => get(key).map(Outcome::Value),
                Op::Set(o) => set(&o.key, &o.value, o.ttl_ms).map(|()| Outcome::Done),
                Op::Increment(o) => increment(&o.key, o.delta, o.ttl_ms).map(Outcome::Count),
                Op::Delete(key) => delete(key).map(|()| Outcome::Done),
            };
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_fake_kv_has_the_gateway_semantics() {
            crate::testing::reset();
            crate::testing::set_now_ms(1_000);
            set("t", b"x", Some(100)).unwrap();
            assert_eq!(increment("n", 5, Some(150)), Ok(5), "created at delta");
            assert_eq!(increment("n", -7, Some(1_000_000)), Ok(-2), "the ttl applies on creation only");
            crate::testing::set_now_ms(1_099);
            assert_eq!(get("t"), Ok(Some(b"x".to_vec())));
            crate::testing::set_now_ms(1_100);
            assert_eq!(get("t"), Ok(None), "expired at its ttl");
            crate::testing::set_now_ms(1_150);
            assert_eq!(get("n"), Ok(None), "the counter's creation ttl expired");
            assert_eq!(increment("n", 1, None), Ok(1), "an expired counter restarts at 0");
            set("s", b"not a number", None).unwrap();
            assert_eq!(increment("s", 3, None), Ok(3), "a non-integer counts as 0");
            assert_eq!(increment("s", i64::MAX, None), Ok(i64::MAX), "saturates");
            assert_eq!(set("big", &vec![0; MAX_KV_VALUE + 1], None), Err(KvError::TooLarge(MAX_KV_VALUE as u64)));
            assert_eq!(set("big", &vec![0; MAX_KV_VALUE], None), Ok(()), "the largest value");
        }

        #[test]
        fn a_fake_batch_stops_at_the_first_failure() {
            use crate::kv::{Op, Outcome};
            crate::testing::reset();
            let r = batch(&[Op::increment("n", 2, None), Op::set("k", *b"v", None), Op::get("k"), Op::delete("k")]);
            assert_eq!(
                r,
                [Ok(Outcome::Count(2)), Ok(Outcome::Done), Ok(Outcome::Value(Some(b"v".to_vec()))), Ok(Outcome::Done)]
            );
            let r = batch(&[
                Op::increment("n", 1, None),
                Op::set("big", vec![0; MAX_KV_VALUE + 1], None),
                Op::increment("n", 1, None),
            ]);
            assert_eq!(r, [Ok(Outcome::Count(3)), Err(KvError::TooLarge(MAX_KV_VALUE as u64))]);
            assert_eq!(get("n"), Ok(Some(b"3".to_vec())), "the operation after the failure was not attempted");
            let many = vec![Op::increment("n", 1, None); crate::kv::MAX_BATCH + 1];
            assert_eq!(batch(&many), [Err(KvError::TooMany(crate::kv::MAX_BATCH as u32))]);
            assert_eq!(get("n"), Ok(Some(b"3".to_vec())), "none of a batch over the limit was attempted");
            assert_eq!(batch(&many[1..]).len(), crate::kv::MAX_BATCH, "the limit itself is allowed");
        }
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

pub(crate) mod metrics {
    use super::FAKE;
    pub fn count(event: &str, n: u64) {
        FAKE.with(|f| *f.borrow_mut().counts.entry(event.to_string()).or_default() += n);
    }
}

pub(crate) mod answer {
    use super::FAKE;
    pub fn get() -> Option<crate::answer::ClientAnswer> {
        FAKE.with(|f| f.borrow().answer.clone())
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
