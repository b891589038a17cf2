//! The wasmtime engine for plugins: one per process. Pooling allocator, epoch interruption (a 1 ms ticker thread
//! that runs only while a guest call may be running, [`Ticker`]),
//! compiled components cached on disk by content hash and engine settings, one linker with every host import and
//! a deny-all WASI 0.2, and the load-time checks (exports, imports versus granted capabilities).

use crate::sync::Locked;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::contract::{self, CURRENT, PACKAGE, Pre, VERSIONS};
use super::hook::{Hook, Hooks};
use super::host::{PluginContext, State};
use crate::config::{Capability, PluginRuntime};

/// Epoch tick: the granularity of hook deadlines and of yielding to other requests.
const TICK: Duration = Duration::from_millis(1);

/// Per pool slot, what is reset in place rather than unmapped (see `PluginEngine::new`).
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLE: usize = 256 << 10;
const KEEP_RESIDENT_STACK: usize = 64 << 10;

/// Shared engine state.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: PathBuf,
    /// Hash of the engine settings that compiled artifacts depend on.
    compat: u64,
    /// Fresh instances held in the plugins' reserves (`registry::READY_INSTANCES`), and how many the pool can spare
    /// for them: a quarter of `max_instances`, so reserves never take the slots requests need.
    reserved: std::sync::atomic::AtomicUsize,
    reserve_cap: usize,
    ticker: Arc<Ticker>,
}

/// Wakes the epoch ticker only while some store has a call that may be running: an idle gateway does not wake up
/// a thousand times a second (it did: ~1.9% of a core and ~900 context switches a second with nothing to do).
///
/// [`super::host::start_call`] marks its store as ticking (one count per store, [`Ticking`]) and wakes the ticker
/// if it was parked; the count goes when the call is over ([`super::host::stop_ticking`]: an instance made, a hook
/// returned, an instance put back in its pool) or when the store is dropped. The error can only go one way: a call
/// site that forgets to stop leaves the ticker running (today's cost), never a guest without deadline checks.
/// After a wake-up the first tick comes one full tick later, so a call's first deadline check is never early.
#[derive(Default)]
pub struct Ticker {
    calls: std::sync::atomic::AtomicUsize,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// Counts one store as ticking until the returned guard is dropped, and wakes the ticker thread.
    pub fn enter(self: &Arc<Self>) -> Ticking {
        use std::sync::atomic::{Ordering::SeqCst, fence};
        if self.calls.fetch_add(1, SeqCst) == 0 {
            // Pairs with the fence in `run`: either this sees the thread, or the thread sees this count.
            fence(SeqCst);
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Ticking(self.clone())
    }

    /// Stores counted as ticking now.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The thread's loop: a tick per [`TICK`] while any store ticks, parked otherwise (waking once a second to see
    /// whether the engine is gone). A call that starts before the thread registered itself is seen by the thread's
    /// first check, so it never waits for the one-second wake-up.
    fn run(&self, engine: wasmtime::EngineWeak) {
        let _ = self.thread.set(std::thread::current());
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        loop {
            while self.calls() == 0 {
                std::thread::park_timeout(Duration::from_secs(1));
                if engine.upgrade().is_none() {
                    return;
                }
            }
            std::thread::sleep(TICK);
            let Some(engine) = engine.upgrade() else { return };
            engine.increment_epoch();
        }
    }
}

/// One store counted as ticking ([`Ticker::enter`]).
pub struct Ticking(Arc<Ticker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A component compiled, checked and linked, ready to instantiate.
pub struct Compiled {
    pub pre: Pre,
    /// Hex SHA-256 of the `.wasm` bytes.
    pub hash: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Whether the compiled artifact came from the disk cache.
    pub cached: bool,
    pub compile_time: Duration,
    /// The optional hooks the component declares it implements.
    pub hooks: Hooks,
}

/// Whether this process's memory can be swapped out, and why (read through `read`, a file reader): any swap device
/// in `/proc/swaps`, unless the process's cgroup (v2) has `memory.swap.max` of 0. What cannot be read counts as
/// swappable: the safe answer.
fn swap_possible(read: impl Fn(&str) -> Option<String>) -> (bool, String) {
    let Some(swaps) = read("/proc/swaps") else { return (true, "/proc/swaps is not readable".into()) };
    let devices: Vec<&str> = swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    if devices.is_empty() {
        return (false, "no swap device in /proc/swaps".into());
    }
    let cgroup = read("/proc/self/cgroup").and_then(|c| {
        c.lines().find_map(|l| l.strip_prefix("0::").map(|p| p.trim().trim_end_matches('/').to_string()))
    });
    if let Some(path) = cgroup
        && let Some(max) = read(&format!("/sys/fs/cgroup{path}/memory.swap.max"))
        && max.trim() == "0"
    {
        return (false, format!("swap devices exist ({}) but this cgroup's memory.swap.max is 0", devices.join(", ")));
    }
    (true, format!("swap devices: {}", devices.join(", ")))
}

/// Logs which slot-reset path the engine uses, once per process.
fn note_reset_path((swap, why): &(bool, String)) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if *swap {
            tracing::warn!(
                target: "weir::plugin",
                "plugin slot reset: memset, not PAGEMAP_SCAN ({why}): wasmtime 48.0.8 can miss a swapped-out dirty \
                 page with PAGEMAP_SCAN; resets cost more CPU until a fixed wasmtime is in use"
            );
        } else {
            tracing::debug!(target: "weir::plugin", "plugin slot reset: PAGEMAP_SCAN where the kernel has it ({why})");
        }
    });
}

