//! The contract's hooks as one type: what the chain calls, what a deadline is for, what metrics and spans are
//! labelled with, and which optional hooks a component declares. Every other place names a hook through [`Hook`];
//! the metrics' label order, the span names and the declaration bits all come from here.

use std::time::Duration;

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::config::PluginSettings;
use crate::telemetry::metrics::{InstanceLabels, METRICS, PluginLabels};

/// A hook of the contract, or the instantiation (and `init`) of a fresh instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    OnRequest,
    OnChunk,
    Flush,
    OnComplete,
    /// Instantiation and `init` of a fresh instance (counted with `on-request` in the call metrics, since it is
    /// time the request's `on-request` waits for).
    Init,
}

impl Hook {
    /// The hooks that have call metrics of their own, in their index order ([`Hook::counted`]).
    pub const COUNTED: [Hook; 4] = [Hook::OnRequest, Hook::OnChunk, Hook::Flush, Hook::OnComplete];

    /// The hook's name in the WIT, in metrics labels, span names and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::OnRequest => "on-request",
            Hook::OnChunk => "on-chunk",
            Hook::Flush => "flush",
            Hook::OnComplete => "on-complete",
            Hook::Init => "init",
        }
    }

    /// The hook whose call metrics count this one: [`Hook::Init`] counts as `on-request`.
    pub const fn counted(self) -> Hook {
        match self {
            Hook::Init => Hook::OnRequest,
            h => h,
        }
    }

    /// The configured deadline of this hook for plugin settings `s`.
    pub fn deadline(self, s: &PluginSettings) -> Duration {
        let t = &s.timeouts;
        match self {
            Hook::OnRequest => t.on_request,
            Hook::OnChunk | Hook::Flush => t.on_chunk,
            Hook::OnComplete => t.on_complete,
            Hook::Init => t.init,
        }
    }

    /// The deadline for a call given `input` bytes: the configured one plus `per_mib` per MiB of input.
    pub fn deadline_for(self, s: &PluginSettings, input: usize, per_mib: Duration) -> Duration {
        self.deadline(s).saturating_add(time_for(input, per_mib))
    }

    const fn index(self) -> usize {
        match self.counted() {
            Hook::OnChunk => 1,
            Hook::Flush => 2,
            Hook::OnComplete => 3,
            _ => 0,
        }
    }
}

/// The optional hooks a plugin implements; `on-request` is always called. A 0.3.0 component declares them in its
/// `manifest`; an older one in its `weir:hooks` custom section (written by the 0.2.0 Rust SDK's `export!`): one byte,
/// bit [`Hooks::CHUNK_BITS`] for `on-chunk` and `flush`, bit [`Hooks::COMPLETE_BITS`] for `on-complete`. An older
/// component without the section (Python, JavaScript, other toolchains) gets every hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub chunks: bool,
    pub flush: bool,
    pub complete: bool,
}

impl Hooks {
    pub const ALL: Hooks = Hooks { chunks: true, flush: true, complete: true };
    /// The section's bit for `on-chunk` and `flush` (the 0.2.0 SDK's `Hooks::CHUNKS`).
    pub const CHUNK_BITS: u8 = 1;
    /// The section's bit for `on-complete` (the 0.2.0 SDK's `Hooks::COMPLETE`).
    pub const COMPLETE_BITS: u8 = 2;

    /// The hooks the section's bits declare.
    pub fn from_bits(bits: u8) -> Hooks {
        let chunks = bits & Self::CHUNK_BITS != 0;
        Hooks { chunks, flush: chunks, complete: bits & Self::COMPLETE_BITS != 0 }
    }

    /// The declaration in `bytes` (a component; its core modules are searched too), or [`Hooks::ALL`].
    pub fn declared(bytes: &[u8]) -> Hooks {
        let mut bits = None::<u8>;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(wasmparser::Payload::CustomSection(c)) if c.name() == "weir:hooks" => {
                    *bits.get_or_insert(0) |= c.data().iter().fold(0, |a, b| a | b);
                }
                Ok(_) => {}
                Err(_) => return Hooks::ALL,
            }
        }
        bits.map_or(Hooks::ALL, Hooks::from_bits)
    }

    /// Whether the plugin implements `hook`.
    pub fn calls(self, hook: Hook) -> bool {
        match hook {
            Hook::OnRequest | Hook::Init => true,
            Hook::OnChunk => self.chunks,
            // `flush` releases text held back in `on-chunk`: without `on-chunk` there is none.
            Hook::Flush => self.chunks && self.flush,
            Hook::OnComplete => self.complete,
        }
    }

    /// As shown by `weir plugin check` and `/admin/plugins`.
    pub fn names(self) -> Vec<&'static str> {
        Hook::COUNTED.into_iter().filter(|h| self.calls(*h)).map(Hook::name).collect()
    }
}

/// The extra guest time `input` bytes are given: `per_mib` per MiB (a body, an answer, a value read from kv).
pub fn time_for(input: usize, per_mib: Duration) -> Duration {
    Duration::from_nanos(per_mib.as_nanos() as u64 * input as u64 / (1 << 20))
}

/// Metric handles for one loaded plugin, one per [`Hook::COUNTED`], created once so a hook call costs a few atomic
/// increments.
#[derive(Debug)]
pub struct HookMetrics {
    calls: [Counter; 4],
    failures: [Counter; 4],
    seconds: [Histogram; 4],
    /// Instances given to requests, by [`InstanceSource`].
    instances: [Counter; 3],
}

