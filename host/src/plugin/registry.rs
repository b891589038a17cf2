//! The live plugin set: plugins from `[[plugins]]` and from the watched `plugins_dir`, published as one immutable
//! [`PluginSet`] behind an `ArcSwap`. A request takes one snapshot when it starts and keeps it to its end, so a
//! stream that started on one version finishes on it while new requests get the new one.
//!
//! The directory is watched with `notify`, debounced, and rescanned as a whole. A file is loaded only when it is
//! complete: it must hash differently from the loaded version and compile, link, pass the import checks,
//! instantiate under its limits and survive a smoke call. Anything less is logged and counted, and the previous
//! version keeps serving. Names starting with `.` and names that are not valid plugin names (editors' and copy
//! tools' temporary files) are ignored.

use crate::sync::Locked;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::contract::Pre;
use super::engine::{LoadError, PluginEngine, hex};
use super::host::PluginContext;
use super::instance::Live;
use super::kv::Kv;
use super::pool::Pool;
use super::shadow::Shadow;
use crate::config::{Config, Isolation, PluginRuntime, PluginSettings, load_plugin_settings, valid_plugin_name};

/// Quarantine never lasts longer than this.
const MAX_QUARANTINE: Duration = Duration::from_secs(300);
/// Events closer together than this are handled as one rescan.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// One loaded plugin version.
pub struct LoadedPlugin {
    pub name: String,
    /// First 12 hex digits of the `.wasm` SHA-256.
    pub version: String,
    /// Where it came from (`config: path` or `dir: path`).
    pub source: String,
    pub loaded_at: SystemTime,
    pub settings: PluginSettings,
    pub engine: Arc<PluginEngine>,
    pub pre: Pre,
    pub context: Arc<PluginContext>,
    pub imports: Vec<String>,
    /// Compile time (or cache load time), and whether the compiled artifact came from the disk cache.
    pub compile_time: std::time::Duration,
    pub from_cache: bool,
    /// `init` ran once at load and its state is part of every fresh instance (`pre_initialize`): fresh instances
    /// skip `init`. Otherwise (and when pre-initialization failed, said in `preinit_error`) they run it first.
    pub preinitialized: bool,
    pub preinit_error: Option<String>,
    /// The optional hooks it declares (its manifest, or an older component's `weir:hooks` section): the chain
    /// calls no others.
    pub hooks: super::hook::Hooks,
    /// How its instances are reused: the configured isolation, or what the component declares when none is.
    pub isolation: Isolation,
    /// The loosest isolation the component declares it tolerates (`request` for components without a manifest).
    pub declared: Isolation,
    /// Idle instances for reuse (`tenant` and `shared`).
    pub pool: Pool,
    /// Metric handles for this plugin's hooks.
    pub metrics: super::hook::HookMetrics,
    /// Content key (wasm + settings) used to detect changes.
    key: String,
    stats: Stats,
    /// Fresh instances made ahead of need (never entered by a request), see [`READY_INSTANCES`].
    ready: Mutex<Vec<Live>>,
    quarantine: QuarantinePolicy,
}

/// Fresh instances kept ready per plugin: a request takes one instead of instantiating
/// on its path, and its completion phase, after dropping the request's instances, makes the replacements. An
/// instance in this reserve has never run a hook for any request, so it is as fresh as one made on the spot; the
/// reserve only moves instantiation (and `init` when not pre-initialized) off the request's path. When it is empty
/// (a burst, the first requests) a request instantiates inline as before. All reserves together hold at most a
/// quarter of `plugin_runtime.max_instances`, so they never take the pool slots requests need.
pub const READY_INSTANCES: usize = 4;

impl Drop for LoadedPlugin {
    /// A retired version's reserve gives its places back.
    fn drop(&mut self) {
        let n = self.ready.get_mut().map_or(0, |r| r.len());
        self.engine.unreserve(n);
    }
}

/// When a plugin is quarantined: over the last `window`, at least `min_failures` requests failed in it and they
/// were at least `rate` of the requests that reached it. One request (or one tenant's few requests) never does it,
/// cancellations never count, and a plugin that fails for some inputs among many healthy requests keeps serving.
#[derive(Debug, Clone, Copy)]
pub struct QuarantinePolicy {
    pub window: Duration,
    pub min_failures: u32,
    pub rate: f64,
    /// First quarantine period; doubles for each quarantine that follows another within a window.
    pub first: Duration,
}

