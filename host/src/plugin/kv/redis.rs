//! `backend = "redis"`: plugin state shared by every replica on one Redis 7 / Valkey server, through the `redis`
//! crate's `ConnectionManager` (multiplexed, reconnects by itself; `pool_size` of them, used in turn).
//!
//! - Keys are `<prefix><plugin>/<key>`. `increment` is one Lua script (GET, INCRBY, PEXPIRE on creation), so it is
//!   atomic across replicas and a non-integer value counts as 0, as in the other backends.
//! - Every operation fails within `timeout` (connecting included) with `unavailable` or `timeout`; nothing waits
//!   for Redis to come back. The connection managers reconnect in the background.
//! - **Settles never lose spend.** An increment made in `on-complete` ([`Kv::settle`]) carries a unique id and is
//!   applied by a script that first sets a marker `<prefix>op:<id>` (`SET NX`, kept 7 days): applying it twice is a
//!   no-op. When Redis cannot be reached (or does not answer in time — then whether it was applied is unknown), the
//!   settle is appended to a bounded journal on local disk ([`super::log`]) and replayed, in order, once Redis
//!   answers again; the marker makes the replay exactly once, even when the first attempt did land or the gateway
//!   restarts half-way through a replay.
//! - Not supported: Redis Cluster (the settle script touches two keys that may hash to different slots) and
//!   Sentinel discovery. Use a single primary (with a replica and failover handled by a stable address).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::log::{LogFile, Reader, put_field};
use super::{Kv, KvError, KvResult};
use crate::config::RedisKvConfig;
use crate::telemetry::metrics::{KvLabels, METRICS};

/// How long the exactly-once marker of a settle is kept: longer than any outage the journal rides out.
const MARKER_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Increment with TTL on creation; a non-integer value counts as 0. KEYS[1]; ARGV: delta, ttl ms (0: none).
const INCREMENT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and not string.match(cur, '^%-?%d+$') then redis.call('SET', KEYS[1], '0', 'KEEPTTL') end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if not cur and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
";

/// The same, once per marker KEYS[2] (ARGV[3]: the marker's TTL). Returns {applied, value}.
const SETTLE: &str = r"
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  local cur = redis.call('GET', KEYS[1])
  return {0, tonumber(cur) or 0}
end
local cur = redis.call('GET', KEYS[1])
if cur and not string.match(cur, '^%-?%d+$') then redis.call('SET', KEYS[1], '0', 'KEEPTTL') end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if not cur and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, v}
";

/// A batch in one round trip, applied in order as the single commands and scripts above would be (and, being one
/// script, with no other client's command between them). KEYS: one per operation. ARGV: per operation its kind, then
/// its arguments: `g`; `s` value ttl-ms (0: none); `i` delta ttl-ms (0: none); `d`. Returns one reply per operation:
/// the value or nil, the new count, or 1.
const BATCH: &str = r"
local out = {}
local a = 1
for n, key in ipairs(KEYS) do
  local kind = ARGV[a]
  if kind == 'g' then
    out[n] = redis.call('GET', key)
    a = a + 1
  elseif kind == 's' then
    if tonumber(ARGV[a + 2]) > 0 then redis.call('SET', key, ARGV[a + 1], 'PX', ARGV[a + 2])
    else redis.call('SET', key, ARGV[a + 1]) end
    out[n] = 1
    a = a + 3
  elseif kind == 'i' then
    local cur = redis.call('GET', key)
    if cur and not string.match(cur, '^%-?%d+$') then redis.call('SET', key, '0', 'KEEPTTL') end
    out[n] = redis.call('INCRBY', key, ARGV[a + 1])
    if not cur and tonumber(ARGV[a + 2]) > 0 then redis.call('PEXPIRE', key, ARGV[a + 2]) end
    a = a + 3
  else
    redis.call('DEL', key)
    out[n] = 1
    a = a + 1
  end
end
return out
";

