//! The `kv` capability's store: one trait with one semantics, three backends (`[kv] backend`). Keys arrive already
//! namespaced by plugin (`<plugin>/<key>`).
//!
//! - [`MemoryKv`] (`memory`): this process only, lost on exit; for tests and throwaway runs.
//! - [`file::FileKv`] (`file`, the default): in memory, every change appended to a log on local disk before it is
//!   acknowledged; survives restarts and `kill -9`. One process per store.
//! - [`redis::RedisKv`] (`redis`): shared by every replica; settles that cannot reach Redis are journaled locally
//!   and replayed exactly once.
//!
//! Every store [`open`] returns is wrapped in [`Capped`], which refuses a value over [`MAX_VALUE_LIMIT`] on every
//! path before it reaches the backend; each plugin's view of it is capped again at its own `kv_max_value`
//! ([`MAX_VALUE`] unless set; a cache raises it), and the admin API's PUT at [`MAX_VALUE`].
//!
//! Semantics (the conformance tests in this module run against each backend): `get` of a missing or expired key is
//! none; `set` with a TTL expires the key after it; `increment` adds atomically (a missing, expired or non-integer
//! value counts as 0; the TTL applies on creation only) and returns the new value; integers are stored as their
//! decimal text, so `get` of a counter returns e.g. `b"42"`; `delete` of a missing key is not an error. Every
//! operation is async and can fail ([`KvError`]): a shared backend is a network round trip away. A [`Kv::batch`] is
//! the same operations in order (one round trip on Redis, one log write on the file store), stopping at the first
//! failure unless it settles.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod file;
pub mod log;
pub mod quota;
pub mod redis;
pub mod scratch;

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
    /// An `increment` made while settling a finished request (in `on-complete`), whose result decides nothing: a
    /// backend that cannot take it now keeps it and applies it exactly once later (Redis: a local journal). Local
    /// backends just increment.
    fn settle<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        self.increment(key, delta, ttl)
    }
    /// Operations in order, up to and including the first that fails (one result per operation attempted); with
    /// `settle` (a plugin's `on-complete`) each increment is a [`Kv::settle`] and every operation is attempted,
    /// whatever failed before it. The default makes the calls one after the other ([`one_by_one`]); the file store
    /// writes the batch's log records at once, Redis sends it as one script (one round trip).
    fn batch<'a>(&'a self, ops: Vec<Op>, settle: bool) -> BoxFuture<'a, Vec<KvResult<Outcome>>> {
        one_by_one(self, ops, settle)
    }
    /// The live keys under `prefix` with their sizes (key and value bytes), for a quota's accounting at start
    /// ([`quota`]); a shared backend (Redis) lists nothing: its replicas count what they see.
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        let _ = prefix;
        Vec::new()
    }

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

/// One operation of [`Kv::batch`]: a call, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Get(String),
    Set(String, Vec<u8>, Option<Duration>),
    Increment(String, i64, Option<Duration>),
    Delete(String),
}

/// What an operation of a batch gave: `get`'s value, `increment`'s new value, or done.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Value(Option<Vec<u8>>),
    Count(i64),
    Done,
}

/// [`Kv::batch`] as the single calls, one after the other.
pub fn one_by_one<'a, K: Kv + ?Sized>(kv: &'a K, ops: Vec<Op>, settle: bool) -> BoxFuture<'a, Vec<KvResult<Outcome>>> {
    Box::pin(async move {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                Op::Get(key) => kv.get(&key).await.map(Outcome::Value),
                Op::Set(key, value, ttl) => kv.set(&key, value, ttl).await.map(|()| Outcome::Done),
                Op::Increment(key, delta, ttl) if settle => kv.settle(&key, delta, ttl).await.map(Outcome::Count),
                Op::Increment(key, delta, ttl) => kv.increment(&key, delta, ttl).await.map(Outcome::Count),
                Op::Delete(key) => kv.delete(&key).await.map(|()| Outcome::Done),
            };
            let stop = r.is_err() && !settle;
            out.push(r);
            if stop {
                break;
            }
        }
        out
    })
}

/// Largest value a plugin stores unless its settings raise it (`kv_max_value`), and the admin API's limit.
pub const MAX_VALUE: usize = 1 << 20;

/// Largest value any plugin may be allowed (`kv_max_value`).
pub const MAX_VALUE_LIMIT: usize = crate::config::KV_MAX_VALUE_LIMIT;

/// Opens the configured backend, behind [`Capped`] at [`MAX_VALUE_LIMIT`].
pub fn open(config: &crate::config::KvConfig) -> anyhow::Result<std::sync::Arc<dyn Kv>> {
    use crate::config::KvConfig;
    let backend: std::sync::Arc<dyn Kv> = match config {
        KvConfig::Memory => std::sync::Arc::new(MemoryKv::default()),
        KvConfig::File { dir, sync_every } => file::FileKv::open(dir, *sync_every)?,
        KvConfig::Redis(c) => redis::RedisKv::open(c)?,
    };
    Ok(std::sync::Arc::new(Capped::new(backend, MAX_VALUE_LIMIT)))
}

