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