/// Requests and failures per bucket over a sliding window of [`BUCKETS`] buckets.
#[derive(Default)]
struct Window {
    /// (bucket number, requests, failures)
    buckets: [(u64, u32, u32); BUCKETS],
}

const BUCKETS: usize = 6;

impl Window {
    /// Adds one request at `now_ms` and returns the window's (requests, failures).
    fn add(&mut self, now_ms: u64, window: Duration, failed: bool) -> (u32, u32) {
        let width = (window.as_millis() as u64 / BUCKETS as u64).max(1);
        let n = now_ms / width;
        #[allow(clippy::indexing_slicing, reason = "an index modulo the array's length")]
        let b = &mut self.buckets[(n % BUCKETS as u64) as usize];
        if b.0 != n {
            *b = (n, 0, 0);
        }
        b.1 += 1;
        b.2 += u32::from(failed);
        self.buckets.iter().filter(|b| b.0 + (BUCKETS as u64) > n).fold((0, 0), |(r, f), b| (r + b.1, f + b.2))
    }
}

#[derive(Default)]
struct Stats {
    /// Requests that reached the plugin (not counting cancelled ones), and those it failed in.
    requests: AtomicU64,
    failures: AtomicU64,
    window: Mutex<Window>,
    quarantines: AtomicU32,
    /// Quarantines in a row (each within a window of the previous one's end): the backoff exponent.
    streak: AtomicU32,
    /// Milliseconds since process start until which the plugin is quarantined.
    quarantined_until: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Instances left unusable because their request was dropped during a hook call (not failures).
    cancelled_mid_call: AtomicU64,
}

fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

impl LoadedPlugin {
    /// How much longer the plugin is quarantined, if it is.
    pub fn quarantined_for(&self) -> Option<Duration> {
        let until = self.stats.quarantined_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined_for().is_some()
    }

    /// Notes an instance whose hook call was dropped mid-way by a cancellation (its `on-complete` ran fresh).
    pub fn record_cancelled_mid_call(&self) {
        self.stats.cancelled_mid_call.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a failure's message (for `/admin/plugins`); the request is counted once, by [`Self::record_request`].
    pub fn record_failure(&self, message: &str) {
        *self.stats.last_error.locked() = Some(message.to_string());
    }

    /// Counts one finished (not cancelled) request that reached this plugin, and quarantines the plugin when the
    /// window's failures reach the policy's count and rate.
    pub fn record_request(&self, ok: bool) {
        let s = &self.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        if ok {
            s.window.locked().add(now_ms(), self.quarantine.window, false);
            return;
        }
        s.failures.fetch_add(1, Ordering::Relaxed);
        let q = &self.quarantine;
        let now = now_ms();
        let (requests, failures) = s.window.locked().add(now, q.window, true);
        if failures < q.min_failures.max(1) || (failures as f64) < q.rate * requests as f64 || self.is_quarantined() {
            return;
        }
        *s.window.locked() = Window::default();
        let last_end = s.quarantined_until.load(Ordering::Relaxed);
        let k = if last_end + (q.window.as_millis() as u64) < now {
            s.streak.store(1, Ordering::Relaxed);
            0
        } else {
            s.streak.fetch_add(1, Ordering::Relaxed).min(16)
        };
        s.quarantines.fetch_add(1, Ordering::Relaxed);
        let period = q.first.saturating_mul(1 << k).min(MAX_QUARANTINE);
        s.quarantined_until.store(now + period.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(target: "weir::plugin", plugin = %self.name, version = %self.version, requests, failures,
            window = ?q.window, quarantine = ?period, "plugin quarantined: it failed in too many requests");
    }

    /// A fresh instance made ahead of need, if one is ready.
    pub fn take_ready(&self) -> Option<Live> {
        let live = self.ready.locked().pop()?;
        self.engine.unreserve(1);
        Some(live)
    }

    /// Whether the reserve of fresh instances wants one more (not while quarantined, nor when the engine cannot
    /// spare the place). Plugins that reuse instances keep one too: a request that finds no idle instance it may
    /// have (the first of a tenant, a burst) takes a fresh one from it.
    pub fn wants_ready(&self) -> bool {
        !self.is_quarantined() && self.engine.reserve_room() && self.ready.locked().len() < READY_INSTANCES
    }

    /// Adds a fresh instance to the reserve. `false`: it was dropped instead, the reserve having filled up
    /// meanwhile or the pool having no place to spare ([`super::engine::PluginEngine::reserve`]).
    pub fn put_ready(&self, live: Live) -> bool {
        let mut ready = self.ready.locked();
        if ready.len() < READY_INSTANCES && self.engine.reserve() {
            ready.push(live);
            return true;
        }
        false
    }

    fn admin(&self) -> serde_json::Value {
        let s = &self.stats;
        json!({
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "loaded_at": httpdate::fmt_http_date(self.loaded_at),
            "order": self.settings.order,
            "failure_policy": self.settings.failure,
            "capabilities": self.settings.capabilities.iter().map(|c| c.interface()).collect::<Vec<_>>(),
            "imports": self.imports,
            "compile_ms": self.compile_time.as_millis() as u64,
            "compiled_from_cache": self.from_cache,
            "preinitialized": self.preinitialized,
            "hooks": self.hooks.names(),
            "isolation": self.isolation.as_str(),
            "declared_reuse": self.declared.as_str(),
            "idle_instances": self.pool.idle(),
            "idle_tenants": self.pool.tenants(),
            "preinit_error": self.preinit_error,
            "requests": s.requests.load(Ordering::Relaxed),
            "cancelled_mid_call": s.cancelled_mid_call.load(Ordering::Relaxed),
            "failures": s.failures.load(Ordering::Relaxed),
            "quarantined": self.quarantined_for().is_some(),
            "quarantines": s.quarantines.load(Ordering::Relaxed),
            "last_error": s.last_error.locked().clone(),
        })
    }
}

/// An immutable, ordered set of plugins: what one request runs.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Name and version of each plugin, made once per set for every request's report.
    pub identities: Arc<[(String, String)]>,
    /// The most of a client's answer requests keep: the largest `kv_max_value` of the plugins granted `answer`
    /// (what a cache could store anyway); 0 without such a plugin, when no answer is kept for plugins.
    pub answer_max: usize,
    /// Per plugin (same positions as `plugins`): its shadow version, if one is loaded (`super::shadow`). Empty when
    /// no plugin has one.
    pub shadows: Vec<Option<Arc<Shadow>>>,
}

impl PluginSet {
    /// The set with the shadows of its plugins among `shadows` (by the live plugin's name).
    pub fn with_shadows(plugins: Vec<Arc<LoadedPlugin>>, shadows: &BTreeMap<String, Arc<Shadow>>) -> PluginSet {
        let mut set = PluginSet::new(plugins);
        if set.plugins.iter().any(|p| shadows.contains_key(&p.name)) {
            set.shadows = set.plugins.iter().map(|p| shadows.get(&p.name).cloned()).collect();
        }
        set
    }

