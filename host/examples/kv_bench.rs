//! What one `kv` operation costs on each backend, in process: `cargo run --release -p weir --example kv_bench --
//! [redis://127.0.0.1:6379/0]` (bench/state.sh runs it with a private redis-server). Prints a Markdown table:
//! per operation, the median and p99 of sequential calls, and the throughput of 8 concurrent tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::config::{KvConfig, RedisKvConfig};
use weir::plugin::kv::{self, Kv};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

async fn measure(name: &str, kv: Arc<dyn Kv>, n: usize) {
    let value = vec![b'x'; 128];
    let ops: [(&str, usize); 3] = [("increment", 0), ("get", 1), ("set (128 B)", 2)];
    for (op, which) in ops {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let key = format!("bench/k{}", i % 64);
            let t = Instant::now();
            match which {
                0 => drop(kv.increment(&key, 1, Some(Duration::from_secs(60))).await),
                1 => drop(kv.get(&key).await),
                _ => drop(kv.set(&key, value.clone(), Some(Duration::from_secs(60))).await),
            }
            times.push(t.elapsed());
        }
        let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
        let t = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let kv = kv.clone();
                tokio::spawn(async move {
                    for i in 0..n / 8 {
                        let _ = kv.increment(&format!("bench/c{w}-{}", i % 16), 1, None).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        let rate = (n / 8 * 8) as f64 / t.elapsed().as_secs_f64();
        println!("| {name} | {op} | {p50:.1} | {p99:.1} | {rate:.0} |");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let redis = std::env::args().nth(1);
    let dir = std::env::temp_dir().join(format!("weir-kv-bench-{}", std::process::id()));
    println!("| backend | operation | sequential p50 (µs) | p99 (µs) | 8 tasks, increments/s |");
    println!("|---|---|---|---|---|");
    measure("memory", kv::open(&KvConfig::Memory)?, 20_000).await;
    let file = KvConfig::File { dir: dir.join("interval"), sync_every: Duration::from_millis(100) };
    measure("file (fdatasync every 100 ms)", kv::open(&file)?, 20_000).await;
    let strict = KvConfig::File { dir: dir.join("always"), sync_every: Duration::ZERO };
    measure("file (fdatasync before every ack)", kv::open(&strict)?, 2_000).await;
    if let Some(url) = redis {
        let c = RedisKvConfig {
            url,
            password_env: None,
            prefix: "bench:".into(),
            pool_size: 4,
            timeout: Duration::from_millis(500),
            journal_dir: dir.join("journal"),
            journal_max: 1000,
        };
        measure("redis (loopback)", kv::open(&KvConfig::Redis(c))?, 5_000).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
