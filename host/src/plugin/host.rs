//! The host side of one plugin instance: its store data, the capabilities it imports, and its limits.
//!
//! Host functions are tested directly through the generated `Host` traits, without Wasm (see the tests below).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::weir::plugin::{clock, config, kv, log, trace, types};
use super::kv::Kv;

/// Largest stdout/stderr kept per instance; the rest is dropped.
const OUTPUT_CAP: usize = 16 << 10;
/// Extra memory an instance may use per byte of the input it is given (request body, whole answer), beyond its
/// configured cap: a plugin that parses a JSON body keeps the bytes, the parsed tree, and the rewritten body.
pub const MEMORY_PER_INPUT_BYTE: usize = 8;
/// Trace attributes kept per instance.
const MAX_ATTRIBUTES: usize = 64;

/// What an instance knows about its plugin (shared by all its instances).
pub struct PluginContext {
    pub name: String,
    pub config_json: String,
    pub kv: Arc<dyn Kv>,
    pub memory_cap: usize,
}

/// Store data of one instance.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub plugin: Arc<PluginContext>,
    /// The current hook call's budget of guest running time, and what it has used (checked at every epoch tick;
    /// time spent yielded to other requests is not charged).
    pub budget: Duration,
    pub used: Duration,
    /// When the guest last started running (set again each time it resumes after yielding).
    pub running_since: Arc<std::sync::Mutex<Instant>>,
    /// Set when the guest tried to grow past its memory cap.
    pub out_of_memory: bool,
    /// Memory allowed on top of the plugin's cap for the largest input given to this instance
    /// ([`MEMORY_PER_INPUT_BYTE`] per byte).
    pub memory_allowance: usize,
    /// `trace` attributes set by the guest, namespaced.
    pub attributes: Vec<(String, String)>,
    /// `trace` events added by the guest (namespaced names), with when.
    pub events: Vec<(String, Instant)>,
    /// The guest's stdout and stderr.
    pub output: MemoryOutputPipe,
}

impl State {
    /// A deny-all WASI context: no preopened directories, no sockets, no environment, no arguments; stdout and
    /// stderr go to a bounded buffer that the gateway logs.
    pub fn new(plugin: Arc<PluginContext>) -> State {
        let output = MemoryOutputPipe::new(OUTPUT_CAP);
        let wasi = WasiCtxBuilder::new().stdout(output.clone()).stderr(output.clone()).build();
        State {
            wasi,
            table: ResourceTable::new(),
            plugin,
            budget: Duration::from_secs(3600),
            used: Duration::ZERO,
            running_since: Arc::new(std::sync::Mutex::new(Instant::now())),
            out_of_memory: false,
            memory_allowance: 0,
            attributes: Vec::new(),
            events: Vec::new(),
            output,
        }
    }

    /// Lets this instance grow by [`MEMORY_PER_INPUT_BYTE`] per byte of `input` beyond its cap (a plugin that
    /// parses a large body holds a few copies of it), never below what an earlier input allowed.
    pub fn allow_input(&mut self, input: usize) {
        self.memory_allowance = self.memory_allowance.max(input.saturating_mul(MEMORY_PER_INPUT_BYTE));
    }

    /// Starts a hook call with this budget of guest running time.
    pub fn start_call(&mut self, budget: Duration) {
        self.budget = budget;
        self.used = Duration::ZERO;
        *self.running_since.lock().unwrap() = Instant::now();
    }

    fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.plugin.name)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.plugin.memory_cap.saturating_add(self.memory_allowance) {
            self.out_of_memory = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let plugin = self.plugin.name.as_str();
        match level {
            log::Level::Debug => tracing::debug!(target: "weir::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "weir::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "weir::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "weir::plugin", plugin, "{message}"),
        }
    }
}

impl config::Host for State {
    fn get_json(&mut self) -> String {
        self.plugin.config_json.clone()
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl kv::Host for State {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.plugin.kv.get(&self.key(&key))
    }
    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) {
        self.plugin.kv.set(&self.key(&key), value, ttl(ttl_ms))
    }
    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> i64 {
        self.plugin.kv.increment(&self.key(&key), delta, ttl(ttl_ms))
    }
    fn delete(&mut self, key: String) {
        self.plugin.kv.delete(&self.key(&key))
    }
}

impl trace::Host for State {
    fn set_attribute(&mut self, key: String, value: String) {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push((format!("weir.plugin.{}.{key}", self.plugin.name), value));
        }
    }
    fn add_event(&mut self, name: String) {
        tracing::debug!(target: "weir::plugin", plugin = %self.plugin.name, event = %name, "plugin trace event");
        if self.events.len() < MAX_ATTRIBUTES {
            self.events.push((format!("weir.plugin.{}.{name}", self.plugin.name), Instant::now()));
        }
    }
}

impl clock::Host for State {
    fn now_unix_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
    fn monotonic_ns(&mut self) -> u64 {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        START.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::kv::MemoryKv;

    fn state(name: &str, kv: Arc<dyn Kv>) -> State {
        State::new(Arc::new(PluginContext {
            name: name.into(),
            config_json: r#"{"a":1}"#.into(),
            kv,
            memory_cap: 1 << 20,
        }))
    }

    #[test]
    fn kv_is_namespaced_per_plugin() {
        let kv: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        let mut a = state("a", kv.clone());
        let mut b = state("b", kv.clone());
        kv::Host::set(&mut a, "k".into(), b"1".to_vec(), None);
        assert_eq!(kv::Host::get(&mut b, "k".into()), None, "b cannot see a's keys");
        assert_eq!(kv::Host::increment(&mut a, "n".into(), 5, None), 5);
        assert_eq!(kv::Host::increment(&mut b, "n".into(), 1, None), 1);
        assert_eq!(kv.get("a/k").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn config_trace_and_memory_cap() {
        let mut s = state("p", Arc::new(MemoryKv::default()));
        assert_eq!(config::Host::get_json(&mut s), r#"{"a":1}"#);
        trace::Host::set_attribute(&mut s, "verdict".into(), "ok".into());
        assert_eq!(s.attributes, [("weir.plugin.p.verdict".to_string(), "ok".to_string())]);
        assert!(s.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!s.memory_growing(0, (1 << 20) + 65536, None).unwrap());
        assert!(s.out_of_memory);
    }
}