    pub fn new(plugins: Vec<Arc<LoadedPlugin>>) -> PluginSet {
        let identities = plugins.iter().map(|p| (p.name.clone(), p.version.clone())).collect();
        let answer_max = plugins
            .iter()
            .filter(|p| p.settings.capabilities.contains(&crate::config::Capability::Answer))
            .map(|p| p.settings.kv_max_value.unwrap_or(super::kv::MAX_VALUE))
            .max()
            .unwrap_or(0);
        PluginSet { plugins, identities, answer_max, shadows: Vec::new() }
    }
}

/// Loads plugins and publishes the live set.
pub struct Registry {
    engine: Arc<PluginEngine>,
    kv: Arc<dyn Kv>,
    runtime: PluginRuntime,
    live: ArcSwap<PluginSet>,
    from_config: Vec<Arc<LoadedPlugin>>,
    dir: Option<PathBuf>,
    from_dir: Mutex<BTreeMap<String, Arc<LoadedPlugin>>>,
    /// Shadow versions from the directory, by the live plugin's name (`NAME.shadow.wasm`).
    shadows: Mutex<BTreeMap<String, Arc<Shadow>>>,
    /// Last load error per file in the directory (shown in admin until that file loads).
    dir_errors: Mutex<BTreeMap<String, String>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Each plugin's `kv_quota` accounting, by plugin name: it outlives hot swaps.
    quotas: Quotas,
}

/// [`super::kv::quota::QuotaState`] by plugin name.
type Quotas = Mutex<BTreeMap<String, Arc<super::kv::quota::QuotaState>>>;

impl Registry {
    /// The store behind the `kv` capability (keys are `<plugin name>/<key>`).
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// Loads the config's plugins (an error is fatal at startup) and the directory's (errors are logged).
    pub fn new(config: &Config) -> anyhow::Result<Arc<Registry>> {
        let engine = PluginEngine::new(&config.plugin_runtime)?;
        let kv = super::kv::open(&config.kv)?;
        tracing::info!(target: "weir::kv", "plugin state: {}", config.kv.describe());
        let mut from_config = Vec::new();
        let quotas = Quotas::default();
        for spec in &config.plugins {
            let bytes = std::fs::read(&spec.file)
                .map_err(|e| anyhow::anyhow!("plugin `{}`: cannot read {}: {e}", spec.name, spec.file.display()))?;
            let p = load_one(
                &Loader { engine: &engine, kv: &kv, rt: &config.plugin_runtime, quotas: &quotas },
                &spec.name,
                &bytes,
                spec.settings.clone(),
                format!("config: {}", spec.file.display()),
                String::new(),
                false,
            )
            .map_err(|e| anyhow::anyhow!("plugin `{}` ({}): {e}", spec.name, spec.file.display()))?;
            from_config.push(Arc::new(p));
        }
        let reg = Arc::new(Registry {
            engine,
            kv,
            runtime: config.plugin_runtime.clone(),
            live: ArcSwap::from_pointee(PluginSet::default()),
            from_config,
            dir: config.plugins_dir.clone(),
            from_dir: Mutex::new(BTreeMap::new()),
            shadows: Mutex::new(BTreeMap::new()),
            dir_errors: Mutex::new(BTreeMap::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            quotas,
        });
        if let Some(dir) = &reg.dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("plugins_dir {}: cannot create: {e}", dir.display()))?;
            reg.rescan();
        }
        reg.publish();
        Ok(reg)
    }

