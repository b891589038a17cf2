//! The lifecycle of one plugin's instance within one request: where it comes from ([`acquire`], [`fresh`]), whether
//! it may be entered ([`Slot`]), where it goes after the request ([`Slot::release`]), and the reserve of fresh
//! instances made off the request path ([`refill`]). The chain drives it; this module decides.
//!
//! ```text
//!   Idle ──first hook──► Live (reused from the plugin's pool when its isolation allows it for this request's
//!                          │   tenant, `super::pool`; else fresh: from the plugin's reserve, made by `refill`
//!                          │   after an earlier request, or instantiated now)
//!                          │ a hook call is in flight: `busy`
//!                          ├─ call returns ──────────────► Live (usable again)
//!                          ├─ call fails (trap, deadline, ► Failed   (the request's failure, counted)
//!                          │  error, invalid decision)
//!                          └─ future dropped mid-call ───► Poisoned (a cancellation, never counted)
//!   Live ──on-request──────► InFlight (the call is owned by the slot: a hang-up cannot stop it half-way)
//!                          ├─ call returns ──► Live (or Failed)
//!                          └─ request dropped ──► the completion phase finishes the call (`settle`): Live, or
//!                                                 Failed when it trapped
//!   Idle ──quarantined────► Skipped (never called in this request)
//!   end of request (`release`): a usable Live goes back to the pool if its isolation and limits allow; anything
//!   else is dropped
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

use std::sync::Arc;
use std::time::Duration;

use super::contract::{Bindings, HookResult};
use super::hook::{Hook, InstanceSource};
use super::host::{PluginContext, RequestSnapshot, State};
use super::pool::Owner;
use super::registry::{LoadedPlugin, PluginSet};
use super::types::{Principal, RequestDecision};

/// What a shielded `on-request` call hands back: the instance and the call's result.
pub type Shielded = (Box<Live>, HookResult<RequestDecision>);

/// A live instance: its store and bindings, and whether a hook call is in flight.
pub struct Live {
    pub store: Store<State>,
    pub bindings: Bindings,
    /// Set while a hook call runs; still set afterwards only if the call's future was dropped mid-way.
    busy: bool,
    /// Who it may serve after this request ([`super::pool`]).
    pub owner: Owner,
    /// Requests it has been given (a reused instance retires after `reuse.max_requests`).
    pub requests: u32,
}

impl Live {
    /// An instance made (instantiated, `init` run): until its first hook, nothing of it runs.
    pub fn new(mut store: Store<State>, bindings: Bindings) -> Live {
        super::host::stop_ticking(&mut store);
        Live { store, bindings, busy: false, owner: Owner::Nobody, requests: 0 }
    }

    /// Clears what belonged to the request it served, before it waits for another: its trace records (the chain
    /// took them) and the memory allowance for that request's input.
    pub fn ready_for_reuse(&mut self) {
        let data = self.store.data_mut();
        data.attributes.clear();
        data.events.clear();
        data.memory_allowance = 0;
        data.kv_log = None;
        super::host::stop_ticking(&mut self.store);
    }

    /// Starts a call of `hook` given `input` bytes of input: its memory allowance and deadline grow with the input
    /// ([`super::chain::DEADLINE_PER_MIB`]).
    pub fn start_hook(&mut self, settings: &crate::config::PluginSettings, hook: Hook, input: usize) {
        self.store.data_mut().allow_input(input);
        let deadline = hook.deadline_for(settings, input, super::chain::DEADLINE_PER_MIB);
        super::host::start_call(&mut self.store, hook, deadline);
    }

    /// Marks a hook call as started; [`Live::end_call`] when it returns. A call whose future is dropped in between
    /// leaves the instance marked, and the chain then treats it as poisoned.
    pub fn begin_call(&mut self) {
        self.busy = true;
    }

    pub fn end_call(&mut self) {
        self.busy = false;
        super::host::stop_ticking(&mut self.store);
    }

    /// Logs what the guest wrote to stdout/stderr.
    pub fn drain_output(&mut self, plugin: &str) {
        let data = self.store.data_mut();
        let Some(output) = &data.output else { return };
        let out = output.contents();
        let new = out.get(data.output_logged..).unwrap_or_default();
        data.output_logged = out.len();
        for line in String::from_utf8_lossy(new).lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "weir::plugin", plugin, "guest output: {line}");
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

