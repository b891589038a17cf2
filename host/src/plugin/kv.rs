//! The `kv` capability's store: one trait, an in-memory implementation. Keys arrive already namespaced by plugin.
//!
//! Every operation is async and can fail ([`KvError`]), so that a shared backend (a network round trip away) fits
//! behind the same trait; the in-memory store answers at once and never fails. Integers written by `increment`
//! are stored as their decimal text, so `get` of a counter returns e.g. `b"42"`.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

/// Why a kv operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("kv backend unavailable: {0}")]
    Unavailable(String),
    #[error("kv backend timed out")]
    Timeout,
    #[error("value larger than {0} bytes")]
    TooLarge(usize),
}

pub type KvResult<T> = Result<T, KvError>;

/// A key-value store shared by a plugin's instances.
pub trait Kv: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>>;
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>>;
    /// Adds `delta` atomically; a missing, expired or non-integer value counts as 0. `ttl` applies on creation.
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>>;

    // Synchronous access, for 0.1.0 components (whose kv imports are synchronous and cannot fail): the answer if
    // the backend gives it without waiting, else an error.
    fn get_now(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.get(key).now_or_never().unwrap_or_else(would_block)
    }
    fn set_now(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> KvResult<()> {
        self.set(key, value, ttl).now_or_never().unwrap_or_else(would_block)
    }
    fn increment_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> KvResult<i64> {
        self.increment(key, delta, ttl).now_or_never().unwrap_or_else(would_block)
    }
    fn delete_now(&self, key: &str) -> KvResult<()> {
        self.delete(key).now_or_never().unwrap_or_else(would_block)
    }
}

fn would_block<T>() -> KvResult<T> {
    Err(KvError::Unavailable("this backend cannot answer synchronously (a 0.1.0 plugin)".into()))
}

/// A value and its expiry.
type Entry = (Vec<u8>, Option<Instant>);

/// In-process store: one map behind a mutex, expired entries swept as the map grows.
#[derive(Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, Entry>>,
}

impl MemoryKv {
    fn live(entry: &Entry, now: Instant) -> bool {
        entry.1.is_none_or(|t| t > now)
    }

    fn sweep(map: &mut HashMap<String, Entry>) {
        if map.len() > 10_000 && map.len().is_power_of_two() {
            let now = Instant::now();
            map.retain(|_, e| Self::live(e, now));
        }
    }

    fn get_sync(&self, key: &str) -> Option<Vec<u8>> {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).filter(|e| Self::live(e, Instant::now())).map(|e| e.0.clone())
    }

    fn set_sync(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A TTL too long for an `Instant` (a plugin may pass any u64) means no expiry.
        map.insert(key.to_string(), (value, ttl.and_then(|t| Instant::now().checked_add(t))));
        Self::sweep(&mut map);
    }

    fn increment_sync(&self, key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cur, expiry) = match map.get(key).filter(|e| Self::live(e, now)) {
            Some((v, exp)) => (std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), *exp),
            None => (0, ttl.and_then(|t| now.checked_add(t))),
        };
        let new = cur.saturating_add(delta);
        map.insert(key.to_string(), (new.to_string().into_bytes(), expiry));
        Self::sweep(&mut map);
        new
    }
}

impl Kv for MemoryKv {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        Box::pin(std::future::ready(Ok(self.get_sync(key))))
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        self.set_sync(key, value, ttl);
        Box::pin(std::future::ready(Ok(())))
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(std::future::ready(Ok(self.increment_sync(key, delta, ttl))))
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn get_set_expire_delete() {
        let kv = MemoryKv::default();
        assert_eq!(kv.get_now("a"), Ok(None));
        kv.set_now("a", b"1".to_vec(), None).unwrap();
        assert_eq!(kv.get_now("a").unwrap().as_deref(), Some(&b"1"[..]));
        kv.set_now("b", b"x".to_vec(), Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get_now("b"), Ok(None), "expired");
        kv.delete_now("a").unwrap();
        assert_eq!(kv.get_now("a"), Ok(None));
    }

    #[test]
    fn any_ttl_is_accepted() {
        let kv = MemoryKv::default();
        kv.set_now("a", b"1".to_vec(), Some(Duration::from_millis(u64::MAX))).unwrap();
        assert_eq!(kv.increment_now("n", 1, Some(Duration::MAX)), Ok(1));
        assert_eq!(kv.get_now("a").unwrap().as_deref(), Some(&b"1"[..]), "too long to expire");
    }

    #[test]
    fn increment_is_atomic_across_threads() {
        let kv = Arc::new(MemoryKv::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment_now("n", 1, None).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(kv.increment_now("n", 0, None), Ok(8000));
        assert_eq!(kv.get_now("n").unwrap().as_deref(), Some(&b"8000"[..]));
    }
}