    /// The current set, for one request.
    pub fn snapshot(&self) -> Arc<PluginSet> {
        self.live.load_full()
    }

    fn publish(&self) {
        let mut plugins: Vec<Arc<LoadedPlugin>> = self.from_config.clone();
        plugins.extend(self.from_dir.locked().values().cloned());
        plugins.sort_by(|a, b| (a.settings.order, &a.name).cmp(&(b.settings.order, &b.name)));
        let names: Vec<String> = plugins.iter().map(|p| format!("{}@{}", p.name, p.version)).collect();
        self.live.store(Arc::new(PluginSet::with_shadows(plugins, &self.shadows.locked())));
        tracing::info!(target: "weir::plugin", plugins = %names.join(" → "), "plugin chain");
    }

    /// Re-reads the whole directory and swaps in what changed.
    pub fn rescan(&self) {
        let Some(dir) = &self.dir else { return };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read plugins_dir");
                return;
            }
        };
        let (mut seen, mut shadows) = (BTreeMap::new(), BTreeMap::new());
        for entry in entries.flatten() {
            let path = entry.path();
            let Some((name, shadow)) = plugin_file_name(&path) else { continue };
            if shadow {
                shadows.insert(name, path);
                continue;
            }
            if self.from_config.iter().any(|p| p.name == name) {
                tracing::warn!(file = %path.display(), "ignored: a plugin of this name is defined in the config");
                continue;
            }
            seen.insert(name, path);
        }
        // Loads take seconds (an interpreted component): they work on copies, so `/admin/plugins` is never kept
        // waiting on these locks. Rescans never overlap (startup, then the watcher's one task).
        let (mut live, mut shadow) = (self.from_dir.locked().clone(), self.shadows.locked().clone());
        let mut changed = self.sync_dir(&mut live, seen, false, |p, _| p);
        changed |= self.sync_dir(&mut shadow, shadows, true, |p, name| {
            let loader = Loader { engine: &self.engine, kv: &self.kv, rt: &self.runtime, quotas: &self.quotas };
            let live_kv = plugin_kv(&loader, name, &p.settings);
            Arc::new(Shadow::new(p, name, live_kv))
        });
        *self.from_dir.locked() = live;
        *self.shadows.locked() = shadow;
        if changed {
            self.publish();
        }
    }

    /// Brings `current` (the loaded plugins, or shadow versions, by name) in line with the files `seen` in the
    /// directory: loads what is new or changed, drops what is gone, keeps the previous version when a file does not
    /// load. `wrap` makes the entry from a loaded plugin. Returns whether anything changed.
    fn sync_dir<T: Keyed>(
        &self,
        current: &mut BTreeMap<String, T>,
        seen: BTreeMap<String, PathBuf>,
        shadow: bool,
        wrap: impl Fn(Arc<LoadedPlugin>, &str) -> T,
    ) -> bool {
        let label = |name: &str| if shadow { format!("{name}{}", super::shadow::SUFFIX) } else { name.to_string() };
        let mut changed = false;
        let removed: Vec<String> = current.keys().filter(|n| !seen.contains_key(*n)).cloned().collect();
        for name in removed {
            current.remove(&name);
            self.dir_errors.locked().remove(&label(&name));
            tracing::info!(target: "weir::plugin", plugin = %label(&name), "plugin removed (its file is gone)");
            reload_metric("removed");
            changed = true;
        }
        for (name, path) in seen {
            let shown = label(&name);
            match self.load_file(&name, &path, current.get(&name).map(|p| p.loaded().key.as_str()), shadow) {
                // The file is the loaded version again (e.g. restored after a broken copy): an error about the
                // broken copy is stale.
                Ok(None) => {
                    self.dir_errors.locked().remove(&shown);
                }
                Ok(Some(p)) => {
                    tracing::info!(target: "weir::plugin", plugin = %shown, version = %p.version, file = %path.display(),
                        compile_ms = p.compile_time.as_millis() as u64, cached = p.from_cache, "plugin loaded");
                    self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    reload_metric("loaded");
                    self.dir_errors.locked().remove(&shown);
                    current.insert(name.clone(), wrap(Arc::new(p), &name));
                    changed = true;
                }
                Err(msg) => {
                    let previous = current.get(&name).map(|p| p.loaded().version.clone());
                    tracing::error!(target: "weir::plugin", plugin = %shown, file = %path.display(),
                        keeping = previous.as_deref().unwrap_or("nothing"), "plugin not loaded: {msg}");
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    reload_metric("failed");
                    self.dir_errors.locked().insert(shown, msg);
                }
            }
        }
        changed
    }

    /// Loads `<name>.wasm` (+ `<name>.toml`) unless its content key equals `loaded_key`; for a shadow version,
    /// `<name>.shadow.wasm` (+ `<name>.shadow.toml`, else the live `<name>.toml`).
    fn load_file(
        &self,
        name: &str,
        wasm: &Path,
        loaded_key: Option<&str>,
        shadow: bool,
    ) -> Result<Option<LoadedPlugin>, String> {
        let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read: {e}"))?;
        let mut toml_path = wasm.with_extension("toml");
        if shadow && !toml_path.exists() {
            toml_path = wasm.with_file_name(format!("{name}.toml"));
        }
        let toml_text = std::fs::read(&toml_path).unwrap_or_default();
        let key = format!("{}-{}", hex(&Sha256::digest(&bytes)), hex(&Sha256::digest(&toml_text)));
        if loaded_key == Some(key.as_str()) {
            return Ok(None);
        }
        let settings = if toml_text.is_empty() {
            PluginSettings::default()
        } else {
            load_plugin_settings(&toml_path, &self.runtime).map_err(|e| e.to_string())?
        };
        let loader = Loader { engine: &self.engine, kv: &self.kv, rt: &self.runtime, quotas: &self.quotas };
        load_one(&loader, name, &bytes, settings, format!("dir: {}", wasm.display()), key, shadow)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Watches the plugins directory until the process ends.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && !matches!(
                    ev.kind,
                    notify::EventKind::Access(notify::event::AccessKind::Open(_) | notify::event::AccessKind::Read)
                )
            {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let reg = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let r = reg.clone();
                let _ = tokio::task::spawn_blocking(move || r.rescan()).await;
            }
        });
        tracing::info!(target: "weir::plugin", dir = %dir.display(), "watching for plugins (<name>.wasm, optional <name>.toml)");
        Ok(())
    }

    /// The `GET /admin/plugins` document.
    pub fn admin(&self) -> serde_json::Value {
        let set = self.snapshot();
        json!({
            "plugins": set.plugins.iter().map(|p| p.admin()).collect::<Vec<_>>(),
            "plugins_dir": self.dir.as_ref().map(|d| d.display().to_string()),
            "load_errors": self.dir_errors.locked().clone(),
            "shadows": self.shadows.locked().values().map(|s| {
                let live = set.plugins.iter().find(|p| p.name == s.of).map(|p| p.version.as_str());
                s.admin(live)
            }).collect::<Vec<_>>(),
            "reloads": {"ok": self.reloads_ok.load(Ordering::Relaxed), "failed": self.reloads_failed.load(Ordering::Relaxed)},
        })
    }
}

