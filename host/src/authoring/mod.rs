//! Writing a policy outside this repository: `weir plugin new` writes a project (Rust, Python or JavaScript) with the
//! contract's WIT, a working policy with its own unit tests, the settings the gateway loads it with and a README;
//! `weir plugin build` builds the project into a component with its language's toolchain — installing the toolchain
//! into the project the first time, as `make test` does for this repository — and can put it live in a gateway's
//! watched plugins directory.
//!
//! Everything a project needs is in the `weir` binary: the contract (`wit/v0.3.0/plugin.wit`) and, for Rust, the SDK's
//! sources (`sdk/`), written out beside the policy as a path dependency. So a project builds without this repository
//! and without a registry release of the SDK; the Rust project needs crates.io (or its cache) for the SDK's three
//! dependencies, Python and JavaScript projects PyPI and npm for their componentizer, once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The contract version new projects are written for (the gateway's primary contract).
pub const CONTRACT: &str = "0.3.0";
/// The componentizers a project installs (the versions this repository builds and tests with).
const COMPONENTIZE_PY: &str = "0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-js 0.23.0 imports it without declaring it (tools/package.json says the same).
const PREVIEW2_SHIM: &str = "0.25.0";

const WIT: &str = include_str!("../../../wit/v0.3.0/plugin.wit");

/// A project's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

/// One file of a project: its path in the project and its text, with `{{name}}`-style placeholders.
type File = (&'static str, &'static str);

const COMMON: &[File] = &[
    ("weir-plugin.toml", include_str!("templates/weir-plugin.toml")),
    ("{{name}}.toml", include_str!("templates/settings.toml")),
    (".gitignore", include_str!("templates/gitignore")),
    ("README.md", include_str!("templates/README.md")),
];

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
    ("weir-sdk/Cargo.toml", include_str!("templates/sdk-Cargo.toml")),
    ("weir-sdk/src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("weir-sdk/src/keys.rs", include_str!("../../../sdk/src/keys.rs")),
    ("weir-sdk/src/testing.rs", include_str!("../../../sdk/src/testing.rs")),
    ("weir-sdk/src/util.rs", include_str!("../../../sdk/src/util.rs")),
    ("weir-sdk/wit/plugin.wit", WIT),
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("templates/python/app.py")),
    ("policy.py", include_str!("templates/python/policy.py")),
    ("test_policy.py", include_str!("templates/python/test_policy.py")),
    ("wit/plugin.wit", WIT),
];

const JS: &[File] = &[
    ("app.js", include_str!("templates/js/app.js")),
    ("policy.js", include_str!("templates/js/policy.js")),
    ("policy.test.js", include_str!("templates/js/policy.test.js")),
    ("package.json", include_str!("templates/js/package.json")),
    ("wit/plugin.wit", WIT),
];

const C: &[File] = &[
    ("app.c", include_str!("templates/c/app.c")),
    ("policy.c", include_str!("templates/c/policy.c")),
    ("policy.h", include_str!("templates/c/policy.h")),
    ("test_policy.c", include_str!("templates/c/test_policy.c")),
    ("wit/plugin.wit", WIT),
];

/// What the language's build and tests are, for the README.
fn lang_notes(lang: Lang) -> (&'static str, &'static str, &'static str) {
    match lang {
        Lang::Rust => (
            "`src/lib.rs` (the policy and its unit tests), `weir-sdk/` (the SDK, written out by `weir plugin new`)",
            "`cargo build --target wasm32-wasip2 --release` (the target is added with rustup if missing)",
            "cargo test",
        ),
        Lang::Python => (
            "`policy.py` (the rules), `app.py` (the hooks), `test_policy.py`, `wit/` (the contract)",
            "`componentize-py -d wit -w plugin componentize app` (installed into `.venv/` the first time)",
            "python3 -m unittest",
        ),
        Lang::Js => (
            "`policy.js` (the rules), `app.js` (the hooks), `policy.test.js`, `wit/` (the contract)",
            "`componentize-js app.js --wit wit -n plugin` (installed into `node_modules/` the first time)",
            "node --test",
        ),
        Lang::C => (
            "`policy.c` (the rules, plain C), `app.c` (the hooks), `test_policy.c`, `wit/` (the contract); `gen/` is \
             written by the build",
            "the C bindings written into `gen/` from `wit/`, `clang --target=wasm32-wasi -mexec-model=reactor`, the \
             module made a component with the WASI preview1 reactor adapter (all but clang inside `weir`)",
            "cc -o test_policy test_policy.c policy.c && ./test_policy",
        ),
    }
}

