//! Mutexes on the request path: a panic elsewhere while a lock was held must not turn every later request into a
//! panic too, so a poisoned lock is taken as it is (every value kept behind these locks is valid after any partial
//! update: counters, lists, the last error).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub trait Locked<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a share of events, spread evenly: the n-th event is taken when ⌊n·rate⌋ grows, so a rate of 0.1 takes
/// exactly one event in ten (a shadow version's sample, recorded fixtures).
#[derive(Default)]
pub struct Sampler {
    seen: std::sync::atomic::AtomicU64,
}

impl Sampler {
    /// Whether this event is taken, at `rate` (0 to 1).
    pub fn take(&self, rate: f64) -> bool {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }
}