/// Wizer's view of an initialized instance: it reads memories and globals through exports it added. A failed read
/// is remembered (the snapshot is then refused) rather than panicking.
struct Snapshotting<'a> {
    store: &'a mut Store<State>,
    instance: wasmtime::component::Instance,
    failed: Option<String>,
}

impl Snapshotting<'_> {
    async fn call<R>(&mut self, instance: &str, func: &str) -> Option<R>
    where
        R: wasmtime::component::ComponentType + wasmtime::component::Lift + Send + Sync + 'static,
    {
        let found = self
            .instance
            .get_export_index(&mut *self.store, None, instance)
            .and_then(|i| self.instance.get_export_index(&mut *self.store, Some(&i), func));
        let result = match found {
            None => Err(format!("no export {instance}#{func}")),
            Some(f) => match self.instance.get_typed_func::<(), (R,)>(&mut *self.store, f) {
                Err(e) => Err(format!("{instance}#{func}: {e:#}")),
                Ok(f) => f
                    .call_async(&mut *self.store, ())
                    .await
                    .map(|r| r.0)
                    .map_err(|e| format!("{instance}#{func}: {e:#}")),
            },
        };
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed.get_or_insert(e);
                None
            }
        }
    }
}

impl wasmtime_wizer::ComponentInstanceState for Snapshotting<'_> {
    async fn call_func_ret_list_u8(&mut self, instance: &str, func: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.call::<wasmtime::component::WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }
    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await.unwrap_or(0)
    }
    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await.unwrap_or(0)
    }
    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.map_or(0, f32::to_bits)
    }
    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.map_or(0, f64::to_bits)
    }
}

/// Why a component cannot be loaded. Messages say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "imports `{import}`, which is neither {PACKAGE} (0.3.0, 0.2.0 or 0.1.0) nor WASI 0.2; plugins cannot reach anything else"
    )]
    ForeignImport { import: String },
    #[error("imports `{import}` but the `{capability}` capability is not granted (add it to `capabilities`)")]
    NotGranted { import: String, capability: &'static str },
    #[error(
        "uses `{found}`; this gateway accepts {PACKAGE}@0.3.0, @0.2.0 and @0.1.0, one version per component (rebuild the plugin against this gateway's wit/)"
    )]
    WrongVersion { found: String },
    #[error("does not export `{PACKAGE}/hooks@{CURRENT}` (it exports: {exports}); build it against the `plugin` world")]
    NoHooks { exports: String },
    #[error("failed its smoke test: {0}")]
    Smoke(String),
    #[error("refused its config: init returned an error: {0}")]
    Init(String),
    #[error(
        "its settings ask for `isolation = \"{asked}\"`, but the component (weir:plugin@{version}) declares it may be reused at most as `{declared}`{hint}"
    )]
    Isolation { asked: &'static str, declared: &'static str, version: &'static str, hint: &'static str },
}