/// Whether `name` can name a plugin project: a plugin name (it names the `.wasm`, metrics and kv) that is also a
/// Rust package name and a Python/JS-friendly file name.
fn valid_name(name: &str) -> bool {
    crate::config::valid_plugin_name(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}

fn fill(text: &str, name: &str, lang: Lang) -> String {
    let (files, build, test) = lang_notes(lang);
    // Python and JavaScript components import every interface of their world, and each import must be granted.
    // (A C component imports only what it calls, as a Rust one does.)
    let extra = if matches!(lang, Lang::Rust | Lang::C) { "" } else { ", \"log\", \"kv\", \"trace\", \"clock\"" };
    text.replace("{{name}}", name)
        .replace("{{lang}}", lang.as_str())
        .replace("{{contract}}", CONTRACT)
        .replace("{{extra_capabilities}}", extra)
        .replace("{{componentize_js}}", COMPONENTIZE_JS)
        .replace("{{preview2_shim}}", PREVIEW2_SHIM)
        .replace("{{files}}", files)
        .replace("{{build}}", build)
        .replace("{{test}}", test)
}

/// Writes a new project for plugin `name` in `dir` (which must not exist, or be empty), returning its files.
pub fn new(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !valid_name(name) {
        bail!("`{name}` cannot name a plugin: a lower-case letter, then letters, digits, `-` and `_` (at most 64)");
    }
    if dir.exists() && std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?.next().is_some() {
        bail!("{} exists and is not empty: choose another --dir", dir.display());
    }
    let own = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
        Lang::C => C,
    };
    let mut written = Vec::new();
    for (path, text) in COMMON.iter().chain(own) {
        let path = dir.join(path.replace("{{name}}", name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
        }
        std::fs::write(&path, fill(text, name, lang)).with_context(|| format!("{}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A project's `weir-plugin.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    pub lang: Lang,
    pub contract: String,
}

impl Project {
    pub fn load(dir: &Path) -> anyhow::Result<Project> {
        let path = dir.join("weir-plugin.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: not a plugin project (`weir plugin new` writes one)", path.display()))?;
        let p: Project = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if !valid_name(&p.name) {
            bail!("{}: `name = {:?}` cannot name a plugin", path.display(), p.name);
        }
        Ok(p)
    }

    /// Where the component is written: `<dir>/<name>.wasm`.
    pub fn wasm(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.wasm", self.name))
    }

    /// The gateway settings written beside it: `<dir>/<name>.toml`.
    pub fn settings(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.toml", self.name))
    }
}

/// Runs `cmd`, failing with what it was and its status (its output goes to the terminal).
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("+ {}", shown.replace('"', ""));
    let status = cmd.status().with_context(|| format!("cannot run {shown} (is it installed?)"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Builds the project in `dir` into `<dir>/<name>.wasm` (written to a temporary name, then renamed, so a failed
/// build leaves the previous component in place) and returns its path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let p = Project::load(dir)?;
    let out = p.wasm(dir);
    let tmp = dir.join(format!(".{}.wasm.tmp", p.name));
    match p.lang {
        Lang::Rust => {
            let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
            match installed {
                Ok(o) if !String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => {
                    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).current_dir(dir))?;
                }
                // Installed, or no rustup (a toolchain installed otherwise): cargo says what is missing.
                _ => {}
            }
            run(Command::new("cargo")
                .args(["build", "--target", "wasm32-wasip2", "--release", "--quiet"])
                .current_dir(dir))?;
            let meta = Command::new("cargo")
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .current_dir(dir)
                .output()
                .context("cargo metadata")?;
            let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).context("cargo metadata's output")?;
            let target = meta["target_directory"].as_str().context("cargo metadata: no target_directory")?;
            let built =
                Path::new(target).join("wasm32-wasip2/release").join(format!("{}.wasm", p.name.replace('-', "_")));
            std::fs::copy(&built, &tmp).with_context(|| format!("{}", built.display()))?;
        }
        Lang::Python => {
            let tool = dir.join(".venv/bin/componentize-py");
            if !tool.exists() {
                run(Command::new("python3").args(["-m", "venv", ".venv"]).current_dir(dir))?;
                run(Command::new(dir.join(".venv/bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
                    .current_dir(dir))?;
            }
            run(Command::new(&tool)
                .args(["-d", "wit", "-w", "plugin", "componentize", "-p", ".", "app", "-o"])
                .arg(&tmp)
                .current_dir(dir))?;
        }
        Lang::C => build_c(dir, &tmp)?,
        Lang::Js => {
            let tool = dir.join("node_modules/.bin/componentize-js");
            if !tool.exists() {
                run(Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(dir))?;
            }
            run(Command::new(&tool)
                .args(["app.js", "--wit", "wit", "-n", "plugin", "-d", "http", "fetch-event", "-o"])
                .arg(&tmp)
                .current_dir(dir))?;
        }
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("{}", out.display()))?;
    Ok(out)
}

/// The C compiler: `$CC`, else `clang` (it must have the `wasm32-wasi` target and a WASI libc: Debian's `clang`,
/// `lld`, `wasi-libc` and `libclang-rt-dev-wasm32`, or the wasi-sdk).
fn clang() -> String {
    std::env::var("CC").ok().filter(|c| !c.is_empty()).unwrap_or_else(|| "clang".into())
}

/// Builds a C project: the bindings of the `plugin` world into `gen/` (`plugin.h`, `plugin.c`,
/// `plugin_component_type.o`), the sources into a core module, and the module into the component `out` with the WASI
/// preview1 reactor adapter (a plugin is a library of exports, not a program).
fn build_c(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(dir.join("wit")).context("wit/")?;
    let world = resolve.select_world(&[pkg], Some("plugin")).context("wit/: the world `plugin`")?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files).context("the C bindings")?;
    let gen_dir = dir.join("gen");
    std::fs::create_dir_all(&gen_dir).with_context(|| format!("{}", gen_dir.display()))?;
    for (name, bytes) in files.iter() {
        std::fs::write(gen_dir.join(name), bytes).with_context(|| format!("gen/{name}"))?;
    }
    let core = dir.join(".core.wasm.tmp");
    run(Command::new(clang())
        .args(["--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wl,--strip-debug", "-Igen", "-o"])
        .arg(&core)
        .args(["app.c", "policy.c", "gen/plugin.c", "gen/plugin_component_type.o"])
        .current_dir(dir))?;
    let module = std::fs::read(&core).with_context(|| format!("{}", core.display()))?;
    let _ = std::fs::remove_file(&core);
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| {
            e.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .context("making the component")?;
    std::fs::write(out, component).with_context(|| format!("{}", out.display()))
}

/// Puts a built project live in a gateway's watched plugins directory: the settings first, then the component,
/// each written to a temporary name and renamed, so the gateway never reads a half-written file and loads the
/// component with its settings. `shadow`: as the shadow version of the plugin (`NAME.shadow.toml`, `NAME.shadow.wasm`).
pub fn install(dir: &Path, watched: &Path, shadow: bool) -> anyhow::Result<PathBuf> {
    let p = Project::load(dir)?;
    if !watched.is_dir() {
        bail!("{} is not a directory (the gateway's `plugins_dir`)", watched.display());
    }
    let stem = if shadow { format!("{}{}", p.name, crate::plugin::shadow::SUFFIX) } else { p.name.clone() };
    let mut last = PathBuf::new();
    for (from, ext) in [(p.settings(dir), "toml"), (p.wasm(dir), "wasm")] {
        let name = format!("{stem}.{ext}");
        let to = watched.join(&name);
        let tmp = watched.join(format!(".{name}.tmp"));
        std::fs::copy(&from, &tmp).with_context(|| format!("{} → {}", from.display(), tmp.display()))?;
        std::fs::rename(&tmp, &to).with_context(|| format!("{}", to.display()))?;
        last = to;
    }
    Ok(last)
}

/// What a build reads: every file of the project with its size and modification time, except what builds write
/// (`target/`, `.venv/`, `node_modules/`, hidden files, components).
fn sources(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || matches!(name.as_ref(), "target" | "node_modules" | "__pycache__") {
                continue;
            }
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(path),
                Ok(m) if path.extension().is_none_or(|x| x != "wasm") => {
                    out.push((path, m.len(), m.modified().ok()));
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// `weir plugin watch`: builds and installs the project in `dir` now and after every change to its files (checked
/// every `every`), until interrupted. A failed build is reported and the installed version keeps serving; each
/// successful build goes live as with `build --install` (`shadow`: as the shadow version).
pub fn watch(dir: &Path, watched: &Path, shadow: bool, every: std::time::Duration) -> anyhow::Result<()> {
    Project::load(dir)?;
    let mut seen = None;
    loop {
        let now = sources(dir);
        if seen.as_ref() != Some(&now) {
            match build(dir).and_then(|_| install(dir, watched, shadow)) {
                Ok(live) => println!("installed {} (watching {} for changes)", live.display(), dir.display()),
                Err(e) => println!("build failed, the installed version keeps serving: {e:#}"),
            }
            // After the build: what it wrote (a lock file) is not a change of the author's.
            seen = Some(sources(dir));
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_written_out_has_the_sdk_crates_dependencies() {
        // The standalone Cargo.toml of the SDK a Rust project gets must build the same crate as sdk/Cargo.toml.
        let ours: toml::Table = toml::from_str(include_str!("../../../sdk/Cargo.toml")).unwrap();
        let theirs: toml::Table = toml::from_str(include_str!("templates/sdk-Cargo.toml")).unwrap();
        for table in ["dependencies", "features"] {
            assert_eq!(ours[table], theirs[table], "templates/sdk-Cargo.toml [{table}] differs from sdk/Cargo.toml");
        }
        assert_eq!(theirs["package"]["name"].as_str(), Some("weir-sdk"));
        assert!(include_str!("../../../sdk/src/lib.rs").contains(&format!("weir:plugin@{CONTRACT}")));
    }

    #[test]
    fn new_writes_a_project_and_refuses_to_overwrite_one() {
        let dir = std::env::temp_dir().join(format!("weir-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let d = dir.join(lang.as_str());
            let files = new("gate", lang, &d).unwrap();
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(!text.contains("{{"), "{}: a placeholder left", f.display());
            }
            let p = Project::load(&d).unwrap();
            assert_eq!((p.name.as_str(), p.lang, p.contract.as_str()), ("gate", lang, CONTRACT));
            let settings: toml::Table = toml::from_str(&std::fs::read_to_string(p.settings(&d)).unwrap()).unwrap();
            let caps = settings["capabilities"].as_array().unwrap().len();
            assert_eq!(caps, if matches!(lang, Lang::Rust | Lang::C) { 1 } else { 5 }, "{lang:?}");
            let e = new("gate", lang, &d).unwrap_err().to_string();
            assert!(e.contains("not empty"), "{e}");
        }
        assert!(new("Gate", Lang::Rust, &dir.join("x")).is_err());
        assert!(new("../gate", Lang::Rust, &dir.join("y")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
