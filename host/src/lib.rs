//! The `weir` gateway as a library: the binary (`main.rs`) is its command line, and the fuzz targets (`fuzz/`) and
//! the corpus replay test (`tests/fuzz_corpus.rs`) call [`fuzz`]'s entry points. The modules are public for those
//! two users only; nothing here is a stable API.
//!
//! Data flow of one request: [`ingress`] (route → endpoint) → [`pipeline`] (the driver of the phases: intake,
//! plugins' `on-request`, parse, plan, attempt via [`upstream::retry`] and the upstream's [`provider`], answer
//! through [`sse`], [`dialect`] and [`usage`]) → [`record`] frozen → [`completion`] (plugins' `on-complete`, then the log line, and [`telemetry`]'s
//! spans and metrics).

pub mod api;
pub mod authoring;
pub mod canonical;
pub mod completion;
pub mod config;
pub mod dialect;
pub mod error;
pub mod flight;
pub mod fuzz;
pub mod ingress;
pub mod mock;
pub mod pipeline;
pub mod plugin;
pub mod provider;
pub mod record;
pub mod server;
pub mod sse;
pub mod summary;
pub mod sync;
pub mod telemetry;
pub mod upstream;
pub mod usage;
