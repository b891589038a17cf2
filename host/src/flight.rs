//! Single flight (`request.coalesce` in the plugin contract): identical concurrent requests — the same key, given by
//! a plugin during `on-request` — make one upstream call. The first request with a key is the leader; requests with
//! that key that arrive while it runs wait (bounded) for its answer as the client got it, and are answered with it as
//! a cached reply. A leader that fails, is cut, is cancelled or whose answer is over the capture cap publishes
//! nothing: its followers each go on by themselves.
//!
//! Keys live in one process: replicas coalesce each their own requests (a shared cache then serves the rest).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::sync::Locked;

/// A leader's answer as its client got it.
#[derive(Debug)]
pub struct Shared {
    pub status: u16,
    /// Streamed (the bytes are framed events) or whole.
    pub stream: bool,
    pub bytes: Bytes,
}

/// What a follower waits on: `None` until the leader publishes; the sender dropped without publishing means the
/// leader had nothing to share.
type Slot = watch::Sender<Option<Arc<Shared>>>;

/// Flights in progress, by key, with a generation so a leader removes only its own flight.
static FLIGHTS: LazyLock<Mutex<HashMap<String, (u64, Slot)>>> = LazyLock::new(Mutex::default);
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The first request of a key: it publishes its answer (or nothing) when it ends; dropped without publishing, its
/// followers go on by themselves.
#[derive(Debug)]
pub struct Leader {
    key: String,
    generation: u64,
    tx: Slot,
}

/// A request that waits on a leader.
pub struct Follower(watch::Receiver<Option<Arc<Shared>>>);

pub enum Join {
    Leader(Leader),
    Follower(Follower),
}

/// Joins the flight of `key`: the leader if none is in progress, else a follower.
pub fn join(key: String) -> Join {
    let mut flights = FLIGHTS.locked();
    // A flight is in the map from its leader's join to its leader's end (`Drop` removes it).
    if let Some((_, tx)) = flights.get(&key) {
        return Join::Follower(Follower(tx.subscribe()));
    }
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // No receiver yet: followers subscribe from the sender in the map.
    let (tx, _) = watch::channel(None);
    flights.insert(key.clone(), (generation, tx.clone()));
    Join::Leader(Leader { key, generation, tx })
}

impl Leader {
    /// Ends the flight with the leader's answer (`None`: nothing to share).
    pub fn publish(self, answer: Option<Shared>) {
        if let Some(a) = answer {
            let _ = self.tx.send(Some(Arc::new(a)));
        }
        // Drop: removes the flight; followers that saw no answer go on by themselves.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = FLIGHTS.locked();
        if flights.get(&self.key).is_some_and(|(g, _)| *g == self.generation) {
            flights.remove(&self.key);
        }
    }
}

impl Follower {
    /// The leader's answer, waiting at most `wait`; `None` if it had none, ended without one, or took too long.
    pub async fn answer(mut self, wait: Duration) -> Option<Arc<Shared>> {
        let got = tokio::time::timeout(wait, self.0.wait_for(Option::is_some)).await.ok()?.ok()?;
        got.clone()
    }
}

/// Flights in progress (for tests).
pub fn in_flight() -> usize {
    FLIGHTS.locked().len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_answer_or_go_on() {
        let Join::Leader(leader) = join("k1".into()) else { panic!("first is the leader") };
        let Join::Follower(f1) = join("k1".into()) else { panic!("second follows") };
        let Join::Follower(f2) = join("k1".into()) else { panic!("third follows") };
        let waiting = tokio::spawn(f1.answer(Duration::from_secs(5)));
        leader.publish(Some(Shared { status: 200, stream: false, bytes: Bytes::from_static(b"{}") }));
        assert_eq!(waiting.await.unwrap().unwrap().bytes, Bytes::from_static(b"{}"));
        assert_eq!(f2.answer(Duration::from_secs(5)).await.unwrap().status, 200, "a late follower still sees it");
        let Join::Leader(again) = join("k1".into()) else { panic!("the flight ended: a new leader") };
        let Join::Follower(f3) = join("k1".into()) else { panic!() };
        drop(again);
        assert!(f3.answer(Duration::from_secs(5)).await.is_none(), "a leader that ends without an answer");
        let Join::Leader(slow) = join("k2".into()) else { panic!() };
        let Join::Follower(f4) = join("k2".into()) else { panic!() };
        assert!(f4.answer(Duration::from_millis(20)).await.is_none(), "bounded wait");
        drop(slow);
        assert!(!FLIGHTS.lock().unwrap().contains_key("k2"));
    }
}
