//! `backend = "file"`: the embedded durable store, the default. Every key lives in memory; every change is appended
//! to `kv.log` in the store's directory before it is acknowledged ([`super::log`]), so a restart or a `kill -9`
//! loses nothing acknowledged. `fdatasync` runs every `sync_every` (default 100 ms; `"0s"`: before every
//! acknowledgment), which bounds what a power cut can take. The log is compacted (rewritten with the live entries)
//! when it has grown to twice its size after the last compaction.
//!
//! Why not an embedded database such as redb: a redb commit is durable only with an fsync (0.4 ms per fdatasync
//! measured on this machine), so the cost plugin's five writes per request would add ~2–5 ms to every request, and
//! its non-durable commits are lost when the process is killed. Plugin state is small (keys, counters, reservations)
//! and fits in memory; what it needs is a write-ahead log, which is this file. See docs/state.md.
//!
//! Expiry times are stored as wall-clock milliseconds, so a TTL keeps running across restarts.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use super::log::{LogFile, Reader, put_field};
use super::{Kv, KvError, KvResult};

const SET: u8 = 1;
const DELETE: u8 = 2;

/// Compaction never runs below this log size.
const COMPACT_MIN: u64 = 1 << 20;

pub struct FileKv {
    inner: Mutex<Inner>,
    sync_every: Duration,
}

struct Inner {
    /// Value and expiry (Unix ms).
    map: HashMap<String, (Vec<u8>, Option<u64>)>,
    log: LogFile,
    /// The log's size after the last compaction (or at open).
    compacted_len: u64,
}

/// A value and its expiry (Unix ms).
type Stored = (Vec<u8>, Option<u64>);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn expiry(ttl: Option<Duration>) -> Option<u64> {
    // A TTL too long to represent means no expiry (as in the memory store).
    ttl.and_then(|t| now_ms().checked_add(u64::try_from(t.as_millis()).ok()?))
}

fn live(e: &(Vec<u8>, Option<u64>), now: u64) -> bool {
    e.1.is_none_or(|t| t > now)
}

fn set_record(key: &str, value: &[u8], expires: Option<u64>) -> Vec<u8> {
    let mut p = Vec::with_capacity(key.len() + value.len() + 17);
    p.push(SET);
    p.extend_from_slice(&expires.unwrap_or(0).to_le_bytes());
    put_field(&mut p, key.as_bytes());
    p.extend_from_slice(value);
    p
}

fn delete_record(key: &str) -> Vec<u8> {
    let mut p = vec![DELETE];
    put_field(&mut p, key.as_bytes());
    p
}

