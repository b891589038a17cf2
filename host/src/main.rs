//! `weir`: a programmable LLM gateway for the OpenAI and Anthropic APIs.
//!
//! Subcommands: `serve` (the gateway), `check-config` (validate a config and show what it would serve),
//! `mock-upstream` (a faithful local stand-in for both providers and the Azure, Bedrock and Vertex envelopes), `plugin`
//! (`new`, `build`, `check`, `bench`: writing policies, [`authoring`]). Data
//! flow of one request:
//! [`ingress`] → [`pipeline`] → [`upstream::retry`] → [`sse`] + [`usage`] → [`record`].

use weir::*;

// mimalloc instead of glibc malloc: allocation was ~11% of the gateway's CPU per request in profiles (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use config::{Config, LogFormat};
use server::ServeOptions;

#[derive(Parser)]
#[command(name = "weir", version, about = "A programmable LLM gateway for the OpenAI and Anthropic APIs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The gateway config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print what it would serve; exits 1 on an error.
    CheckConfig {
        /// The config file to check.
        config: PathBuf,
    },
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run the built-in mock of the OpenAI and Anthropic APIs (for tests, benchmarks and demos).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Require this API key (Bearer for OpenAI paths, x-api-key for Anthropic paths).
        #[arg(long, env = "WEIR_MOCK_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin project (outside any repository): the contract, a working policy with its unit tests, the
    /// gateway settings to load it with, and a README of the steps.
    New {
        /// The plugin's name (names its `.wasm`, `.toml`, metrics and kv): a lower-case letter, then letters,
        /// digits, `-`, `_`.
        name: String,
        #[arg(long, value_enum)]
        lang: authoring::Lang,
        /// Where to write it (must not exist, or be empty); default `./<name>`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in `--dir` (default: here) into `<name>.wasm`, installing its language's toolchain
    /// into the project the first time; `--install DIR` then puts it live in a gateway's watched plugins directory.
    Build {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A running gateway's `plugins_dir`: `<name>.toml` and `<name>.wasm` are renamed into it, in that order.
        #[arg(long)]
        install: Option<PathBuf>,
        /// With `--install`: install as a shadow version (`<name>.shadow.toml`, `<name>.shadow.wasm`) that runs beside
        /// the live `<name>` with its decisions compared and its effects discarded (docs/plugins.md, "Shadow versions").
        #[arg(long, requires = "install")]
        shadow: bool,
    },
    /// Build and install the project in `--dir` now and after each change to its files, until interrupted: every
    /// successful build goes live in the gateway watching `--install`; a failed one is reported and changes nothing.
    Watch {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The running gateway's `plugins_dir`.
        #[arg(long)]
        install: PathBuf,
        /// Install as the shadow version (`<name>.shadow.*`).
        #[arg(long)]
        shadow: bool,
    },
    /// Validate a plugin component offline: its exports, imports, and the capabilities it needs; with `--config`,
    /// also run its `init` with that config (what a load does).
    Check {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's settings file (the `<name>.toml` of a plugins directory: `capabilities`, `config`, ...).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure a plugin's cost in process: instantiation, on-request, on-chunk per event (median and p99).
    Bench {
        /// The `.wasm` component.
        file: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// The plugin's config table, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// A request header, replacing the bench request's own of that name (repeatable), e.g.
        /// `--header "authorization:Bearer sk-..."` for a key the config knows.
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// The request's principal, as authentication would have set it (`ID` or `ID:TEAM`), for plugins that act
        /// only on authenticated requests (cost, ratelimit).
        #[arg(long, value_name = "ID[:TEAM]")]
        principal: Option<String>,
    },
    /// Replay recorded requests (`[record]` fixtures, JSONL) through a plugin offline and print what it decides;
    /// with `--against OLD.wasm`, print only the requests decided differently, and exit 1 when there are any.
    Replay {
        /// The `.wasm` component.
        file: PathBuf,
        /// The fixtures file (`[record] path`).
        fixtures: PathBuf,
        /// The plugin's settings file (`<name>.toml`: capabilities, config, ...), for both versions.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Another version of the plugin to compare with.
        #[arg(long, value_name = "OLD.wasm")]
        against: Option<PathBuf>,
        /// The settings of the version compared with (default: `--config`); without `--against`, the same component
        /// with these settings.
        #[arg(long, value_name = "OLD.toml")]
        against_config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Plugin(PluginCommand::Check { file, config }) => plugin_check(&file, config.as_deref()),
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            match authoring::new(&name, lang, &dir) {
                Ok(files) => {
                    println!("wrote {} files in {}; next:", files.len(), dir.display());
                    println!(
                        "  cd {} && weir plugin build && weir plugin check {name}.wasm --config {name}.toml",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin(PluginCommand::Build { dir, install, shadow }) => {
            let built = authoring::build(&dir).and_then(|wasm| {
                println!("built {}", wasm.display());
                if let Some(watched) = install {
                    let live = authoring::install(&dir, &watched, shadow)?;
                    println!("installed {} (the gateway watching {} loads it)", live.display(), watched.display());
                }
                Ok(())
            });
            match built {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin(PluginCommand::Watch { dir, install, shadow }) => {
            match authoring::watch(&dir, &install, shadow, Duration::from_millis(500)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin(PluginCommand::Replay { file, fixtures, config, against, against_config }) => {
            let old = against.as_deref().or(against_config.is_some().then_some(file.as_path()));
            let against = old.map(|wasm| plugin::replay::Against { wasm, config: against_config.as_deref() });
            match plugin::replay::run(&file, &fixtures, config.as_deref(), against) {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Plugin(PluginCommand::Bench { file, iterations, config, headers, principal }) => {
            match std::fs::read(&file)
                .map_err(anyhow::Error::from)
                .and_then(|b| plugin::bench::run(&b, iterations.max(10), &config, &headers, principal.as_deref()))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}: {e:#}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(config.log.format, &config.log.level);
            let rt = runtime();
            let code = rt.block_on(async {
                match serve(config).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            });
            // Dropping the runtime would wait for every blocking task, and a plugin compile the watcher started can
            // take many seconds (a Python component): a stop must not wait for a version that will never serve. The
            // compiled-plugin cache is written to a temporary name and renamed, so abandoning a compile leaves nothing
            // half-written.
            rt.shutdown_timeout(EXIT_WAIT);
            code
        }
        Command::MockUpstream { listen, api_key } => {
            init_logging(LogFormat::Text, "info");
            runtime().block_on(async {
                match mock_upstream(listen, api_key).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// How long the process waits, after draining, for blocking work still running (plugin compiles) before it exits.
const EXIT_WAIT: Duration = Duration::from_millis(200);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            // Ignore write errors: `weir check-config x | head` must not panic on a closed pipe.
            let _ = writeln!(
                std::io::stdout(),
                "{}: OK\n{}",
                path.display(),
                weir::summary::of(&c, |k| std::env::var(k).ok())
            );
            for (id, env) in c.missing_key_envs() {
                eprintln!(
                    "warning: upstream `{id}`: environment variable `{env}` is not set; `weir serve` would refuse to start"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_check(path: &Path, settings: Option<&Path>) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("error: {}: {msg}", path.display());
        ExitCode::FAILURE
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    let rt = config::PluginRuntime { max_instances: 8, ..Default::default() };
    let engine = match plugin::engine::PluginEngine::new(&rt) {
        Ok(e) => e,
        Err(e) => return fail(format!("{e:#}")),
    };
    let settings = match settings {
        None => None,
        Some(p) => match config::load_plugin_settings(p, &rt) {
            Ok(s) => Some(s),
            Err(e) => return fail(e.to_string()),
        },
    };
    // Check with every capability granted (or the ones the settings grant), then report which ones the component
    // actually needs.
    let granted = settings.as_ref().map_or(config::Capability::ALL.to_vec(), |s| s.capabilities.clone());
    match engine.compile(&bytes, &granted) {
        Ok(c) => {
            let defaults = config::PluginSettings::default();
            let run_with = settings.as_ref().unwrap_or(&defaults);
            let context = std::sync::Arc::new(plugin::host::PluginContext {
                name: "check".into(),
                config_json: serde_json::to_string(&run_with.config).unwrap_or_else(|_| "{}".into()),
                kv: std::sync::Arc::new(plugin::kv::MemoryKv::default()),
                memory_cap: run_with.memory,
                events: Default::default(),
                events_warned: Default::default(),
            });
            // With settings, `init` runs with their config; without, only the manifest is read.
            let manifest = match plugin::registry::smoke(&engine, &c.pre, &context, run_with, settings.is_some()) {
                Ok(m) => m,
                Err(e) => return fail(e.to_string()),
            };
            let needed: Vec<&str> =
                plugin::engine::needed_capabilities(&c.imports).iter().map(|c| c.interface()).collect();
            let mut out = std::io::stdout();
            let _ = writeln!(
                out,
                "{}: OK ({} bytes, sha256 {}, weir:plugin@{}{})",
                path.display(),
                bytes.len(),
                c.hash,
                c.pre.version(),
                if settings.is_some() { ", init accepted the config" } else { "" }
            );
            let _ = writeln!(out, "exports:\n  {}", c.exports.join("\n  "));
            let _ = writeln!(out, "imports:\n  {}", c.imports.join("\n  "));
            let (hooks, reuse, from) = match manifest {
                Some(m) => (m.hooks, m.reuse, "declared in its manifest"),
                None if c.hooks == plugin::hook::Hooks::ALL => (c.hooks, config::Isolation::Request, "no manifest"),
                None => (c.hooks, config::Isolation::Request, "declared in its weir:hooks section"),
            };
            let _ = writeln!(out, "hooks called: {}  ({from})", hooks.names().join(", "));
            let _ = writeln!(
                out,
                "isolation: at most \"{}\"  (set `isolation` to this or stricter: {})",
                reuse.as_str(),
                match reuse {
                    config::Isolation::Request => "\"request\"",
                    config::Isolation::Tenant => "\"tenant\" or \"request\"",
                    config::Isolation::Shared => "\"shared\", \"tenant\" or \"request\"",
                }
            );
            let _ = writeln!(
                out,
                "needs capabilities: [{}]  (grant them with `capabilities = [...]`)\nWASI 0.2 is linked deny-all: no files, no sockets, no environment",
                needed.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let fd_limit = server::raise_fd_limit();
    let l = &config.limits;
    let max_connections = l.max_connections.unwrap_or_else(|| server::default_max_connections(fd_limit));
    tracing::info!(fd_limit, max_connections, "connection limits");
    let opts = ServeOptions::new(l.client_header_timeout, l.keep_alive_idle, max_connections, l.drain);

    if let Some(addr) = config.mock_upstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("mock_upstream.listen {addr}: {e}"))?;
        tracing::info!("built-in mock upstream on http://{addr}");
        tokio::spawn(server::serve(listener, mock::router(None), opts, std::future::pending()));
    }

    let listen = config.listen;
    let plugins = if config.plugins.is_empty() && config.plugins_dir.is_none() {
        None
    } else {
        let cfg = config.clone();
        let registry = tokio::task::spawn_blocking(move || plugin::Registry::new(&cfg)).await??;
        registry.watch()?;
        Some(registry)
    };
    let app = pipeline::App::new(config, plugins)?;
    let otlp_client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()?;
    telemetry::init(&app.config.telemetry, otlp_client)?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let models = app.config.routes.len();
    let upstreams = app.config.upstreams.len();
    tracing::info!(
        "weir {} listening on http://{} ({upstreams} upstreams, {models} models)",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?
    );
    for (id, how) in app.upstreams.describe() {
        tracing::info!("upstream `{id}`: {how}");
    }

    if let Some(addr) = app.config.admin_listen {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("[admin] listen {addr}: cannot listen: {e}"))?;
        if !addr.ip().is_loopback() && app.admin_token.is_none() {
            tracing::warn!(%addr, "the admin listener is not on loopback and has no token: /admin/plugins is readable by anyone who reaches it");
        }
        tracing::info!("admin API on http://{addr}/admin/plugins");
        let admin_opts = ServeOptions::new(opts.header_timeout, opts.idle_timeout, 64, opts.drain);
        tokio::spawn(server::serve(admin, ingress::admin_router(app.clone()), admin_opts, std::future::pending()));
    }
    if let Some(r) = &app.config.record {
        weir::plugin::fixtures::start(r)?;
    }
    let drain_app = app.clone();
    let shutdown = async move {
        server::shutdown_signal().await;
        drain_app.draining.store(true, Ordering::Relaxed);
        let l = &drain_app.config.limits;
        if !l.drain_delay.is_zero() {
            tracing::info!(drain_delay = ?l.drain_delay, "shutting down: /readyz answers 503; still accepting (connection: close)");
            tokio::time::sleep(l.drain_delay).await;
        }
        tracing::info!(drain = ?l.drain, "shutting down: no new connections; draining open requests");
    };
    server::serve(listener, ingress::router(app), opts, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

async fn mock_upstream(listen: SocketAddr, api_key: Option<String>) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        "weir mock upstream (OpenAI + Anthropic) on http://{}{}",
        listener.local_addr()?,
        if api_key.is_some() { ", API key required" } else { "" }
    );
    let fd_limit = server::raise_fd_limit();
    let opts = ServeOptions::new(
        Duration::from_secs(10),
        Duration::from_secs(75),
        server::default_max_connections(fd_limit),
        Duration::from_secs(1),
    );
    server::serve(listener, mock::router(api_key), opts, server::shutdown_signal()).await;
    Ok(())
}