    /// Ends the slot with its request, whose principal was `principal` at the end: a healthy instance goes back to
    /// `p`'s pool if its isolation and limits allow ([`super::pool::Pool::put`]), after its guest output is logged;
    /// anything else is dropped (its pool slot is reset).
    pub fn release(self, p: &LoadedPlugin, principal: Option<&Principal>) {
        if let Some(mut live) = self.into_reusable() {
            live.drain_output(&p.name);
            p.pool.put(*live, principal);
        }
    }

    /// Runs `on-request` on the live instance as a future owned by this slot, and waits for it. If the waiting
    /// future is dropped meanwhile (the client went away), the call stays here, part-way, and the completion phase
    /// finishes it ([`Slot::settle`]) before `on-complete`: a hang-up cannot stop it half-way. (Owning the call
    /// rather than spawning a task for it saves a task and a cross-thread wake-up per plugin per request:
    /// BENCHMARKS.md.) `None`: the slot held no live instance.
    pub async fn shielded_on_request(&mut self, req: &Arc<RequestSnapshot>) -> Option<Shielded> {
        let Slot::Live(mut live) = std::mem::replace(self, Slot::Idle) else { return None };
        let req = req.clone();
        *self = Slot::InFlight(Box::pin(async move {
            let result = live.bindings.on_request(&mut live.store, &req).await;
            super::host::stop_ticking(&mut live.store);
            (live, result)
        }));
        let Slot::InFlight(call) = self else { return None };
        let done = call.await;
        *self = Slot::Idle;
        Some(done)
    }

    /// Finishes an `on-request` call left in flight by a dropped request. The instance comes back `Live` when the
    /// call completed (even with the plugin's own error: its state is intact), and the slot is `Poisoned` when it
    /// trapped: then the instance and the error are returned, for the chain to describe and count the failure.
    pub async fn settle(&mut self) -> Option<(Box<Live>, wasmtime::Error)> {
        if !matches!(self, Slot::InFlight(_)) {
            return None;
        }
        let Slot::InFlight(call) = std::mem::replace(self, Slot::Poisoned) else { return None };
        match call.await {
            (live, Ok(_)) => {
                *self = Slot::Live(live);
                None
            }
            (live, Err(e)) => Some((live, e)),
        }
    }
}

/// An instance of `p` for a request about to call it, given `input` bytes of input, whose principal is
/// `principal` at this point: an idle instance the request may have by `p`'s isolation ([`super::pool`]), else one
/// from the reserve of fresh instances, else one instantiated now. `Err`: why not, in words.
pub async fn acquire(p: &LoadedPlugin, input: usize, principal: Option<&Principal>) -> Result<Live, String> {
    let owner = Owner::for_request(p.isolation, principal);
    let (mut live, source) = match p.pool.take(&owner) {
        Some(live) => (live, InstanceSource::Reused),
        None => match p.take_ready() {
            Some(live) => (live, InstanceSource::Reserve),
            None => (fresh(p, input).await?, InstanceSource::New),
        },
    };
    p.metrics.instance(source);
    live.owner = owner;
    live.requests += 1;
    Ok(live)
}

/// A fresh instance of `p` from its pre-linked component, instantiated under `deadline` and allowed memory for
/// `input` bytes of input. `Err`: why not, in words.
pub async fn fresh(p: &LoadedPlugin, input: usize) -> Result<Live, String> {
    fresh_in(p, input, p.context.clone()).await
}

/// [`fresh`] with a context of the caller's (a shadow version's run: a kv of its own per request).
pub async fn fresh_in(p: &LoadedPlugin, input: usize, context: Arc<PluginContext>) -> Result<Live, String> {
    let mut store = p.engine.store(context);
    store.data_mut().allow_input(input);
    // Instantiation and `init` have a budget of their own; the hook then gets its own deadline.
    super::host::start_call(&mut store, Hook::Init, Hook::Init.deadline(&p.settings));
    let bindings = match p.pre.instantiate(&mut store).await {
        Ok(b) => b,
        Err(e) => return Err(describe(&e, &store, Hook::Init, p)),
    };
    if p.preinitialized {
        return Ok(Live::new(store, bindings));
    }
    match bindings.init(&mut store, &p.context.config_json).await {
        Ok(Ok(())) => Ok(Live::new(store, bindings)),
        Ok(Err(e)) => Err(format!("init returned an error: {e}")),
        Err(e) => Err(describe(&e, &store, Hook::Init, p)),
    }
}