/// `dir/<name>.wasm` → (`name`, false), `dir/<name>.shadow.wasm` → (`name`, true), for valid plugin names only
/// (temporary and hidden files are ignored).
fn plugin_file_name(path: &Path) -> Option<(String, bool)> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let (name, shadow) = match stem.strip_suffix(super::shadow::SUFFIX) {
        Some(name) => (name, true),
        None => (stem, false),
    };
    (!name.starts_with('.') && valid_plugin_name(name)).then(|| (name.to_string(), shadow))
}

/// What the directory's maps hold: a loaded plugin, or a shadow version.
trait Keyed {
    fn loaded(&self) -> &LoadedPlugin;
}

impl Keyed for Arc<LoadedPlugin> {
    fn loaded(&self) -> &LoadedPlugin {
        self
    }
}

impl Keyed for Arc<Shadow> {
    fn loaded(&self) -> &LoadedPlugin {
        &self.plugin
    }
}

/// What every load shares.
struct Loader<'a> {
    engine: &'a Arc<PluginEngine>,
    kv: &'a Arc<dyn Kv>,
    rt: &'a PluginRuntime,
    quotas: &'a Quotas,
}

/// The store plugin `name` sees: the gateway's, with values capped at its `kv_max_value`, within its `kv_quota` if
/// it has one (the accounting is kept across loads of the same name while the quota stays the same).
fn plugin_kv(l: &Loader<'_>, name: &str, settings: &PluginSettings) -> Arc<dyn Kv> {
    let max = settings.kv_max_value.unwrap_or(super::kv::MAX_VALUE);
    let capped: Arc<dyn Kv> = Arc::new(super::kv::Capped::new(l.kv.clone(), max));
    let Some(limit) = settings.kv_quota else { return capped };
    let mut quotas = l.quotas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let state = match quotas.get(name) {
        Some(s) if s.limit() == limit => s.clone(),
        _ => {
            let s = super::kv::quota::QuotaState::new(name, limit, &**l.kv);
            quotas.insert(name.to_string(), s.clone());
            s
        }
    };
    Arc::new(super::kv::quota::Quota { inner: capped, state })
}

