//! A shadow version's store ([`Scratch`]): its keys are in a namespace of its own (`NAME.shadow/…`, kept in memory),
//! and a key it has not written is read from the live version's (`NAME/…`), so that a candidate decides on the live state (a budget's spend, a rate
//! window) without ever changing it. A key the shadow wrote or deleted is read from the scratch map from then on; a
//! counter it increments starts from the live value. The map is bounded: past [`SCRATCH_MAX`] bytes written it is
//! emptied (a shadow's state is disposable; its decisions then read the live state again).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Kv, KvResult, MemoryKv};

/// Bytes (keys and values) a shadow may write before its scratch map is emptied.
pub const SCRATCH_MAX: usize = 16 << 20;

/// Reads through to `live`, writes to a map of its own.
pub struct Scratch {
    live: Arc<dyn Kv>,
    /// `NAME.shadow/` and `NAME/`: a shadow key not written yet is read from the live key.
    prefixes: (String, String),
    own: MemoryKv,
    /// Keys the shadow deleted: none for it, whatever the live store holds.
    deleted: Mutex<HashSet<String>>,
    written: AtomicUsize,
}

impl Scratch {
    /// The scratch store of shadow `shadow` of plugin `of` over the live plugin's store.
    pub fn new(live: Arc<dyn Kv>, shadow: &str, of: &str) -> Scratch {
        let prefixes = (format!("{shadow}/"), format!("{of}/"));
        Scratch { live, prefixes, own: MemoryKv::default(), deleted: Mutex::default(), written: AtomicUsize::new(0) }
    }

    /// The live plugin's key for a shadow key.
    fn live_key(&self, key: &str) -> String {
        match key.strip_prefix(&self.prefixes.0) {
            Some(rest) => format!("{}{rest}", self.prefixes.1),
            None => key.to_string(),
        }
    }

    fn deleted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.deleted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the scratch map decides `key` (the shadow wrote or deleted it).
    fn owns(&self, key: &str) -> bool {
        self.deleted().contains(key) || self.own.get_sync(key).is_some()
    }

    /// Counts `n` bytes written; empties the scratch map when it has taken more than [`SCRATCH_MAX`].
    fn wrote(&self, n: usize) {
        if self.written.fetch_add(n, Ordering::Relaxed) + n > SCRATCH_MAX {
            self.own.clear();
            self.deleted().clear();
            self.written.store(0, Ordering::Relaxed);
        }
    }
}

impl Kv for Scratch {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            if self.deleted().contains(key) {
                return Ok(None);
            }
            match self.own.get_sync(key) {
                Some(v) => Ok(Some(v)),
                None => self.live.get(&self.live_key(key)).await,
            }
        })
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        self.wrote(key.len() + value.len());
        self.deleted().remove(key);
        self.own.set(key, value, ttl)
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(async move {
            if !self.owns(key) {
                // The counter starts where the live one is.
                if let Some(v) = self.live.get(&self.live_key(key)).await? {
                    self.own.set_sync(key, v, ttl);
                }
            }
            self.deleted().remove(key);
            self.wrote(key.len() + 20);
            self.own.increment(key, delta, ttl).await
        })
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        self.wrote(key.len());
        self.deleted().insert(key.to_string());
        self.own.delete(key)
    }
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        self.own.scan(prefix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_live_store_and_never_writes_it() {
        let live: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        live.set("p/spend", b"40".to_vec(), None).await.unwrap();
        live.set("p/name", b"live".to_vec(), None).await.unwrap();
        let s = Scratch::new(live.clone(), "p.shadow", "p");
        assert_eq!(s.get("p.shadow/spend").await.unwrap(), Some(b"40".to_vec()), "reads through");
        assert_eq!(s.increment("p.shadow/spend", 2, None).await.unwrap(), 42, "a counter starts from the live value");
        assert_eq!(s.increment("p.shadow/new", 1, None).await.unwrap(), 1);
        s.set("p.shadow/name", b"shadow".to_vec(), None).await.unwrap();
        s.delete("p.shadow/gone").await.unwrap();
        live.set("p/gone", b"x".to_vec(), None).await.unwrap();
        assert_eq!(s.get("p.shadow/name").await.unwrap(), Some(b"shadow".to_vec()));
        assert_eq!(s.get("p.shadow/gone").await.unwrap(), None, "deleted for the shadow");
        s.delete("p.shadow/name").await.unwrap();
        assert_eq!(s.get("p.shadow/name").await.unwrap(), None);
        // The live store is as it was.
        assert_eq!(live.get("p/spend").await.unwrap(), Some(b"40".to_vec()));
        assert_eq!(live.get("p/name").await.unwrap(), Some(b"live".to_vec()));
        assert_eq!(live.get("p/new").await.unwrap(), None);
        assert_eq!(live.get("p/gone").await.unwrap(), Some(b"x".to_vec()));
    }

    #[tokio::test]
    async fn the_scratch_map_is_bounded() {
        let live: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        live.set("p/k", b"live".to_vec(), None).await.unwrap();
        let s = Scratch::new(live, "p.shadow", "p");
        s.set("p.shadow/k", b"mine".to_vec(), None).await.unwrap();
        for i in 0..20 {
            s.set(&format!("p.shadow/big{i}"), vec![0; 1 << 20], None).await.unwrap();
        }
        assert!(s.own.scan("p.shadow/").iter().map(|(_, n)| n).sum::<usize>() <= SCRATCH_MAX);
        assert_eq!(s.get("p.shadow/k").await.unwrap(), Some(b"live".to_vec()), "emptied: the live value again");
    }
}