impl PluginEngine {
    pub fn new(rt: &PluginRuntime) -> anyhow::Result<Arc<PluginEngine>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = rt.max_instances.max(8);
        // Python and JavaScript guests need many core instances, tables and table elements per component.
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_memory_size(rt.max_memory)
            .table_elements(200_000)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(16)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20);
        // Resetting a slot for the next instance without `madvise`: with PAGEMAP_SCAN (Linux 6.7+; `Auto` falls back
        // to memset of the low addresses elsewhere) only the pages the last instance dirtied are copied back from
        // the image, up to these sizes; the pages stay mapped. `madvise(DONTNEED)` instead unmaps them, which on a
        // multi-threaded gateway costs a TLB shootdown (an interrupt to every core running it) per reset and a page
        // fault per page on the next instance: a third of the gateway's CPU with four plugins (perf, BENCHMARKS.md).
        // The single-threaded `weir plugin bench` does not show it (no other cores to interrupt).
        //
        // Except where memory can be swapped: wasmtime 48.0.8's PAGEMAP_SCAN reset skips a dirty page that was swapped
        // out, so the next instance in the slot could read the last request's data (fixed upstream in 48.0.11 /
        // 50.0.3 / 51.0.0, PR #14357, which do not resolve from the registry yet: `make wasmtime-fix` says when one
        // does). There the reset falls back to memset, which resets every kept-resident byte.
        let swap = swap_possible(|p| std::fs::read_to_string(p).ok());
        let pagemap = if swap.0 { wasmtime::Enabled::No } else { wasmtime::Enabled::Auto };
        note_reset_path(&swap);
        pool.pagemap_scan(pagemap)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .async_stack_keep_resident(KEEP_RESIDENT_STACK);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .concurrency_support(false)
            .memory_reservation(rt.max_memory as u64)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // For profiling only: `WEIR_PERF_MAP=1` has wasmtime write /tmp/perf-<pid>.map, so that `perf report` names
        // the guest's functions (build plugins with `strip = false` to keep their names). Off by default.
        if std::env::var_os("WEIR_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("plugin engine: {e}"))?;

        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        contract::link(&mut linker)?;

        // The ticker drives every store's deadline checks; it holds only a weak handle so it ends with the engine.
        let ticker = Arc::new(Ticker::default());
        let (weak, thread_ticker) = (engine.weak(), ticker.clone());
        std::thread::Builder::new().name("weir-epoch".into()).spawn(move || thread_ticker.run(weak))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let cache_dir = match rt.cache_dir.clone().or_else(default_cache_dir) {
            Some(d) => d,
            None => anyhow::bail!(
                "plugin_runtime.cache_dir: no HOME or XDG_CACHE_HOME to put the compiled-plugin cache in; set \
                 cache_dir to a directory only this user can write (the gateway loads native code from it)"
            ),
        };
        // The default directory is the gateway's own: one left readable by others (by an older version) is tightened;
        // a configured one must already be 0700.
        secure_cache_dir(&cache_dir, rt.cache_dir.is_none())?;
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            cache_dir,
            compat: h.finish(),
            reserved: Default::default(),
            reserve_cap: n as usize / 4,
            ticker,
        }))
    }

    /// The epoch ticker (tests look at whether it would run).
    #[cfg(test)]
    pub fn ticker(&self) -> &Ticker {
        &self.ticker
    }

    /// Takes one place for a reserved fresh instance, if the pool can spare it ([`PluginEngine::unreserve`] gives
    /// it back).
    pub fn reserve(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.reserve_cap).then_some(n + 1))
            .is_ok()
    }

    /// Whether a reserve could take one more instance now.
    pub fn reserve_room(&self) -> bool {
        self.reserved.load(std::sync::atomic::Ordering::Relaxed) < self.reserve_cap
    }

    pub fn unreserve(&self, n: usize) {
        self.reserved.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Compiles (or loads from the cache), checks exports and imports against `granted`, and links.
    pub fn compile(&self, bytes: &[u8], granted: &[Capability]) -> Result<Compiled, LoadError> {
        let started = Instant::now();
        let hash = hex(&Sha256::digest(bytes));
        let (component, cached) = self.compile_cached(bytes, &hash)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let Some(version) = VERSIONS.iter().copied().find(|v| exports.contains(&format!("{PACKAGE}/hooks@{v}"))) else {
            if let Some(other) = exports.iter().find(|e| e.starts_with(&format!("{PACKAGE}/hooks@"))) {
                return Err(LoadError::WrongVersion { found: other.clone() });
            }
            return Err(LoadError::NoHooks { exports: exports.join(", ") });
        };
        check_imports(&imports, granted, version)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid(format!("{e:#}"));
        let pre = Pre::new(version, pre).map_err(invalid)?;
        let hooks = Hooks::declared(bytes);
        Ok(Compiled { pre, hash, imports, exports, cached, compile_time: started.elapsed(), hooks })
    }

    /// Pre-initializes a 0.2.0 component: runs `init(config)` once, in an instrumented copy instantiated under the
    /// plugin's limits and `budget`, and returns the component rewritten with the state `init` left (wasmtime-wizer:
    /// memories and globals become its initial state). Fresh instances of the result start initialized.
    pub async fn preinitialize(
        &self,
        bytes: &[u8],
        context: Arc<PluginContext>,
        budget: Duration,
    ) -> Result<Vec<u8>, String> {
        let wizer = wasmtime_wizer::Wizer::new();
        let (cx, instrumented) = wizer.instrument_component(bytes).map_err(|e| format!("instrumenting: {e:#}"))?;
        let hash = hex(&Sha256::digest(&instrumented));
        let (component, _) = self.compile_cached(&instrumented, &hash).map_err(|e| e.to_string())?;
        let mut store = self.store(context.clone());
        super::host::start_call(&mut store, Hook::Init, budget);
        let instance =
            self.linker.instantiate_async(&mut store, &component).await.map_err(|e| format!("instantiating: {e:#}"))?;
        contract::init_instance(&mut store, &instance, &context.config_json).await?;
        let mut state = Snapshotting { store: &mut store, instance, failed: None };
        let snapshot = wizer.snapshot_component(&cx, &mut state).await.map_err(|e| format!("snapshot: {e:#}"))?;
        match state.failed {
            Some(e) => Err(format!("snapshot: {e}")),
            None => Ok(snapshot),
        }
    }

    /// A compiled component, from the cache when this exact file was compiled by this engine before. Only
    /// artifacts the gateway wrote itself (in its cache directory, named by hash) are ever deserialized.
    fn compile_cached(&self, bytes: &[u8], hash: &str) -> Result<(Component, bool), LoadError> {
        let path = self.cache_dir.join(format!("{hash}-{:016x}.cwasm", self.compat));
        if path.exists() {
            // SAFETY: the file is a `Component::serialize` output written by this gateway (atomically, below),
            // for these exact bytes and engine settings (both are in its name).
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled plugin cache entry")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Err(e) = self.write_cache(&path, &component) {
            tracing::warn!(dir = %self.cache_dir.display(), error = %e, "cannot cache the compiled plugin");
            return Ok((component, false));
        }
        // Served from the file just written, as after a restart: its memory images are then mapped from that file
        // (copy-on-write) rather than copied into a sealed memfd per image. A fresh memfd's seals were refused now
        // and then on a loaded machine ("cannot add seals to the memfd"), failing a first load in CI; a cached load
        // never needs one.
        // SAFETY: as above — the file was written by this gateway, just now, from this component.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(c) => Ok((c, false)),
            Err(_) => Ok((component, false)),
        }
    }

    fn write_cache(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cache_dir)?;
        let data = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// A store for one instance, with its memory cap and deadline handling. At every epoch tick the guest's
    /// running time since it last resumed is charged to the call; over budget, the call traps; otherwise the guest
    /// yields to the tokio scheduler, so a busy plugin never holds a worker thread for more than one tick.
    ///
    /// What is charged is the guest's own time, not the scheduler's: time spent yielded is not charged (wasmtime
    /// sets the next deadline after the yield completes), and one stretch between two ticks is charged at most two
    /// ticks, so a quick hook that the OS happened to preempt on a loaded machine is not blamed for it. A guest that
    /// really spins is charged about one tick per tick and stops within a tick or two of its budget.
    pub fn store(&self, plugin: Arc<PluginContext>) -> Store<State> {
        let mut state = State::new(plugin);
        state.ticker = Some(self.ticker.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let now = Instant::now();
            let data = ctx.data_mut();
            let since = *data.running_since.locked();
            data.used += now.saturating_duration_since(since).min(2 * TICK);
            if data.used >= data.budget {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            super::hook::count_yield(&data.plugin.name, data.hook);
            let resumed = data.running_since.clone();
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    *resumed.locked() = Instant::now();
                }),
            ))
        });
        store
    }
}