fn reload_metric(outcome: &'static str) {
    crate::telemetry::metrics::METRICS
        .reloads
        .get_or_create(&crate::telemetry::metrics::ReloadLabels { outcome })
        .inc();
}

/// Compiles, checks, links, instantiates and smoke-calls one plugin. A `shadow` version of plugin `name` is loaded
/// as `name.shadow` (its logs and hook metrics), with `name`'s kv seen through a scratch map
/// ([`super::kv::scratch::Scratch`]).
#[allow(clippy::too_many_arguments)]
fn load_one(
    l: &Loader<'_>,
    name: &str,
    bytes: &[u8],
    settings: PluginSettings,
    source: String,
    key: String,
    shadow: bool,
) -> Result<LoadedPlugin, LoadError> {
    let (engine, rt) = (l.engine, l.rt);
    let compiled = engine.compile(bytes, &settings.capabilities)?;
    let config_json = serde_json::to_string(&settings.config).unwrap_or_else(|_| "{}".into());
    let shown = if shadow { format!("{name}{}", super::shadow::SUFFIX) } else { name.to_string() };
    let mut kv = plugin_kv(l, name, &settings);
    if shadow {
        let scratch = Arc::new(super::kv::scratch::Scratch::new(kv, &shown, name));
        kv = Arc::new(super::kv::Capped::new(scratch, settings.kv_max_value.unwrap_or(super::kv::MAX_VALUE)));
    }
    let context = Arc::new(PluginContext {
        name: shown.clone(),
        config_json,
        kv,
        memory_cap: settings.memory,
        events: Default::default(),
        events_warned: Default::default(),
    });
    let manifest = smoke(engine, &compiled.pre, &context, &settings, true)?;
    let (hooks, declared) = manifest.map_or((compiled.hooks, Isolation::Request), |m| (m.hooks, m.reuse));
    let isolation = settings.isolation.unwrap_or(declared);
    if isolation > declared {
        let version = compiled.pre.version();
        let hint = if manifest.is_none() {
            " (components built for older contract versions have no manifest: rebuild against 0.3.0 and declare `reuse`)"
        } else {
            " (the plugin's manifest says what its instances may carry between requests)"
        };
        return Err(LoadError::Isolation { asked: isolation.as_str(), declared: declared.as_str(), version, hint });
    }
    let pool = Pool::new(engine.clone(), settings.reuse, settings.memory);
    let (mut pre, mut preinitialized, mut preinit_error) = (compiled.pre, false, None);
    if settings.pre_initialize && pre.has_init() && bytes.len() <= PREINIT_MAX_BYTES {
        match on_own_runtime(engine.preinitialize(
            bytes,
            context.clone(),
            settings.timeouts.init.max(Duration::from_millis(200)),
        ))
        .and_then(|snapshot| engine.compile(&snapshot, &settings.capabilities).map_err(|e| e.to_string()))
        {
            Ok(c) => {
                pre = c.pre;
                preinitialized = true;
            }
            Err(e) => {
                tracing::warn!(target: "weir::plugin", plugin = %name, "not pre-initialized (fresh instances run init): {e}");
                preinit_error = Some(e);
            }
        }
    }
    Ok(LoadedPlugin {
        metrics: super::hook::HookMetrics::new(&shown),
        name: shown,
        version: compiled.hash[..12].to_string(),
        source,
        loaded_at: SystemTime::now(),
        key,
        settings,
        engine: engine.clone(),
        pre,
        preinitialized,
        preinit_error,
        hooks,
        isolation,
        declared,
        pool,
        context,
        imports: compiled.imports,
        compile_time: compiled.compile_time,
        from_cache: compiled.cached,
        stats: Stats::default(),
        ready: Mutex::new(Vec::new()),
        quarantine: QuarantinePolicy {
            window: rt.quarantine_window,
            min_failures: rt.quarantine_after,
            rate: rt.quarantine_rate,
            first: rt.quarantine_for,
        },
    })
}