/// A store that refuses values over `max` bytes with [`KvError::TooLarge`] (whoever sets them) and passes every
/// other operation to the backend.
pub struct Capped {
    inner: std::sync::Arc<dyn Kv>,
    max: usize,
}

impl Capped {
    pub fn new(inner: std::sync::Arc<dyn Kv>, max: usize) -> Capped {
        Capped { inner, max }
    }

    fn check(&self, value: &[u8]) -> KvResult<()> {
        if value.len() > self.max { Err(KvError::TooLarge(self.max)) } else { Ok(()) }
    }
}

impl Kv for Capped {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        self.inner.get(key)
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        match self.check(&value) {
            Ok(()) => self.inner.set(key, value, ttl),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        self.inner.increment(key, delta, ttl)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        self.inner.delete(key)
    }
    fn settle<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        self.inner.settle(key, delta, ttl)
    }
    /// The backend's batch, cut before the first value over the cap (which is then the failure); a settling batch
    /// with such a value goes one by one (every operation is attempted).
    fn batch<'a>(&'a self, mut ops: Vec<Op>, settle: bool) -> BoxFuture<'a, Vec<KvResult<Outcome>>> {
        Box::pin(async move {
            let Some(cut) = ops.iter().position(|op| matches!(op, Op::Set(_, v, _) if self.check(v).is_err())) else {
                return self.inner.batch(ops, settle).await;
            };
            if settle {
                return one_by_one(self, ops, settle).await;
            }
            ops.truncate(cut);
            let mut out = if ops.is_empty() { Vec::new() } else { self.inner.batch(ops, settle).await };
            if out.len() == cut && out.iter().all(Result::is_ok) {
                out.push(Err(KvError::TooLarge(self.max)));
            }
            out
        })
    }
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        self.inner.scan(prefix)
    }
    fn get_now(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.inner.get_now(key)
    }
    fn set_now(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> KvResult<()> {
        self.check(&value)?;
        self.inner.set_now(key, value, ttl)
    }
    fn increment_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> KvResult<i64> {
        self.inner.increment_now(key, delta, ttl)
    }
    fn delete_now(&self, key: &str) -> KvResult<()> {
        self.inner.delete_now(key)
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
    /// Forgets every key.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

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
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(k, e)| k.starts_with(prefix) && Self::live(e, now))
            .map(|(k, e)| (k.clone(), k.len() + e.0.len()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
pub mod tests {
    use super::*;
    use std::sync::Arc;

    /// One semantics: every backend passes this.
    async fn conformance(kv: Arc<dyn Kv>) {
        let k = |s: &str| format!("conf-{:08x}/{s}", fastrand::u32(..));
        let (a, n, t, s, big) = (k("a"), k("n"), k("t"), k("s"), k("big"));
        assert_eq!(kv.get(&a).await, Ok(None), "missing");
        kv.set(&a, b"v1".to_vec(), None).await.unwrap();
        assert_eq!(kv.get(&a).await.unwrap().as_deref(), Some(&b"v1"[..]));
        kv.set(&a, vec![0, 255, 1], None).await.unwrap();
        assert_eq!(kv.get(&a).await.unwrap(), Some(vec![0, 255, 1]), "binary values, overwritten");
        kv.delete(&a).await.unwrap();
        kv.delete(&a).await.unwrap();
        assert_eq!(kv.get(&a).await, Ok(None), "deleted; deleting twice is fine");

        assert_eq!(kv.increment(&n, 5, Some(Duration::from_millis(150))).await, Ok(5), "created at delta");
        assert_eq!(kv.increment(&n, -7, Some(Duration::from_secs(3600))).await, Ok(-2), "ttl only on creation");
        assert_eq!(kv.get(&n).await.unwrap().as_deref(), Some(&b"-2"[..]), "decimal text");
        kv.set(&s, b"not a number".to_vec(), None).await.unwrap();
        assert_eq!(kv.increment(&s, 3, None).await, Ok(3), "a non-integer counts as 0");
        assert_eq!(kv.settle(&s, 4, None).await, Ok(7), "settle is an increment when the backend is up");

        kv.set(&t, b"x".to_vec(), Some(Duration::from_millis(100))).await.unwrap();
        assert!(kv.get(&t).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(kv.get(&t).await, Ok(None), "set with ttl expires");
        assert_eq!(kv.get(&n).await, Ok(None), "the increment's creation ttl expired");
        assert_eq!(kv.increment(&n, 1, None).await, Ok(1), "an expired counter restarts at 0");
        kv.set(&t, b"x".to_vec(), Some(Duration::from_millis(u64::MAX))).await.unwrap();
        assert!(kv.get(&t).await.unwrap().is_some(), "a ttl too long to represent never expires");

        // A batch: the same operations in order, their results in order.
        let (b, m, gone) = (k("b"), k("m"), k("gone"));
        let done = kv
            .batch(
                vec![
                    Op::Set(b.clone(), b"x".to_vec(), Some(Duration::from_millis(100))),
                    Op::Get(b.clone()),
                    Op::Increment(m.clone(), 5, Some(Duration::from_millis(150))),
                    Op::Increment(m.clone(), -7, None),
                    Op::Get(gone.clone()),
                    Op::Set(gone.clone(), b"y".to_vec(), None),
                    Op::Delete(gone.clone()),
                    Op::Get(m.clone()),
                ],
                false,
            )
            .await;
        use Outcome::{Count, Done, Value};
        assert_eq!(
            done,
            [
                Ok(Done),
                Ok(Value(Some(b"x".to_vec()))),
                Ok(Count(5)),
                Ok(Count(-2)),
                Ok(Value(None)),
                Ok(Done),
                Ok(Done),
                Ok(Value(Some(b"-2".to_vec())))
            ]
        );
        assert_eq!(kv.get(&gone).await, Ok(None));
        assert_eq!(kv.batch(vec![], false).await, []);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            kv.batch(vec![Op::Get(b.clone()), Op::Get(m.clone())], false).await,
            [Ok(Value(None)), Ok(Value(None))],
            "ttls as in single calls"
        );

        let value = vec![7u8; MAX_VALUE_LIMIT];
        kv.set(&big, value.clone(), None).await.unwrap();
        assert_eq!(kv.get(&big).await.unwrap().map(|v| v.len()), Some(value.len()), "the largest value");

        // Atomic under concurrency.
        let c = k("c");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (kv, c) = (kv.clone(), c.clone());
                tokio::spawn(async move {
                    for _ in 0..100 {
                        kv.increment(&c, 1, None).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(kv.increment(&c, 0, None).await, Ok(800));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_memory() {
        conformance(Arc::new(MemoryKv::default())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_file() {
        let dir = log::tests::tempdir();
        conformance(file::FileKv::open(&dir, Duration::from_millis(50)).unwrap()).await;
        conformance(file::FileKv::open(&log::tests::tempdir(), Duration::ZERO).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_redis() {
        let server = RedisServer::start();
        let kv = redis::RedisKv::open(&server.config()).unwrap();
        conformance(kv).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_fails_fast_and_settles_are_replayed_exactly_once() {
        let mut server = RedisServer::start();
        let config = server.config();
        let kv = redis::RedisKv::open(&config).unwrap();
        assert_eq!(kv.settle("p/spend", 10, None).await, Ok(10));
        server.stop();
        let t0 = std::time::Instant::now();
        assert!(kv.get("p/spend").await.is_err());
        assert!(kv.increment("p/spend", 1, None).await.is_err());
        let done = kv.batch(vec![Op::Increment("p/spend".into(), 1, None), Op::Get("p/spend".into())], false).await;
        assert!(matches!(done.as_slice(), [Err(_)]), "a batch fails as one call: {done:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "failed within the timeout: {:?}", t0.elapsed());
        for _ in 0..5 {
            let e = kv.settle("p/spend", 1, None).await.unwrap_err();
            assert!(matches!(&e, KvError::Unavailable(m) if m.contains("journaled")), "{e:?}");
        }
        assert_eq!(kv.journal_depth(), 5);
        // A restart of the gateway while Redis is down: the journal is on disk.
        drop(kv);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kv = redis::RedisKv::open(&config).unwrap();
        assert_eq!(kv.journal_depth(), 5, "the journal survived the restart");
        server.restart();
        for _ in 0..100 {
            if kv.journal_depth() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(kv.journal_depth(), 0, "replayed once Redis is back");
        // The server restarted empty (no persistence in tests): exactly the five journaled settles were applied.
        assert_eq!(kv.get("p/spend").await.unwrap().as_deref(), Some(&b"5"[..]));
    }

    /// A private `redis-server` on a free port (Debian's package; `make test` installs it).
    pub struct RedisServer {
        pub port: u16,
        child: Option<std::process::Child>,
        journal: std::path::PathBuf,
    }

    impl RedisServer {
        pub fn start() -> RedisServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut s = RedisServer { port, child: None, journal: log::tests::tempdir() };
            s.restart();
            s
        }
        pub fn restart(&mut self) {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server; `make test` installs it)");
            self.child = Some(child);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("redis-server did not start on port {}", self.port);
        }
        pub fn stop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        pub fn config(&self) -> crate::config::RedisKvConfig {
            crate::config::RedisKvConfig {
                url: format!("redis://127.0.0.1:{}/0", self.port),
                password_env: None,
                prefix: "weir-test:".into(),
                pool_size: 2,
                timeout: Duration::from_millis(300),
                journal_dir: self.journal.clone(),
                journal_max: 1000,
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

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
