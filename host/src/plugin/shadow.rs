//! Shadow versions: a candidate dropped into the watched directory as `NAME.shadow.wasm` runs beside the live
//! version of plugin `NAME` on a sample of live requests (`shadow_sample`, from `NAME.shadow.toml` or else
//! `NAME.toml`), and its decisions are compared with the live ones — its effects never reach a request.
//!
//! - It sees the same hooks with the same inputs and the same state: `on-request` with the request as the live
//!   version sees it (after the plugins before it), `on-chunk` with each piece of the answer as the live version
//!   sees it, each called just *before* the live version's call, so both read the same kv state; `on-complete` with
//!   the same summary (and the answer, if granted), after the live version's.
//! - Its effects are discarded: its decisions are compared and dropped; what it asks through the request resource
//!   (response headers, a coalescing key) goes to a request view of its own; its kv writes go to a scratch map of
//!   this request's ([`super::kv::scratch::Scratch`], namespace `NAME.shadow/`) while its reads see the live
//!   version's keys. The scratch map lives for one request: a shadow runs on a sample, so state it kept across
//!   requests would drift from the live version's and make every later decision differ for that reason alone.
//! - It runs on a fresh instance per sampled request, never pooled, so a sampled request pays its hook time (that
//!   is what the sample bounds). A shadow that fails (traps, times out, cannot be
//!   instantiated) is counted as a difference of kind `failed` and not called again in that request; nothing of it
//!   reaches the client.
//! - Differences are counted per decision in `on-request` (labelled by the shadow's decision: `reject` when it
//!   would have refused what the live version let through), once per request for `on-chunk`, and `failed`. Counted
//!   in `weir_plugin_shadow_{requests,differences}_total{plugin,kind}` and shown in `GET /admin/plugins`
//!   (`shadows`).
//!
//! Text a plugin holds and releases at the end of a stream (`flush`) is compared as part of the answer.
//!
//! Promotion is a rename: `NAME.shadow.wasm` → `NAME.wasm` (the watcher swaps the live version in as usual).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::chain::{chunk_label, judge, request_label};
use super::contract::AnswerOf;
use super::hook::Hook;
use super::host::{PluginContext, RequestSnapshot};
use super::instance::Live;
use super::kv::scratch::Scratch;
use super::kv::{Capped, Kv};
use super::registry::LoadedPlugin;
use super::types::{self, ChunkDecision, RequestDecision};
use crate::telemetry::metrics::{METRICS, ShadowLabels};

/// The file stem suffix that makes a component a shadow version: `NAME.shadow.wasm`.
pub const SUFFIX: &str = ".shadow";