/// Loads one component as plugin `name` on an engine and memory store of its own, outside any gateway (`weir plugin
/// replay`, unit tests). `Err`: why the load was refused, in words.
pub fn load_standalone(
    name: &str,
    bytes: &[u8],
    settings: PluginSettings,
    source: String,
) -> Result<Arc<LoadedPlugin>, String> {
    let rt = PluginRuntime::default();
    let engine = PluginEngine::new(&rt).map_err(|e| format!("{e:#}"))?;
    let kv: Arc<dyn Kv> = Arc::new(super::kv::MemoryKv::default());
    let quotas = Quotas::default();
    let loader = Loader { engine: &engine, kv: &kv, rt: &rt, quotas: &quotas };
    load_one(&loader, name, bytes, settings, source, String::new(), false).map(Arc::new).map_err(|e| e.to_string())
}

/// Components above this size are not pre-initialized: interpreted guests (Python, JavaScript: tens of MiB) already
/// snapshot their runtime when they are built, and a second snapshot would cost seconds at every load.
const PREINIT_MAX_BYTES: usize = 8 << 20;

/// Runs `f` to completion on a thread and runtime of its own, so that loading works from any context (startup, the
/// watcher, `weir plugin check`).
fn on_own_runtime<T: Send>(f: impl std::future::Future<Output = Result<T, String>> + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| e.to_string())?;
                rt.block_on(f)
            })
            .join()
            .unwrap_or_else(|_| Err("panicked".into()))
    })
}

/// Instantiates under the plugin's limits and runs the contract's load check on it
/// ([`super::contract::Bindings::smoke`]: `init` with its config, whose error refuses the load, or what stands for
/// it in an older version, unless `run_init` is false; then the manifest). Runs on its own thread and runtime, so
/// that loading works from any context (startup, the watcher, `weir plugin check`).
pub fn smoke(
    engine: &Arc<PluginEngine>,
    pre: &Pre,
    context: &Arc<PluginContext>,
    settings: &PluginSettings,
    run_init: bool,
) -> Result<Option<super::contract::Manifest>, LoadError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| LoadError::Smoke(e.to_string()))?;
                rt.block_on(async {
                    let mut store = engine.store(context.clone());
                    super::host::start_call(
                        &mut store,
                        super::hook::Hook::Init,
                        settings.timeouts.init.max(Duration::from_millis(200)),
                    );
                    let plugin = pre
                        .instantiate(&mut store)
                        .await
                        .map_err(|e| LoadError::Smoke(format!("instantiate: {e:#}")))?;
                    plugin.smoke(&mut store, run_init.then_some(context.config_json.as_str())).await.map_err(
                        |e| match e {
                            Ok(refused) => LoadError::Init(refused),
                            Err(failed) => LoadError::Smoke(failed),
                        },
                    )
                })
            })
            .join()
            .unwrap_or_else(|_| Err(LoadError::Smoke("panicked".into())))
    })
}