pub struct RedisKv {
    /// `pool_size` connection managers, used in turn.
    first: ConnectionManager,
    others: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    timeout: Duration,
    increment: Script,
    settle: Script,
    batch: Script,
    journal: Journal,
}

/// A settle waiting for Redis.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    id: String,
    key: String,
    delta: i64,
    ttl_ms: u64,
}

impl Pending {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        put_field(&mut p, self.id.as_bytes());
        put_field(&mut p, self.key.as_bytes());
        p.extend_from_slice(&self.delta.to_le_bytes());
        p.extend_from_slice(&self.ttl_ms.to_le_bytes());
        p
    }
    fn decode(rec: &[u8]) -> Option<Pending> {
        let mut r = Reader(rec);
        let id = String::from_utf8(r.field()?.to_vec()).ok()?;
        let key = String::from_utf8(r.field()?.to_vec()).ok()?;
        Some(Pending { id, key, delta: r.i64()?, ttl_ms: r.u64()? })
    }
}

/// The local journal of settles Redis did not take: in memory, mirrored on disk.
struct Journal {
    inner: Mutex<JournalInner>,
    max: usize,
}

struct JournalInner {
    log: LogFile,
    pending: VecDeque<Pending>,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a settle (synced to disk: it stands for spend the backend has not seen). `false`: it was dropped.
    fn push(&self, p: Pending) -> bool {
        let mut j = self.lock();
        if j.pending.len() >= self.max {
            tracing::error!(target: "weir::kv", max = self.max, "kv journal full: a settle is lost (kv.journal_max)");
            METRICS.kv_journal_dropped.inc();
            return false;
        }
        if let Err(e) = j.log.append(&[&p.encode()]).and_then(|()| j.log.sync()) {
            tracing::error!(target: "weir::kv", "kv journal {}: cannot write, a settle is lost: {e}", j.log.path().display());
            METRICS.kv_journal_dropped.inc();
            return false;
        }
        j.pending.push_back(p);
        METRICS.kv_journal_depth.set(j.pending.len() as i64);
        true
    }
}

fn unavailable(e: &redis::RedisError) -> KvError {
    if e.is_timeout() {
        return KvError::Timeout;
    }
    // The error's text names the failure (connection refused, NOAUTH, ...), never the password.
    KvError::Unavailable(format!("redis: {e}"))
}