impl FileKv {
    /// Opens the store in `dir` (created, mode 0700, if missing), replaying its log. Starts the sync thread.
    pub fn open(dir: &Path, sync_every: Duration) -> anyhow::Result<Arc<FileKv>> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("kv.path {}: cannot create the store's directory: {e}", dir.display()))?;
        let path: PathBuf = dir.join("kv.log");
        let opened = LogFile::open(&path).map_err(|e| anyhow::anyhow!("kv.path: {e}"))?;
        if opened.dropped > 0 {
            tracing::warn!(target: "weir::kv", "kv store {}: dropped {} bytes of a write torn by a crash (never acknowledged)", path.display(), opened.dropped);
        }
        let now = now_ms();
        let mut map = HashMap::new();
        for rec in &opened.records {
            let mut r = Reader(rec);
            match r.u8() {
                Some(SET) => {
                    let (Some(exp), Some(key)) = (r.u64(), r.field()) else { continue };
                    let exp = (exp != 0).then_some(exp);
                    let key = String::from_utf8_lossy(key).into_owned();
                    map.insert(key, (r.rest().to_vec(), exp));
                }
                Some(DELETE) => {
                    if let Some(key) = r.field() {
                        map.remove(String::from_utf8_lossy(key).as_ref());
                    }
                }
                _ => {}
            }
        }
        map.retain(|_, e| live(e, now));
        let compacted_len = opened.log.len;
        let kv = Arc::new(FileKv { inner: Mutex::new(Inner { map, log: opened.log, compacted_len }), sync_every });
        if !sync_every.is_zero() {
            let weak = Arc::downgrade(&kv);
            std::thread::Builder::new()
                .name("weir-kv-sync".into())
                .spawn(move || sync_loop(weak, sync_every))
                .map_err(|e| anyhow::anyhow!("kv: cannot start the sync thread: {e}"))?;
        }
        Ok(kv)
    }

    /// How many keys the store holds (expired ones included until they are swept).
    pub fn keys(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `record` to the log (and syncs it when `sync_every` is zero); only then may the change be applied.
    fn write(&self, inner: &mut Inner, record: &[u8]) -> KvResult<()> {
        let mut r = inner.log.append(&[record]);
        if r.is_ok() && self.sync_every.is_zero() {
            r = inner.log.sync();
        }
        r.map_err(|e| KvError::Unavailable(format!("kv file {}: {e}", inner.log.path().display())))
    }

    /// Rewrites the log with the live entries once it has doubled since the last compaction.
    fn maybe_compact(inner: &mut Inner) {
        if inner.log.len < COMPACT_MIN.max(inner.compacted_len.saturating_mul(2)) {
            return;
        }
        let now = now_ms();
        inner.map.retain(|_, e| live(e, now));
        let records: Vec<Vec<u8>> = inner.map.iter().map(|(k, (v, exp))| set_record(k, v, *exp)).collect();
        match inner.log.rewrite(records.iter().map(Vec::as_slice)) {
            Ok(()) => inner.compacted_len = inner.log.len,
            Err(e) => {
                // The old log is intact (the rename is the only step that replaces it): try again later.
                inner.compacted_len = inner.log.len;
                tracing::warn!(target: "weir::kv", "kv store compaction failed: {e}");
            }
        }
    }

    fn get_sync(&self, key: &str) -> Option<Vec<u8>> {
        let inner = self.lock();
        inner.map.get(key).filter(|e| live(e, now_ms())).map(|e| e.0.clone())
    }

    fn set_sync(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> KvResult<()> {
        let exp = expiry(ttl);
        let mut inner = self.lock();
        self.write(&mut inner, &set_record(key, &value, exp))?;
        inner.map.insert(key.to_string(), (value, exp));
        Self::maybe_compact(&mut inner);
        Ok(())
    }

    fn increment_sync(&self, key: &str, delta: i64, ttl: Option<Duration>) -> KvResult<i64> {
        let now = now_ms();
        let mut inner = self.lock();
        let (cur, exp) = match inner.map.get(key).filter(|e| live(e, now)) {
            Some((v, exp)) => (std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), *exp),
            None => (0, expiry(ttl)),
        };
        let new = cur.saturating_add(delta);
        let value = new.to_string().into_bytes();
        self.write(&mut inner, &set_record(key, &value, exp))?;
        inner.map.insert(key.to_string(), (value, exp));
        Self::maybe_compact(&mut inner);
        Ok(new)
    }

    fn batch_sync(&self, ops: Vec<super::Op>, settle: bool) -> Vec<KvResult<super::Outcome>> {
        use super::{Op, Outcome};
        let now = now_ms();
        let mut inner = self.lock();
        // What the batch changed so far (none: deleted), over the map: later operations read earlier ones' writes.
        let mut changes: HashMap<String, Option<Stored>> = HashMap::new();
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut out = Vec::with_capacity(ops.len());
        let n = ops.len();
        for op in ops {
            let current = |changes: &HashMap<String, Option<Stored>>, key: &str| match changes.get(key) {
                Some(e) => e.clone(),
                None => inner.map.get(key).filter(|e| live(e, now)).cloned(),
            };
            match op {
                Op::Get(key) => out.push(Ok(Outcome::Value(current(&changes, &key).map(|e| e.0)))),
                Op::Set(key, value, ttl) => {
                    let exp = expiry(ttl);
                    records.push(set_record(&key, &value, exp));
                    changes.insert(key, Some((value, exp)));
                    out.push(Ok(Outcome::Done));
                }
                Op::Increment(key, delta, ttl) => {
                    let (cur, exp) = match current(&changes, &key) {
                        Some((v, exp)) => {
                            (std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), exp)
                        }
                        None => (0, expiry(ttl)),
                    };
                    let new = cur.saturating_add(delta);
                    let value = new.to_string().into_bytes();
                    records.push(set_record(&key, &value, exp));
                    changes.insert(key, Some((value, exp)));
                    out.push(Ok(Outcome::Count(new)));
                }
                Op::Delete(key) => {
                    // As `delete`: a record only for a key the store holds (live or not) or the batch wrote.
                    if inner.map.contains_key(&key) || changes.contains_key(&key) {
                        records.push(delete_record(&key));
                        changes.insert(key, None);
                    }
                    out.push(Ok(Outcome::Done));
                }
            }
        }
        if !records.is_empty() {
            let mut r = inner.log.append(&records.iter().map(Vec::as_slice).collect::<Vec<_>>());
            if r.is_ok() && self.sync_every.is_zero() {
                r = inner.log.sync();
            }
            if let Err(e) = r {
                let e = KvError::Unavailable(format!("kv file {}: {e}", inner.log.path().display()));
                return vec![Err(e); if settle { n } else { 1 }];
            }
        }
        for (key, change) in changes {
            match change {
                Some(entry) => inner.map.insert(key, entry),
                None => inner.map.remove(&key),
            };
        }
        Self::maybe_compact(&mut inner);
        out
    }

    fn delete_sync(&self, key: &str) -> KvResult<()> {
        let mut inner = self.lock();
        if inner.map.contains_key(key) {
            self.write(&mut inner, &delete_record(key))?;
            inner.map.remove(key);
        }
        Ok(())
    }
}

fn sync_loop(kv: Weak<FileKv>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(kv) = kv.upgrade() else { return };
        // The fdatasync runs without the lock: writers are not held up by the disk.
        let handle = kv.lock().log.take_dirty();
        if let Some(Err(e)) = handle.map(|h| h.and_then(|f| f.sync_data())) {
            tracing::warn!(target: "weir::kv", "kv store fdatasync failed: {e}");
        }
    }
}