/// A loaded shadow version of one plugin, with its counts.
pub struct Shadow {
    /// Its component, loaded under the name `NAME.shadow` (logs, hook metrics) with `NAME`'s kv seen through a
    /// scratch map.
    pub plugin: Arc<LoadedPlugin>,
    /// The live plugin's name.
    pub of: String,
    /// The live plugin's kv (capped, within its quota), which each run's scratch map reads through.
    live_kv: Arc<dyn Kv>,
    /// Requests offered to the sample, and those it ran on.
    sample: crate::sync::Sampler,
    requests: AtomicU64,
    differences: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shadow {
    pub fn new(plugin: Arc<LoadedPlugin>, of: &str, live_kv: Arc<dyn Kv>) -> Shadow {
        Shadow {
            plugin,
            of: of.to_string(),
            live_kv,
            sample: crate::sync::Sampler::default(),
            requests: AtomicU64::new(0),
            differences: Mutex::default(),
        }
    }

    fn sample(&self) -> f64 {
        self.plugin.settings.shadow_sample
    }

    /// Whether the request being set up runs the shadow (spread evenly: a rate of 0.1 takes one request in ten).
    pub fn sampled(&self) -> bool {
        self.sample.take(self.sample())
    }

    fn ran(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        METRICS.shadow_requests.get_or_create(&ShadowLabels { plugin: self.of.clone(), kind: "on-request" }).inc();
    }

    fn differ(&self, kind: &'static str) {
        *self.differences.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(kind).or_default() += 1;
        METRICS.shadow_differences.get_or_create(&ShadowLabels { plugin: self.of.clone(), kind }).inc();
    }

    /// The context of one run: the component's, with a scratch kv of its own.
    fn context(&self) -> Arc<PluginContext> {
        let c = &self.plugin.context;
        let scratch = Arc::new(Scratch::new(self.live_kv.clone(), &c.name, &self.of));
        let max = self.plugin.settings.kv_max_value.unwrap_or(super::kv::MAX_VALUE);
        Arc::new(PluginContext {
            name: c.name.clone(),
            config_json: c.config_json.clone(),
            kv: Arc::new(Capped::new(scratch, max)),
            memory_cap: c.memory_cap,
            events: Default::default(),
            events_warned: Default::default(),
        })
    }

    /// Its entry in `GET /admin/plugins` (`shadows`); `live`: the version it runs beside, if `NAME` is loaded.
    pub fn admin(&self, live: Option<&str>) -> serde_json::Value {
        let differences = self.differences.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        json!({
            "of": self.of,
            "version": self.plugin.version,
            "source": self.plugin.source,
            "live_version": live,
            "sample": self.sample(),
            "requests": self.requests.load(Ordering::Relaxed),
            "differences": differences,
            "hooks": self.plugin.hooks.names(),
        })
    }
}

/// One request's run of one shadow.
pub struct ShadowRun {
    shadow: Arc<Shadow>,
    state: Run,
    /// Its decision on the request, until the live version's is there to compare.
    request: Option<RequestDecision>,
    /// Its decision on the current piece of the answer, likewise.
    chunk: Option<ChunkDecision>,
    /// The text it released at the end of a stream (`flush`), likewise.
    held: Option<String>,
    /// Its answer differed already in this request (`on-chunk` differences count once per request).
    chunk_differed: bool,
}

enum Run {
    /// `on-request` has not reached it.
    Idle,
    Live(Box<Live>),
    /// Failed in this request (counted), or not started: not called again.
    Out,
}

impl ShadowRun {
    pub fn new(shadow: Arc<Shadow>) -> ShadowRun {
        ShadowRun { shadow, state: Run::Idle, request: None, chunk: None, held: None, chunk_differed: false }
    }

    fn failed(&mut self, hook: Hook, msg: &str) {
        let p = &self.shadow.plugin;
        tracing::info!(target: "weir::plugin", plugin = %p.name, version = %p.version, hook = hook.name(),
            "shadow failed (the request is not affected): {msg}");
        self.shadow.differ("failed");
        self.state = Run::Out;
    }

    /// Runs `on-request` on a fresh instance with `req` (the request the live version is about to be given); its
    /// decision waits for [`ShadowRun::compare_request`].
    pub async fn on_request(&mut self, req: &RequestSnapshot) {
        if !matches!(self.state, Run::Idle) {
            return;
        }
        self.shadow.ran();
        let p = self.shadow.plugin.clone();
        let input = req.body.len();
        let mut instance = match super::instance::fresh_in(&p, input, self.shadow.context()).await {
            Ok(l) => Box::new(l),
            Err(msg) => return self.failed(Hook::OnRequest, &format!("could not be instantiated: {msg}")),
        };
        instance.start_hook(&p.settings, Hook::OnRequest, input);
        let own = Arc::new(req.for_shadow());
        let result = instance.bindings.on_request(&mut instance.store, &own).await;
        match judge(result, &instance.store, Hook::OnRequest, &p) {
            Ok(decision) => {
                self.request = Some(decision);
                self.state = Run::Live(instance);
            }
            Err(f) => self.failed(Hook::OnRequest, &f.message),
        }
    }

    /// Compares its decision on the request with the live version's (`None`: the live version failed).
    pub fn compare_request(&mut self, live: Option<&RequestDecision>) {
        let Some(decision) = self.request.take() else { return };
        if live != Some(&decision) {
            self.shadow.differ(request_label(&decision));
        }
    }

    /// Runs `on-chunk` with `chunk` (the piece of the answer the live version is about to be given); its decision
    /// waits for [`ShadowRun::compare_chunk`].
    pub async fn on_chunk(&mut self, chunk: &types::Chunk) {
        let Run::Live(instance) = &mut self.state else { return };
        let p = self.shadow.plugin.clone();
        if !p.hooks.calls(Hook::OnChunk) {
            self.chunk = Some(ChunkDecision::Pass);
            return;
        }
        let input = if chunk.whole_body { chunk.data.len() } else { 0 };
        instance.start_hook(&p.settings, Hook::OnChunk, input);
        let result = instance.bindings.on_chunk(&mut instance.store, chunk).await;
        match judge(result, &instance.store, Hook::OnChunk, &p) {
            Ok(d) => self.chunk = Some(d),
            Err(f) => self.failed(Hook::OnChunk, &f.message),
        }
    }