impl RedisKv {
    /// Connects lazily (the gateway starts, and serves, while Redis is down) and opens the journal in `journal_dir`.
    pub fn open(c: &RedisKvConfig) -> anyhow::Result<Arc<RedisKv>> {
        let mut info = c.url.as_str().into_connection_info().map_err(|e| anyhow::anyhow!("kv.url: {e}"))?;
        if let Some(env) = &c.password_env {
            let password = std::env::var(env)
                .map_err(|_| anyhow::anyhow!("kv.password_env: environment variable `{env}` is not set"))?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| anyhow::anyhow!("kv.url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(c.timeout))
            .set_response_timeout(Some(c.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = || {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(|e| anyhow::anyhow!("kv: redis client: {e}"))
        };
        let first = manager()?;
        let others = (1..c.pool_size).map(|_| manager()).collect::<Result<Vec<_>, _>>()?;

        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&c.journal_dir).map_err(|e| {
            anyhow::anyhow!("kv.journal {}: cannot create the journal's directory: {e}", c.journal_dir.display())
        })?;
        let opened =
            LogFile::open(&c.journal_dir.join("journal.log")).map_err(|e| anyhow::anyhow!("kv.journal: {e}"))?;
        let pending: VecDeque<Pending> = opened.records.iter().filter_map(|r| Pending::decode(r)).collect();
        if !pending.is_empty() {
            tracing::info!(target: "weir::kv", pending = pending.len(), "kv journal: settles from before the restart will be replayed");
        }
        METRICS.kv_journal_depth.set(pending.len() as i64);
        let kv = Arc::new(RedisKv {
            first,
            others,
            next: AtomicUsize::new(0),
            prefix: c.prefix.clone(),
            timeout: c.timeout,
            increment: Script::new(INCREMENT),
            settle: Script::new(SETTLE),
            batch: Script::new(BATCH),
            journal: Journal { inner: Mutex::new(JournalInner { log: opened.log, pending }), max: c.journal_max },
        });
        tokio::spawn(replay_loop(Arc::downgrade(&kv)));
        Ok(kv)
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % (1 + self.others.len());
        i.checked_sub(1).and_then(|i| self.others.get(i)).unwrap_or(&self.first).clone()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `f` on a connection within the timeout, counting failures.
    async fn run<T, F>(&self, op: &'static str, f: F) -> KvResult<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(KvError::Timeout),
        };
        if r.is_err() {
            METRICS.kv_errors.get_or_create(&KvLabels { backend: "redis", op }).inc();
        }
        r
    }

    /// Applies one settle exactly once (by its marker). `Ok(value after)`.
    async fn apply(&self, p: &Pending) -> KvResult<i64> {
        let mut c = self.conn();
        let mut inv = self.settle.prepare_invoke();
        inv.key(self.key(&p.key))
            .key(format!("{}op:{}", self.prefix, p.id))
            .arg(p.delta)
            .arg(p.ttl_ms)
            .arg(MARKER_TTL_MS);
        let (_, v): (i64, i64) = self.run("settle", inv.invoke_async(&mut c)).await?;
        Ok(v)
    }

    /// Replays the journal in order until it is empty or Redis fails again. Returns how many were applied.
    async fn replay(&self) -> usize {
        let mut applied = 0;
        loop {
            let Some(front) = self.journal.lock().pending.front().cloned() else { break };
            if self.apply(&front).await.is_err() {
                break;
            }
            applied += 1;
            METRICS.kv_journal_replayed.inc();
            let mut j = self.journal.lock();
            if j.pending.front() == Some(&front) {
                j.pending.pop_front();
            }
            METRICS.kv_journal_depth.set(j.pending.len() as i64);
        }
        if applied > 0 {
            let mut j = self.journal.lock();
            // What is left is rewritten (a restart then replays only that; a replay twice would be a no-op anyway).
            let rest: Vec<Vec<u8>> = j.pending.iter().map(Pending::encode).collect();
            let r = if rest.is_empty() { j.log.clear() } else { j.log.rewrite(rest.iter().map(Vec::as_slice)) };
            if let Err(e) = r {
                tracing::warn!(target: "weir::kv", "kv journal: cannot rewrite after a replay (it will be replayed again, as a no-op): {e}");
            }
            tracing::info!(target: "weir::kv", applied, left = j.pending.len(), "kv journal replayed");
        }
        applied
    }

    /// Settles waiting in the journal.
    pub fn journal_depth(&self) -> usize {
        self.journal.lock().pending.len()
    }
}

async fn replay_loop(kv: Weak<RedisKv>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(kv) = kv.upgrade() else { return };
        if kv.journal_depth() > 0 {
            kv.replay().await;
        }
    }
}

impl Kv for RedisKv {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let mut c = self.conn();
            self.run("get", redis::cmd("GET").arg(self.key(key)).query_async::<Option<Vec<u8>>>(&mut c)).await
        })
    }
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(async move {
            let mut c = self.conn();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(value);
            // PX takes a positive 64-bit integer: a longer TTL means none (as in the other backends).
            if let Some(ms) = ttl.and_then(|t| i64::try_from(t.as_millis()).ok()).filter(|ms| *ms > 0) {
                cmd.arg("PX").arg(ms);
            }
            self.run("set", cmd.query_async::<()>(&mut c)).await
        })
    }
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(async move {
            let mut c = self.conn();
            let ttl_ms = ttl.and_then(|t| i64::try_from(t.as_millis()).ok()).unwrap_or(0);
            let mut inv = self.increment.prepare_invoke();
            inv.key(self.key(key)).arg(delta).arg(ttl_ms);
            self.run("increment", inv.invoke_async(&mut c)).await
        })
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, KvResult<()>> {
        Box::pin(async move {
            let mut c = self.conn();
            self.run("delete", redis::cmd("DEL").arg(self.key(key)).query_async::<()>(&mut c)).await
        })
    }
    /// One script, one round trip. A failure (Redis down, a timeout) is the first operation's: whether any was
    /// applied is then unknown, as for a single call that timed out. A settling batch goes one by one: each settle
    /// carries its own exactly-once marker and is journaled alone when Redis cannot take it.
    fn batch<'a>(&'a self, ops: Vec<super::Op>, settle: bool) -> BoxFuture<'a, Vec<KvResult<super::Outcome>>> {
        use super::{Op, Outcome};
        if settle {
            return super::one_by_one(self, ops, settle);
        }
        Box::pin(async move {
            if ops.is_empty() {
                return Vec::new();
            }
            let ms = |ttl: Option<Duration>| ttl.and_then(|t| i64::try_from(t.as_millis()).ok()).unwrap_or(0);
            let mut inv = self.batch.prepare_invoke();
            for op in &ops {
                match op {
                    Op::Get(key) => inv.key(self.key(key)).arg("g"),
                    Op::Set(key, value, ttl) => inv.key(self.key(key)).arg("s").arg(value.as_slice()).arg(ms(*ttl)),
                    Op::Increment(key, delta, ttl) => inv.key(self.key(key)).arg("i").arg(*delta).arg(ms(*ttl)),
                    Op::Delete(key) => inv.key(self.key(key)).arg("d"),
                };
            }
            let mut c = self.conn();
            let replies: Vec<redis::Value> = match self.run("batch", inv.invoke_async(&mut c)).await {
                Ok(r) => r,
                Err(e) => return vec![Err(e)],
            };
            if replies.len() != ops.len() {
                return vec![Err(KvError::Unavailable(format!(
                    "redis: a batch of {} operations answered {}",
                    ops.len(),
                    replies.len()
                )))];
            }
            let mut out = Vec::with_capacity(ops.len());
            for (op, reply) in ops.iter().zip(replies) {
                let r = match (op, reply) {
                    (Op::Get(_), redis::Value::Nil) => Ok(Outcome::Value(None)),
                    (Op::Get(_), redis::Value::BulkString(v)) => Ok(Outcome::Value(Some(v))),
                    (Op::Increment(..), redis::Value::Int(n)) => Ok(Outcome::Count(n)),
                    (Op::Set(..) | Op::Delete(_), _) => Ok(Outcome::Done),
                    // Not its value (it could be anything a plugin stored): only that the shape was wrong.
                    _ => Err(KvError::Unavailable("redis: unexpected reply in a batch".into())),
                };
                let failed = r.is_err();
                out.push(r);
                if failed {
                    break;
                }
            }
            out
        })
    }
    fn settle<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> BoxFuture<'a, KvResult<i64>> {
        Box::pin(async move {
            let ttl_ms = ttl.and_then(|t| u64::try_from(t.as_millis()).ok()).filter(|ms| *ms <= i64::MAX as u64);
            let p = Pending {
                id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
                key: key.to_string(),
                delta,
                ttl_ms: ttl_ms.unwrap_or(0),
            };
            // Settles keep their order: while older ones wait in the journal, a new one queues behind them.
            if self.journal_depth() == 0 {
                match self.apply(&p).await {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        tracing::warn!(target: "weir::kv", "kv settle journaled ({e}); it will be applied once the backend is back")
                    }
                }
            }
            if self.journal.push(p) {
                Err(KvError::Unavailable("kv backend unavailable; the increment was journaled and will be applied exactly once when it is back (do not retry it)".into()))
            } else {
                Err(KvError::Unavailable(
                    "kv backend unavailable and the local journal is full: the increment is lost".into(),
                ))
            }
        })
    }
}