/// Why a call failed, in words (the failure is the plugin's, never the gateway's).
pub fn describe(e: &wasmtime::Error, store: &Store<State>, hook: Hook, p: &LoadedPlugin) -> String {
    if store.data().out_of_memory {
        let cap = p.settings.memory + store.data().memory_allowance;
        return format!("exceeded its memory limit of {} MiB", cap >> 20);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            let ms = Duration::from_millis(store.data().budget.as_millis() as u64);
            format!("exceeded its {} deadline of {ms:?}", hook.name())
        }
        Some(wasmtime::Trap::StackOverflow) => "overflowed its stack".to_string(),
        Some(t) => format!("trapped: {t}"),
        None => format!("failed: {e:#}"),
    }
}

/// Tops up each plugin's reserve of fresh instances (see [`super::registry::READY_INSTANCES`]), and drops its idle
/// instances past their idle time ([`super::pool::Pool::sweep`]). Instances in the reserve never ran a hook for any
/// request; the reserve only moves instantiation off the request's path.
pub async fn refill(set: Arc<PluginSet>) {
    for p in &set.plugins {
        p.pool.sweep();
        while p.wants_ready() {
            let Ok(live) = fresh(p, 0).await else { break };
            if !p.put_ready(live) {
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::config::{Isolation, PluginSettings};
    use crate::plugin::registry::{READY_INSTANCES, testing};

    fn plugin(isolation: Isolation) -> Arc<LoadedPlugin> {
        testing::load("life", "misbehave", PluginSettings { isolation: Some(isolation), ..PluginSettings::default() })
    }

    #[tokio::test]
    async fn a_call_left_busy_poisons_the_instance_and_on_complete_goes_to_a_fresh_one() {
        let p = plugin(Isolation::Request);
        let mut slot = Slot::Live(Box::new(acquire(&p, 0, None).await.unwrap()));
        assert!(slot.usable().is_some());
        slot.usable().unwrap().begin_call();
        // The call's future was dropped before `end_call`: the store cannot be entered again.
        assert!(slot.usable().is_none());
        assert!(matches!(slot, Slot::Poisoned));
        assert!(matches!(slot.complete_on(true), CompleteOn::Fresh));
        assert!(matches!(slot.complete_on(false), CompleteOn::Nothing), "never started: nothing owed");
        assert!(slot.into_reusable().is_none(), "never back to a pool");
        assert!(matches!(Slot::Failed.complete_on(true), CompleteOn::Fresh));
        assert!(matches!(Slot::Skipped.complete_on(true), CompleteOn::Nothing));
        assert!(matches!(Slot::Idle.complete_on(true), CompleteOn::Fresh), "started but never instantiated");
    }

    #[tokio::test]
    async fn a_live_instance_completes_on_itself_and_goes_back_only_to_a_warm_pool() {
        let fresh_only = plugin(Isolation::Request);
        let mut slot = Slot::Live(Box::new(acquire(&fresh_only, 0, None).await.unwrap()));
        assert!(matches!(slot.complete_on(true), CompleteOn::Own(_)));
        slot.release(&fresh_only, None);
        assert_eq!(fresh_only.pool.idle(), 0, "fresh per request: dropped");

        let shared = plugin(Isolation::Shared);
        let mut live = acquire(&shared, 0, None).await.unwrap();
        assert_eq!((&live.owner, live.requests), (&Owner::Anyone, 1));
        live.store.data_mut().attributes.push(("weir.plugin.life.k".into(), "v".into()));
        Slot::Live(Box::new(live)).release(&shared, None);
        assert_eq!(shared.pool.idle(), 1, "kept for reuse");
        let again = acquire(&shared, 0, None).await.unwrap();
        assert_eq!(again.requests, 2, "the same instance");
        assert!(again.store.data().attributes.is_empty(), "nothing of the last request's trace carries over");
        assert_eq!(shared.pool.idle(), 0);
        // Never back to the pool after a failure, nor after a call cut short.
        Slot::Failed.release(&shared, None);
        let mut cut = Box::new(again);
        cut.begin_call();
        Slot::Live(cut).release(&shared, None);
        assert_eq!(shared.pool.idle(), 0);
    }

    #[tokio::test]
    async fn the_reserve_fills_up_to_its_size_and_requests_take_from_it() {
        let p = plugin(Isolation::Request);
        assert!(p.take_ready().is_none());
        refill(testing::set(vec![p.clone()])).await;
        let mut taken = 0;
        while p.take_ready().is_some() {
            taken += 1;
        }
        assert_eq!(taken, READY_INSTANCES);
        // A plugin that reuses instances keeps a reserve too, for requests that find no idle instance of theirs.
        let w = plugin(Isolation::Tenant);
        refill(testing::set(vec![w.clone()])).await;
        assert!(w.take_ready().is_some());
    }

    /// A request for the `misbehave` guest, asking it to do `misbehave` (nothing when empty).
    fn request(misbehave: &'static str) -> Arc<RequestSnapshot> {
        let mut headers = http::HeaderMap::new();
        if !misbehave.is_empty() {
            headers.insert("x-misbehave", http::HeaderValue::from_static(misbehave));
        }
        Arc::new(RequestSnapshot::new(
            "req_test".into(),
            crate::api::Family::OpenAi,
            crate::api::Endpoint::ChatCompletions,
            "m".into(),
            false,
            Arc::new(headers),
            bytes::Bytes::from_static(b"{}"),
            None,
            Vec::new(),
        ))
    }

    #[tokio::test]
    async fn the_ticker_runs_only_while_a_call_may_run_and_a_spin_after_a_quiet_spell_still_stops() {
        let p = plugin(Isolation::Shared);
        let ticking = || p.engine.ticker().calls();
        let mut live = acquire(&p, 0, None).await.unwrap();
        assert_eq!(ticking(), 0, "an instance made and waiting for its first hook");
        live.start_hook(&p.settings, Hook::OnRequest, 0);
        assert_eq!(ticking(), 1);
        let mut slot = Slot::Live(Box::new(live));
        let (live, result) = slot.shielded_on_request(&request("")).await.unwrap();
        assert!(result.is_ok());
        assert_eq!(ticking(), 0, "the call returned");
        Slot::Live(live).release(&p, None);
        assert_eq!((p.pool.idle(), ticking()), (1, 0), "an idle instance in the pool does not keep it running");

        // The ticker has parked; a guest that spins from the first instruction of its call is still stopped at its
        // deadline (the start of the call wakes the ticker), and the failed instance counts no more.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut live = acquire(&p, 0, None).await.unwrap();
        super::super::host::start_call(&mut live.store, Hook::OnRequest, Duration::from_millis(30));
        let started = std::time::Instant::now();
        let mut slot = Slot::Live(Box::new(live));
        let (live, result) = slot.shielded_on_request(&request("loop")).await.unwrap();
        let e = result.expect_err("the spin is interrupted");
        assert!(matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(5), "stopped by the deadline, {:?}", started.elapsed());
        drop(live);
        assert_eq!(ticking(), 0);
    }

    #[tokio::test]
    async fn a_shielded_call_finishes_even_when_its_request_stops_waiting() {
        let p = plugin(Isolation::Request);
        let mut slot = Slot::Live(Box::new(acquire(&p, 0, None).await.unwrap()));
        let req = request("loop");
        if let Slot::Live(live) = &mut slot {
            super::super::host::start_call(&mut live.store, Hook::OnRequest, Duration::from_millis(30));
        }
        let waited = tokio::time::timeout(Duration::from_millis(5), slot.shielded_on_request(&req)).await;
        assert!(waited.is_err());
        assert!(matches!(slot, Slot::InFlight(_)));
        // The spin ends at its deadline: a trap, handed back with the instance for the chain to describe.
        let (live, e) = slot.settle().await.expect("the call trapped");
        assert!(matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)), "{e:#}");
        assert!(describe(&e, &live.store, Hook::OnRequest, &p).starts_with("exceeded its on-request deadline"));
        assert!(matches!(slot, Slot::Poisoned));
        assert!(Slot::Idle.settle().await.is_none(), "nothing in flight");
    }
}
