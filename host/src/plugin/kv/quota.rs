//! A plugin's share of the store, bounded (`kv_quota = "64MiB"` in its settings): the bytes of its keys and values
//! are counted, and when a write takes them over the quota the least recently used keys are deleted until they fit
//! (a cache's eviction). Every read that finds a key and every write makes it the most recent.
//!
//! The accounting lives in this process, beside the store: exact for the `memory` and `file` backends, which one
//! process owns (at start it is read back from the store, [`Kv::scan`]). With `redis` each replica counts only what
//! it wrote and read: bound a shared cache with its TTLs and Redis's own `maxmemory-policy allkeys-lru` instead
//! (docs/cache.md). The state outlives a hot swap of the plugin (the registry keeps it by plugin name).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Kv, KvError, KvResult};
use crate::sync::Locked;

/// Keys by recency, with their sizes.
#[derive(Default)]
struct Lru {
    /// key → (bytes, tick of its last use)
    keys: HashMap<String, (usize, u64)>,
    /// tick → key, oldest first
    order: BTreeMap<u64, String>,
    total: usize,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, key: &str, size: usize) {
        self.tick += 1;
        if let Some((old, at)) = self.keys.insert(key.to_string(), (size, self.tick)) {
            self.order.remove(&at);
            self.total -= old;
        }
        self.order.insert(self.tick, key.to_string());
        self.total += size;
    }

    fn forget(&mut self, key: &str) {
        if let Some((size, at)) = self.keys.remove(key) {
            self.order.remove(&at);
            self.total -= size;
        }
    }

    /// The least recently used key other than `keep`.
    fn oldest(&self, keep: &str) -> Option<String> {
        self.order.values().find(|k| k.as_str() != keep).cloned()
    }
}

/// One plugin's accounting: its key prefix (`<plugin>/`), its quota, what it holds.
pub struct QuotaState {
    prefix: String,
    limit: usize,
    lru: Mutex<Lru>,
}

impl QuotaState {
    /// The accounting of plugin `name` over `store`, read back from what the store holds for it.
    pub fn new(name: &str, limit: usize, store: &dyn Kv) -> Arc<QuotaState> {
        let prefix = format!("{name}/");
        let mut lru = Lru::default();
        for (key, size) in store.scan(&prefix) {
            lru.touch(&key, size);
        }
        let state = Arc::new(QuotaState { prefix, limit, lru: Mutex::new(lru) });
        state.report();
        state
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.lru.locked().total
    }

    fn plugin(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    fn report(&self) {
        let used = self.used();
        crate::telemetry::metrics::METRICS
            .kv_bytes
            .get_or_create(&crate::telemetry::metrics::KvPluginLabels { plugin: self.plugin().to_string() })
            .set(used as i64);
    }
}

/// A store seen through a plugin's quota.
pub struct Quota {
    pub inner: Arc<dyn Kv>,
    pub state: Arc<QuotaState>,
}

fn size(key: &str, value_len: usize) -> usize {
    key.len() + value_len
}

impl Quota {
    /// Deletes least recently used keys until the plugin's bytes fit its quota (never `keep`, just written).
    async fn evict(&self, keep: &str) {
        loop {
            let victim = {
                let lru = self.state.lru.locked();
                if lru.total <= self.state.limit {
                    break;
                }
                lru.oldest(keep)
            };
            let Some(victim) = victim else { break };
            // Gone from the accounting either way: a delete that fails leaves a key its TTL will expire.
            let _ = self.inner.delete(&victim).await;
            self.state.lru.locked().forget(&victim);
            crate::telemetry::metrics::METRICS
                .kv_evictions
                .get_or_create(&crate::telemetry::metrics::KvPluginLabels { plugin: self.state.plugin().to_string() })
                .inc();
        }
        self.state.report();
    }
}

impl Kv for Quota {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let v = self.inner.get(key).await?;
            let mut lru = self.state.lru.locked();
            match &v {
                Some(v) => lru.touch(key, size(key, v.len())),
                None => lru.forget(key),
            }
            Ok(v)
        })
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(async move {
            let n = size(key, value.len());
            if n > self.state.limit {
                return Err(KvError::TooLarge(self.state.limit.saturating_sub(key.len())));
            }
            self.inner.set(key, value, ttl).await?;
            self.state.lru.locked().touch(key, n);
            self.evict(key).await;
            Ok(())
        })
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(async move {
            let n = self.inner.increment(key, delta, ttl).await?;
            self.state.lru.locked().touch(key, size(key, n.to_string().len()));
            self.evict(key).await;
            Ok(n)
        })
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(async move {
            self.inner.delete(key).await?;
            self.state.lru.locked().forget(key);
            self.state.report();
            Ok(())
        })
    }
    fn settle<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(async move {
            let n = self.inner.settle(key, delta, ttl).await?;
            self.state.lru.locked().touch(key, size(key, n.to_string().len()));
            Ok(n)
        })
    }
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        self.inner.scan(prefix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::super::MemoryKv;
    use super::*;

    #[tokio::test]
    async fn the_least_recently_used_keys_go_first_and_the_quota_holds() {
        let store: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        store.set("other/x", vec![0; 500], None).await.unwrap();
        store.set("p/old", vec![0; 100], None).await.unwrap();
        let state = QuotaState::new("p", 300, &*store);
        assert_eq!(state.used(), 105, "read back from the store; other plugins' keys not counted");
        let q = Quota { inner: store.clone(), state: state.clone() };
        q.set("p/a", vec![1; 90], None).await.unwrap();
        q.set("p/b", vec![2; 90], None).await.unwrap();
        assert!(q.get("p/old").await.unwrap().is_some(), "read: now the most recent");
        q.set("p/c", vec![3; 90], None).await.unwrap();
        // 105 + 93 + 93 + 93 = 384 > 300: `p/a`, the least recently used, went.
        assert_eq!(store.get("p/a").await.unwrap(), None);
        assert!(store.get("p/b").await.unwrap().is_some() && store.get("p/old").await.unwrap().is_some());
        assert!(state.used() <= 300, "{}", state.used());
        assert!(store.get("other/x").await.unwrap().is_some(), "another plugin's keys are never evicted");
        assert_eq!(q.set("p/huge", vec![0; 400], None).await, Err(KvError::TooLarge(294)));
        q.delete("p/b").await.unwrap();
        assert_eq!(state.used(), 105 + 93);
        // Overwriting a key replaces its size.
        q.set("p/c", vec![3; 10], None).await.unwrap();
        assert_eq!(state.used(), 105 + 13);
    }
}
