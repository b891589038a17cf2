//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through every fuzz target, then a batch of random mutations of
//! it (byte flips, inserts, deletes, duplicated and spliced ranges) for a couple of seconds per target: a quick,
//! deterministic-per-seed check in `make test` that what libFuzzer found once stays fixed. Coverage-guided fuzzing
//! is `make fuzz` (cargo-fuzz, `fuzz/`).
//!
//! An input that panics is written to `target/fuzz-failures/<target>-<n>` before the test fails, so it can be added
//! to the corpus and replayed with `cargo fuzz run <target> <file>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mutation time per target (`WEIR_FUZZ_SECS` overrides; 0 replays the corpus only).
fn budget() -> Duration {
    let secs = std::env::var("WEIR_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..=4) {
        let n = v.len();
        match rng.u8(..6) {
            0 if n > 0 => {
                let i = rng.usize(..n);
                v[i] ^= 1 << rng.u8(..8);
            }
            1 => {
                let i = rng.usize(..=n);
                let b = *rng.choice(b"\n\r:{}[]\",\\0 data: event: \x00\xff".iter()).unwrap();
                v.insert(i, b);
            }
            2 if n > 0 => {
                let a = rng.usize(..n);
                let b = rng.usize(a..=n.min(a + 64));
                v.drain(a..b);
            }
            3 if n > 0 => {
                let a = rng.usize(..n);
                let b = rng.usize(a..=n.min(a + 64));
                let piece = v[a..b].to_vec();
                let at = rng.usize(..=v.len());
                v.splice(at..at, piece);
            }
            4 if n > 0 => v.truncate(rng.usize(..n)),
            _ => {
                let other = &seeds[rng.usize(..seeds.len())];
                if !other.is_empty() {
                    let a = rng.usize(..other.len());
                    let at = rng.usize(..=v.len());
                    v.splice(at..at, other[a..].iter().copied().take(256));
                }
            }
        }
    }
    v
}

fn run_guarded(name: &str, f: fn(&[u8]), input: &[u8], n: usize) {
    if let Err(p) = std::panic::catch_unwind(|| f(input)) {
        let dir = root().join("target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{n}"));
        std::fs::write(&file, input).unwrap();
        eprintln!("fuzz target `{name}` panicked; input saved to {}", file.display());
        std::panic::resume_unwind(p);
    }
}

#[test]
fn corpus_and_mutations_never_panic() {
    let seed = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    for (name, f) in weir::fuzz::TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
        for (i, input) in seeds.iter().enumerate() {
            run_guarded(name, f, input, i);
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let start = Instant::now();
        let mut runs = 0;
        while start.elapsed() < budget() {
            let input = mutate(&mut rng, &seeds);
            run_guarded(name, f, &input, seeds.len() + runs);
            runs += 1;
        }
        println!("{name}: {} corpus inputs, {runs} mutations (seed {seed:#x})", seeds.len());
    }
}