/// Every import must be a granted capability of our package (in the version of the component's hooks), our shared
/// `types`, or a WASI 0.2 interface.
fn check_imports(imports: &[String], granted: &[Capability], wit_version: &str) -> Result<(), LoadError> {
    for import in imports {
        let Some((pkg_iface, version)) = import.split_once('@') else {
            return Err(LoadError::ForeignImport { import: import.clone() });
        };
        let Some((pkg, iface)) = pkg_iface.split_once('/') else {
            return Err(LoadError::ForeignImport { import: import.clone() });
        };
        if pkg == PACKAGE {
            if version != wit_version {
                return Err(LoadError::WrongVersion { found: import.clone() });
            }
            if iface == "types" {
                continue;
            }
            match Capability::ALL.iter().find(|c| c.interface() == iface) {
                Some(c) if granted.contains(c) => continue,
                Some(c) => return Err(LoadError::NotGranted { import: import.clone(), capability: c.interface() }),
                None => return Err(LoadError::ForeignImport { import: import.clone() }),
            }
        }
        // WASI 0.2 is linked with a deny-all context: no preopened directories, no permitted socket addresses,
        // no environment. A guest may import it (every toolchain does) and gets errors when it tries anything.
        let wasi_ok =
            matches!(pkg, "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:filesystem" | "wasi:sockets")
                && version.starts_with("0.2.");
        if !wasi_ok {
            return Err(LoadError::ForeignImport { import: import.clone() });
        }
    }
    Ok(())
}