impl Kv for FileKv {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        Box::pin(std::future::ready(Ok(self.get_sync(key))))
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(std::future::ready(self.set_sync(key, value, ttl)))
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(std::future::ready(self.increment_sync(key, delta, ttl)))
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(std::future::ready(self.delete_sync(key)))
    }
    /// Under one lock, with the batch's log records written at once (one write, one sync when `sync_every` is
    /// zero) before any change is applied: when that write fails no operation took effect in memory, and each
    /// attempted one reports it (the first, or with `settle` all of them) — whole records written before a disk
    /// error are replayed at the next open, as a single call's would be. Increments settle as they increment.
    fn batch<'a>(&'a self, ops: Vec<super::Op>, settle: bool) -> BoxFuture<'a, Vec<KvResult<super::Outcome>>> {
        Box::pin(std::future::ready(self.batch_sync(ops, settle)))
    }
    fn scan(&self, prefix: &str) -> Vec<(String, usize)> {
        let now = now_ms();
        let inner = self.lock();
        inner
            .map
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && live(e, now))
            .map(|(k, e)| (k.clone(), k.len() + e.0.len()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_with_expiry_and_deletes() {
        let dir = super::super::log::tests::tempdir();
        {
            let kv = FileKv::open(&dir, Duration::ZERO).unwrap();
            kv.set_now("a", b"1".to_vec(), None).unwrap();
            kv.set_now("gone", b"x".to_vec(), None).unwrap();
            kv.delete_now("gone").unwrap();
            kv.set_now("short", b"x".to_vec(), Some(Duration::from_millis(30))).unwrap();
            kv.set_now("long", b"x".to_vec(), Some(Duration::from_secs(3600))).unwrap();
            assert_eq!(kv.increment_now("n", 5, Some(Duration::from_secs(60))), Ok(5));
            assert_eq!(kv.increment_now("n", -2, None), Ok(3));
        }
        std::thread::sleep(Duration::from_millis(40));
        let kv = FileKv::open(&dir, Duration::ZERO).unwrap();
        assert_eq!(kv.get_now("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get_now("gone").unwrap(), None);
        assert_eq!(kv.get_now("short").unwrap(), None, "the TTL ran while the store was closed");
        assert!(kv.get_now("long").unwrap().is_some());
        assert_eq!(kv.increment_now("n", 0, None), Ok(3));
    }

    #[test]
    fn a_batch_is_written_at_once_and_survives_reopen() {
        use super::super::{Op, Outcome};
        let dir = super::super::log::tests::tempdir();
        {
            let kv = FileKv::open(&dir, Duration::ZERO).unwrap();
            kv.set_now("old", b"x".to_vec(), None).unwrap();
            let done = kv.batch_sync(
                vec![
                    Op::Increment("n".into(), 5, Some(Duration::from_secs(60))),
                    Op::Increment("n".into(), -2, None),
                    Op::Set("r".into(), b"rec".to_vec(), None),
                    Op::Get("r".into()),
                    Op::Delete("old".into()),
                    Op::Get("old".into()),
                    Op::Delete("never".into()),
                ],
                false,
            );
            use Outcome::{Count, Done, Value};
            assert_eq!(
                done,
                [
                    Ok(Count(5)),
                    Ok(Count(3)),
                    Ok(Done),
                    Ok(Value(Some(b"rec".to_vec()))),
                    Ok(Done),
                    Ok(Value(None)),
                    Ok(Done)
                ],
                "later operations see earlier ones"
            );
            assert_eq!(kv.get_now("old").unwrap(), None);
        }
        let kv = FileKv::open(&dir, Duration::ZERO).unwrap();
        assert_eq!(kv.increment_now("n", 0, None), Ok(3), "durable, with the first increment's TTL");
        assert_eq!(kv.get_now("r").unwrap().as_deref(), Some(&b"rec"[..]));
        assert_eq!(kv.get_now("old").unwrap(), None);
    }

    #[test]
    fn compaction_keeps_exactly_the_live_entries() {
        let dir = super::super::log::tests::tempdir();
        {
            let kv = FileKv::open(&dir, Duration::from_millis(10)).unwrap();
            let big = vec![b'v'; 4096];
            for i in 0..2000 {
                kv.set_now(&format!("k{}", i % 10), big.clone(), None).unwrap();
                kv.increment_now("count", 1, None).unwrap();
            }
            let len = std::fs::metadata(dir.join("kv.log")).unwrap().len();
            assert!(len < 4 * COMPACT_MIN, "compacted: {len} bytes for 2000 writes of 4 KiB");
        }
        // The sync thread may hold the last reference for a moment (it upgrades its weak one to sync), and the lock
        // goes with the store's drop: wait for it rather than race it.
        let mut reopened = FileKv::open(&dir, Duration::from_millis(10));
        for _ in 0..200 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            reopened = FileKv::open(&dir, Duration::from_millis(10));
        }
        let kv = reopened.unwrap();
        assert_eq!(kv.keys(), 11);
        assert_eq!(kv.get_now("count").unwrap().as_deref(), Some(&b"2000"[..]));
    }
}