/// Loading real components in unit tests (the guests `make guests` builds into `target/guests`).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
pub(crate) mod testing {
    use super::*;

    /// Loads `target/guests/<guest>.wasm` as plugin `name` with `settings`, on an engine and memory store of its
    /// own. Panics, saying how to build them, when the guests are missing.
    pub(crate) fn load(name: &str, guest: &str, settings: PluginSettings) -> Arc<LoadedPlugin> {
        load_standalone(name, &guest_bytes(guest), settings, format!("test: {guest}")).unwrap()
    }

    /// Like [`load`], the load's error in words when it is refused.
    pub(crate) fn try_load(guest: &str, settings: PluginSettings) -> Result<Arc<LoadedPlugin>, String> {
        load_standalone(guest, &guest_bytes(guest), settings, format!("test: {guest}"))
    }

    fn guest_bytes(guest: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/guests/{guest}.wasm"));
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; build the test guests first (`make guests`)", path.display()))
    }

    /// A set of plugins, in order.
    pub(crate) fn set(plugins: Vec<Arc<LoadedPlugin>>) -> Arc<PluginSet> {
        Arc::new(PluginSet::new(plugins))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn manifests_decide_hooks_and_the_loosest_isolation() {
        use super::super::hook::Hooks;
        let with = |isolation| PluginSettings {
            isolation,
            capabilities: crate::config::Capability::ALL.to_vec(),
            ..PluginSettings::default()
        };
        // First-party plugins (0.3.0, the SDK's manifest): auth declares no optional hook, redact the chunk hooks;
        // both may be shared, which is what they run as unless configured stricter.
        let auth = testing::load("auth", "auth", with(None));
        assert_eq!(auth.hooks, Hooks { chunks: false, flush: false, complete: false });
        assert_eq!((auth.declared, auth.isolation), (Isolation::Shared, Isolation::Shared));
        let redact = testing::load("redact", "redact", with(Some(Isolation::Tenant)));
        assert_eq!(redact.hooks, Hooks { chunks: true, flush: true, complete: false });
        assert_eq!(redact.isolation, Isolation::Tenant, "the operator may always be stricter");
        // A 0.3.0 component that declares no reuse, and a 0.1.0 one (no manifest): fresh instances only.
        let never = testing::load("c", "conformance-rust", with(None));
        assert_eq!((never.declared, never.isolation), (Isolation::Request, Isolation::Request));
        let e = testing::try_load("conformance-rust", with(Some(Isolation::Shared))).err().unwrap();
        assert!(e.contains("ask for `isolation = \"shared\"`") && e.contains("at most as `request`"), "{e}");
        let e = testing::try_load("legacy", with(Some(Isolation::Tenant))).err().unwrap();
        assert!(e.contains("weir:plugin@0.1.0") && e.contains("rebuild against 0.3.0"), "{e}");
        assert_eq!(testing::load("l", "legacy", with(None)).hooks, Hooks::ALL, "no section: every hook");
    }

    #[test]
    fn the_quarantine_window_counts_the_last_window_only() {
        let mut w = Window::default();
        // A 60 s window in six 10 s buckets. Start well after 0, as a real clock does.
        let t0 = 1_000_000;
        assert_eq!(w.add(t0, MINUTE, false), (1, 0));
        assert_eq!(w.add(t0 + 1, MINUTE, true), (2, 1));
        assert_eq!(w.add(t0 + 25_000, MINUTE, true), (3, 2), "another bucket of the same window");
        // 60 s after the first bucket began, that bucket has left the window; the later one has not.
        let first_bucket_end = (t0 / 10_000 + 6) * 10_000;
        assert_eq!(w.add(first_bucket_end, MINUTE, false), (2, 1));
        // Far later, nothing of the past is left, and a reused slot starts from zero.
        assert_eq!(w.add(t0 + 10 * 60_000, MINUTE, true), (1, 1));
    }

    #[test]
    fn a_window_shorter_than_its_buckets_still_counts() {
        let mut w = Window::default();
        // Width rounds down to 1 ms: every millisecond is a bucket, six make the window.
        let tiny = Duration::from_millis(3);
        assert_eq!(w.add(500, tiny, true), (1, 1));
        assert_eq!(w.add(505, tiny, false), (2, 1));
        assert_eq!(w.add(506, tiny, false), (2, 0), "the request at 500 left the window");
    }
}
