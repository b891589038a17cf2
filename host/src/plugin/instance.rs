//! The lifecycle of one plugin's instance within one request: the only module that decides whether an instance
//! may be entered.
//!
//! ```text
//!   Idle ──first hook──► Live (fresh from the InstancePre, or warm from the plugin's pool)
//!                          │ a hook call is in flight: `busy`
//!                          ├─ call returns ──────────────► Live (usable again)
//!                          ├─ call fails (trap, deadline, ► Failed   (the request's failure, counted)
//!                          │  error, invalid decision)
//!                          └─ future dropped mid-call ───► Poisoned (a cancellation, never counted)
//!   Live ──on-request──────► InFlight (the call is owned by the slot: a hang-up cannot stop it half-way)
//!                          └─ call returns ──► Live (or Failed)
//!   Idle ──quarantined────► Skipped (never called in this request)
//!   end of request: a usable Live goes back to the pool (warm reuse only); anything else is dropped
//! ```
//!
//! `on-request` calls are *shielded*: the call's future is kept in the slot (the request polls it from there) and
//! gives the instance back when done; a request dropped mid-call leaves it there and the completion phase finishes
//! it. So a client that hangs up during `on-request` cannot stop the call half-way — a plugin's
//! multi-step effects there (a budget reservation over several counters) happen entirely or not at all, and its
//! `on-complete` runs on the same instance, with the request's state. Other hooks run inline (they are per event and
//! must stay cheap); if one of those is dropped half-way, the instance is poisoned as below.
//!
//! A store whose call was dropped at an await point (the client went away while the guest had yielded at an epoch
//! tick) cannot be entered again (wasmtime answers `CannotEnterComponent`). That is not the plugin's fault: the
//! chain never calls such an instance again, never returns it to the pool, and runs `on-complete` for that plugin
//! on a fresh instance instead ([`Slot::complete_on`]). The same holds for an instance that failed: its own store
//! may be dead, but its `on-complete` is still owed (a reservation made before the failure must be settled).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use wasmtime::Store;

use super::contract::{Bindings, HookResult};
use super::host::State;
use super::types::RequestDecision;

/// What a shielded `on-request` call hands back: the instance and the call's result.
pub type Shielded = (Box<Live>, HookResult<RequestDecision>);

/// A live instance: its store and bindings, and whether a hook call is in flight.
pub struct Live {
    pub store: Store<State>,
    pub bindings: Bindings,
    /// Set while a hook call runs; still set afterwards only if the call's future was dropped mid-way.
    busy: bool,
}

impl Live {
    pub fn new(store: Store<State>, bindings: Bindings) -> Live {
        Live { store, bindings, busy: false }
    }

    /// Marks a hook call as started; [`Live::end_call`] when it returns. A call whose future is dropped in between
    /// leaves the instance marked, and the chain then treats it as poisoned.
    pub fn begin_call(&mut self) {
        self.busy = true;
    }

    pub fn end_call(&mut self) {
        self.busy = false;
    }

    /// Logs what the guest wrote to stdout/stderr.
    pub fn drain_output(&self, plugin: &str) {
        let Some(output) = &self.store.data().output else { return };
        let out = output.contents();
        if !out.is_empty() {
            for line in String::from_utf8_lossy(&out).lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(target: "weir::plugin", plugin, "guest output: {line}");
            }
        }
    }
}

/// One plugin's instance in one request.
pub enum Slot {
    /// Not instantiated yet.
    Idle,
    Live(Box<Live>),
    /// A call was dropped mid-way (cancellation): the store cannot be entered. Not a failure.
    Poisoned,
    /// Failed in this request: not called again (but owed `on-complete`, on a fresh instance).
    Failed,
    /// Quarantined when this request reached it: never called.
    Skipped,
    /// A shielded `on-request` call, owned here so that it outlives a dropped request: polled by the request, or
    /// finished by the completion phase when the request was dropped mid-call. It gives the instance back.
    InFlight(std::pin::Pin<Box<dyn std::future::Future<Output = Shielded> + Send>>),
}

/// What to run a plugin's `on-complete` on.
pub enum CompleteOn<'a> {
    /// Its own instance, which holds the request's state.
    Own(&'a mut Live),
    /// A fresh instance: its own is poisoned or failed (or was never created although its `on-request` started).
    Fresh,
    /// Nothing: the plugin never started in this request.
    Nothing,
}

impl Slot {
    /// The live instance, if it can be entered. An instance left busy by a dropped call becomes poisoned here.
    pub fn usable(&mut self) -> Option<&mut Live> {
        if matches!(self, Slot::Live(l) if l.busy) {
            *self = Slot::Poisoned;
        }
        match self {
            Slot::Live(l) => Some(l),
            _ => None,
        }
    }

    /// Where `on-complete` runs, for a plugin whose `on-request` did (`started`) or did not start.
    pub fn complete_on(&mut self, started: bool) -> CompleteOn<'_> {
        if !started {
            return CompleteOn::Nothing;
        }
        if matches!(self, Slot::Skipped) {
            return CompleteOn::Nothing;
        }
        match self.usable() {
            Some(live) => CompleteOn::Own(live),
            None => CompleteOn::Fresh,
        }
    }

    /// The instance, when it may go back to a warm pool: live and not left mid-call.
    pub fn into_reusable(mut self) -> Option<Box<Live>> {
        self.usable();
        match self {
            Slot::Live(l) => Some(l),
            _ => None,
        }
    }
}