    /// Compares its decision on a piece of the answer with the live version's (`None`: the live version was not
    /// called, or failed: as if it passed). An answer differs once per request.
    pub fn compare_chunk(&mut self, live: Option<&ChunkDecision>) {
        let Some(decision) = self.chunk.take() else { return };
        if live.unwrap_or(&ChunkDecision::Pass) != &decision {
            tracing::debug!(target: "weir::plugin", plugin = %self.shadow.plugin.name, shadow = chunk_label(&decision),
                live = live.map_or("pass", chunk_label), "shadow's answer differs");
            self.answer_differs();
        }
    }

    /// Its answer differs from the live version's: counted once per request.
    fn answer_differs(&mut self) {
        if !self.chunk_differed {
            self.chunk_differed = true;
            self.shadow.differ("on-chunk");
        }
    }

    /// Runs `flush` at the end of a stream of text (when the live version's is about to run); what it releases
    /// waits for [`ShadowRun::compare_flush`].
    pub async fn flush(&mut self, stream: types::TextStream) {
        let Run::Live(instance) = &mut self.state else { return };
        let p = self.shadow.plugin.clone();
        if !p.hooks.calls(Hook::Flush) {
            self.held = Some(String::new());
            return;
        }
        instance.start_hook(&p.settings, Hook::Flush, 0);
        let result = instance.bindings.flush(&mut instance.store, stream).await;
        match judge(result, &instance.store, Hook::Flush, &p) {
            Ok(held) => self.held = Some(held.unwrap_or_default()),
            Err(f) => self.failed(Hook::Flush, &f.message),
        }
    }

    /// Compares the text it released at the end of a stream with the live version's: a different text is a
    /// different answer (`on-chunk`, once per request).
    pub fn compare_flush(&mut self, live: Option<&str>) {
        let Some(held) = self.held.take() else { return };
        if held != live.unwrap_or_default() {
            self.answer_differs();
        }
    }

    /// Runs `on-complete` on its instance (its kv writes stay in its scratch map), given the answer when granted.
    pub async fn on_complete(mut self, summary: &types::Summary, answer: Option<&AnswerOf>, answer_len: usize) {
        let Run::Live(mut instance) = std::mem::replace(&mut self.state, Run::Out) else { return };
        let p = self.shadow.plugin.clone();
        if !p.hooks.calls(Hook::OnComplete) {
            return;
        }
        let reads_answer = p.settings.capabilities.contains(&crate::config::Capability::Answer);
        let input = if reads_answer { answer_len } else { 0 };
        let data = instance.store.data_mut();
        data.settling = true;
        if reads_answer {
            data.answer = answer.cloned();
        }
        let t0 = Instant::now();
        instance.start_hook(&p.settings, Hook::OnComplete, input);
        let result = instance.bindings.on_complete(&mut instance.store, summary).await;
        if let Err(f) = judge(result.map(Ok), &instance.store, Hook::OnComplete, &p) {
            self.failed(Hook::OnComplete, &f.message);
        }
        p.metrics.call(Hook::OnComplete, t0.elapsed());
        instance.drain_output(&p.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginSettings;
    use crate::plugin::registry::testing;

    #[test]
    fn a_sample_takes_its_share_of_requests_evenly() {
        for (rate, of, want) in [(0.1, 100, 10), (0.25, 40, 10), (1.0, 7, 7), (0.0, 50, 0), (0.5, 9, 4)] {
            let settings = PluginSettings { shadow_sample: rate, ..PluginSettings::default() };
            let s = Shadow::new(
                testing::load("s", "misbehave", settings),
                "s",
                Arc::new(super::super::kv::MemoryKv::default()),
            );
            let taken = (0..of).filter(|_| s.sampled()).count();
            assert_eq!(taken, want, "rate {rate} over {of}");
        }
    }
}