/// Where a request's instance came from (`weir_plugin_instances_total{source}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceSource {
    /// An idle instance, reused (isolation `tenant` or `shared`).
    Reused = 0,
    /// A fresh instance made ahead of need.
    Reserve = 1,
    /// A fresh instance made on the request's path.
    New = 2,
}

impl InstanceSource {
    const ALL: [InstanceSource; 3] = [InstanceSource::Reused, InstanceSource::Reserve, InstanceSource::New];

    fn label(self) -> &'static str {
        match self {
            InstanceSource::Reused => "reused",
            InstanceSource::Reserve => "reserve",
            InstanceSource::New => "new",
        }
    }
}

impl HookMetrics {
    pub fn new(plugin: &str) -> HookMetrics {
        let m = &*METRICS;
        let labels = |h: Hook| PluginLabels { plugin: plugin.to_string(), hook: h.name() };
        HookMetrics {
            calls: Hook::COUNTED.map(|h| m.plugin_calls.get_or_create_owned(&labels(h))),
            failures: Hook::COUNTED.map(|h| m.plugin_failures.get_or_create_owned(&labels(h))),
            seconds: Hook::COUNTED.map(|h| m.plugin_seconds.get_or_create_owned(&labels(h))),
            instances: InstanceSource::ALL.map(|s| {
                m.plugin_instances
                    .get_or_create_owned(&InstanceLabels { plugin: plugin.to_string(), source: s.label() })
            }),
        }
    }

    /// Counts one instance given to a request.
    pub fn instance(&self, source: InstanceSource) {
        if let Some(c) = self.instances.get(source as usize) {
            c.inc();
        }
    }

    /// Counts one call of `hook` that took `took`.
    pub fn call(&self, hook: Hook, took: Duration) {
        if let (Some(c), Some(s)) = (self.calls.get(hook.index()), self.seconds.get(hook.index())) {
            c.inc();
            s.observe(took.as_secs_f64());
        }
    }

    /// Counts one failure in `hook`.
    pub fn failure(&self, hook: Hook) {
        if let Some(f) = self.failures.get(hook.index()) {
            f.inc();
        }
    }
}

/// Counts one pause of a plugin's guest code at an epoch tick, in `hook`. Rare by design (at most one per tick of
/// guest time), so the label lookup is not on any hot path.
pub fn count_yield(plugin: &str, hook: Hook) {
    METRICS.plugin_yields.get_or_create(&PluginLabels { plugin: plugin.to_string(), hook: hook.name() }).inc();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_counted_hook_has_its_own_metrics_slot_and_init_counts_as_on_request() {
        let idx: Vec<usize> = Hook::COUNTED.iter().map(|h| h.index()).collect();
        assert_eq!(idx, [0, 1, 2, 3]);
        assert_eq!(Hook::Init.index(), Hook::OnRequest.index());
        let m = HookMetrics::new("hook-unit-test");
        m.call(Hook::Init, Duration::from_micros(5));
        m.call(Hook::OnComplete, Duration::from_micros(5));
        m.failure(Hook::Flush);
        let text = METRICS.encode();
        let line = |hook: &str, metric: &str| {
            text.lines()
                .find(|l| l.starts_with(metric) && l.contains("plugin=\"hook-unit-test\"") && l.contains(hook))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(line("hook=\"on-request\"", "weir_plugin_calls_total").as_deref(), Some("1"));
        assert_eq!(line("hook=\"on-complete\"", "weir_plugin_calls_total").as_deref(), Some("1"));
        assert_eq!(line("hook=\"flush\"", "weir_plugin_failures_total").as_deref(), Some("1"));
        assert_eq!(line("hook=\"on-chunk\"", "weir_plugin_failures_total").as_deref(), Some("0"));
    }

    #[test]
    fn declared_bits_decide_which_hooks_are_called() {
        let none = Hooks::from_bits(0);
        assert_eq!(none.names(), ["on-request"]);
        assert!(none.calls(Hook::Init) && !none.calls(Hook::Flush) && !none.calls(Hook::OnComplete));
        let chunks = Hooks::from_bits(Hooks::CHUNK_BITS);
        assert_eq!(chunks.names(), ["on-request", "on-chunk", "flush"]);
        let complete = Hooks::from_bits(Hooks::COMPLETE_BITS);
        assert_eq!(complete.names(), ["on-request", "on-complete"]);
        assert_eq!(Hooks::from_bits(Hooks::CHUNK_BITS | Hooks::COMPLETE_BITS), Hooks::ALL);
        assert_eq!(Hooks::ALL.names(), Hook::COUNTED.map(Hook::name));
    }

    #[test]
    fn deadlines_grow_with_the_input() {
        let s = PluginSettings::default();
        let per_mib = Duration::from_millis(100);
        assert_eq!(Hook::OnRequest.deadline_for(&s, 0, per_mib), s.timeouts.on_request);
        assert_eq!(Hook::OnRequest.deadline_for(&s, 2 << 20, per_mib), s.timeouts.on_request + 2 * per_mib);
        assert_eq!(Hook::Flush.deadline(&s), s.timeouts.on_chunk);
        assert_eq!(Hook::Init.deadline(&s), s.timeouts.init);
    }
}
