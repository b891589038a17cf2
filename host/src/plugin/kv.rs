//! The `kv` capability's store: one trait, an in-memory implementation. Keys arrive already namespaced by plugin.
//!
//! Integers written by `increment` are stored as their decimal text, so `get` of a counter returns e.g. `b"42"`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A key-value store shared by a plugin's instances.
pub trait Kv: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>);
    /// Adds `delta` atomically; a missing, expired or non-integer value counts as 0. `ttl` applies on creation.
    fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> i64;
    fn delete(&self, key: &str);
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
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let map = self.map.lock().unwrap();
        map.get(key).filter(|e| Self::live(e, Instant::now())).map(|e| e.0.clone())
    }

    fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        let mut map = self.map.lock().unwrap();
        map.insert(key.to_string(), (value, ttl.map(|t| Instant::now() + t)));
        Self::sweep(&mut map);
    }

    fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let (cur, expiry) = match map.get(key).filter(|e| Self::live(e, now)) {
            Some((v, exp)) => (std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), *exp),
            None => (0, ttl.map(|t| now + t)),
        };
        let new = cur.saturating_add(delta);
        map.insert(key.to_string(), (new.to_string().into_bytes(), expiry));
        Self::sweep(&mut map);
        new
    }

    fn delete(&self, key: &str) {
        self.map.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn get_set_expire_delete() {
        let kv = MemoryKv::default();
        assert_eq!(kv.get("a"), None);
        kv.set("a", b"1".to_vec(), None);
        assert_eq!(kv.get("a").as_deref(), Some(&b"1"[..]));
        kv.set("b", b"x".to_vec(), Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get("b"), None, "expired");
        kv.delete("a");
        assert_eq!(kv.get("a"), None);
    }

    #[test]
    fn increment_is_atomic_across_threads() {
        let kv = Arc::new(MemoryKv::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment("n", 1, None);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(kv.increment("n", 0, None), 8000);
        assert_eq!(kv.get("n").as_deref(), Some(&b"8000"[..]));
    }
}