/// The capabilities a component's imports need (for `weir plugin check`).
pub fn needed_capabilities(imports: &[String]) -> BTreeSet<Capability> {
    imports
        .iter()
        .filter_map(|i| i.strip_prefix(&format!("{PACKAGE}/"))?.split('@').next())
        .filter_map(|iface| Capability::ALL.iter().copied().find(|c| c.interface() == iface))
        .collect()
}

/// `$XDG_CACHE_HOME/weir/plugins`, else `~/.cache/weir/plugins`. Never a shared temporary directory: the gateway
/// loads native code from the cache, and another local user must not be able to plant any there.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("weir").join("plugins"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("weir").join("plugins"))
}

/// Creates the compile cache directory (mode 0700) or checks an existing one: owned by this user, mode 0700. A
/// group- or world-writable one could hold artifacts planted by another user: refused, never repaired. With
/// `tighten` (the default directory only), one that others can merely read is set to 0700.
fn secure_cache_dir(dir: &Path, tighten: bool) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let show = dir.display();
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("plugin_runtime.cache_dir {show}: cannot create: {e}"))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| anyhow::anyhow!("plugin_runtime.cache_dir {show}: {e}"))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let mode = meta.mode() & 0o777;
        if !meta.is_dir() {
            anyhow::bail!("plugin_runtime.cache_dir {show}: not a directory");
        }
        if meta.uid() != me {
            anyhow::bail!(
                "plugin_runtime.cache_dir {show}: owned by uid {}, not by this user (uid {me}); the gateway loads \
                 native code from it, so it must be this user's own directory (mode 0700)",
                meta.uid()
            );
        }
        if mode & 0o022 != 0 {
            anyhow::bail!(
                "plugin_runtime.cache_dir {show}: mode {mode:o} lets other users write into it; the gateway loads \
                 native code from it: `chmod 700 {show}` (and remove anything you did not put there) or choose \
                 another directory"
            );
        }
        if mode != 0o700 {
            if !tighten {
                anyhow::bail!(
                    "plugin_runtime.cache_dir {show}: mode {mode:o}; the gateway loads native code from it, so it \
                     must be this user's alone: `chmod 700 {show}`"
                );
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| anyhow::anyhow!("plugin_runtime.cache_dir {show}: cannot set mode 0700: {e}"))?;
        }
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_dir_is_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("weir-cache-test-{}", std::process::id()));
        let dir = base.join("a/b");
        secure_cache_dir(&dir, false).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "created 0700");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = secure_cache_dir(&dir, false).unwrap_err().to_string();
        assert!(e.contains("mode 755") && e.contains("chmod 700"), "a configured directory must be 0700: {e}");
        secure_cache_dir(&dir, true).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "the default is tightened");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = secure_cache_dir(&dir, true).unwrap_err().to_string();
        assert!(e.contains("mode 777") && e.contains("lets other users write"), "writable by others: refused: {e}");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o777, "and not repaired");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn imports_are_checked_against_grants() {
        let wasi = ["wasi:cli/environment@0.2.6", "wasi:io/streams@0.2.6", "wasi:filesystem/preopens@0.2.6"];
        assert!(check_imports(&s(&wasi), &[], "0.1.0").is_ok(), "WASI 0.2 is always linked (deny-all)");
        assert!(check_imports(&s(&["weir:plugin/types@0.1.0"]), &[], "0.1.0").is_ok());
        let e = check_imports(&s(&["weir:plugin/kv@0.1.0"]), &[Capability::Log], "0.1.0").unwrap_err().to_string();
        assert!(e.contains("weir:plugin/kv@0.1.0") && e.contains("`kv` capability"), "{e}");
        assert!(check_imports(&s(&["weir:plugin/kv@0.1.0"]), &[Capability::Kv], "0.1.0").is_ok());
        let e = check_imports(&s(&["wasi:http/outgoing-handler@0.2.6"]), &Capability::ALL, "0.2.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wasi:http/outgoing-handler@0.2.6") && e.contains("neither"), "{e}");
        let e = check_imports(&s(&["weir:plugin/kv@0.2.0"]), &Capability::ALL, "0.1.0").unwrap_err().to_string();
        assert!(e.contains("accepts weir:plugin@0.3.0, @0.2.0 and @0.1.0, one version per component"), "{e}");
        assert!(check_imports(&s(&["weir:plugin/kv@0.2.0"]), &[Capability::Kv], "0.2.0").is_ok());
        assert!(
            check_imports(&s(&["wasi:sockets/tcp@0.2.6"]), &[], "0.2.0").is_ok(),
            "linked, but no address is permitted"
        );
        assert_eq!(
            needed_capabilities(&s(&["weir:plugin/kv@0.1.0", "weir:plugin/types@0.1.0", "wasi:io/streams@0.2.6"])),
            [Capability::Kv].into_iter().collect()
        );
    }

    /// A core module with the given custom sections (name, payload).
    fn module_with(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        for (name, data) in sections {
            let len = 1 + name.len() + data.len();
            assert!(len < 128 && name.len() < 128, "one-byte LEB128 lengths");
            m.extend([0, len as u8, name.len() as u8]);
            m.extend(name.as_bytes());
            m.extend(*data);
        }
        m
    }

    #[test]
    fn the_pagemap_reset_is_used_only_where_memory_cannot_be_swapped() {
        fn files<'a>(entries: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |p: &str| entries.iter().find(|(k, _)| *k == p).map(|(_, v)| v.to_string())
        }
        const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        let none = [("/proc/swaps", HEADER)];
        assert!(!swap_possible(files(&none)).0, "no swap device");
        let swaps = "Filename Type Size Used Priority\n/dev/zram0 partition 4194300 0 100\n";
        let with = [("/proc/swaps", swaps), ("/proc/self/cgroup", "0::/svc/weir\n")];
        let (swap, why) = swap_possible(files(&with));
        assert!(swap && why.contains("/dev/zram0"), "{why}");
        let off = [
            ("/proc/swaps", swaps),
            ("/proc/self/cgroup", "0::/svc/weir\n"),
            ("/sys/fs/cgroup/svc/weir/memory.swap.max", "0\n"),
        ];
        assert!(!swap_possible(files(&off)).0, "the cgroup may not swap");
        let limited =
            [("/proc/swaps", swaps), ("/proc/self/cgroup", "0::/\n"), ("/sys/fs/cgroup/memory.swap.max", "max\n")];
        assert!(swap_possible(files(&limited)).0);
        assert!(swap_possible(files(&[])).0, "unreadable: assume it can swap");
    }

    #[test]
    fn declared_hooks_come_from_the_custom_section() {
        let all = Hooks::ALL;
        assert_eq!(Hooks::declared(&module_with(&[])), all, "no section: every hook");
        assert_eq!(Hooks::declared(&module_with(&[("other", b"\x00")])), all);
        let none = Hooks::from_bits(0);
        assert_eq!(Hooks::declared(&module_with(&[("weir:hooks", b"\x00")])), none);
        assert_eq!(Hooks::declared(&module_with(&[("weir:hooks", b"\x01")])), Hooks::from_bits(Hooks::CHUNK_BITS));
        assert_eq!(Hooks::declared(&module_with(&[("weir:hooks", b"\x02")])), Hooks::from_bits(Hooks::COMPLETE_BITS));
        // Two declarations (two crates' statics concatenated, or two sections) add up.
        assert_eq!(Hooks::declared(&module_with(&[("weir:hooks", b"\x01\x02")])), all);
        assert_eq!(Hooks::declared(&module_with(&[("weir:hooks", b"\x01"), ("weir:hooks", b"\x02")])), all);
        // What cannot be read is not a reason to skip hooks.
        assert_eq!(Hooks::declared(b"\0asm\x01\0\0\0\0\x7f"), all, "truncated section");
        assert_eq!(Hooks::names(none), ["on-request"]);
        assert_eq!(Hooks::names(all), ["on-request", "on-chunk", "flush", "on-complete"]);
    }
}
