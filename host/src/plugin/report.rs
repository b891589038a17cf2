//! What the plugins did in one request, as a value: made from the request's [`super::Chain`] once `on-complete` has
//! run and the instances are released, and handed to the completion phase for the log line, the spans and the
//! metrics. Nothing after that point reads a live chain.

use std::time::{Duration, Instant};

use super::hook::Hook;

/// The plugins' part of a finished request.
#[derive(Debug, Default, Clone)]
pub struct PluginReport {
    /// Name and version of each plugin of the chain, in chain order (shared by every request of one plugin set);
    /// [`HookCall::plugin`] and [`ChunkTotals::plugin`] index it.
    pub plugins: std::sync::Arc<[(String, String)]>,
    /// Trace attributes the plugins set (`weir.plugin.<name>.<key>`), in plugin order.
    pub attributes: Vec<(String, String)>,
    /// Trace events the plugins added (`weir.plugin.<name>.<event>`), with when.
    pub events: Vec<(String, Instant)>,
    /// Per plugin that ran `on-chunk`: its name, the number of calls and their total time.
    pub chunks: Vec<ChunkTotals>,
    /// The hook calls, for spans (`on-chunk` only with `telemetry.chunk_spans`).
    pub calls: Vec<HookCall>,
}

/// One plugin's `on-chunk` calls in a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkTotals {
    /// The plugin's position in the chain ([`PluginReport::plugins`]).
    pub plugin: usize,
    pub calls: u32,
    pub total: Duration,
}

/// One plugin hook call.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// The plugin's position in the chain ([`PluginReport::plugins`]).
    pub plugin: usize,
    pub hook: Hook,
    pub start: Instant,
    pub took: Duration,
    /// The decision (`continue`, `route`, `pass`, `hold`, …), or `error` / `failed`.
    pub outcome: &'static str,
    pub error: Option<String>,
}

impl PluginReport {
    /// Name and version of the plugin that made `call` (`?` for an index out of range, which the chain never makes).
    pub fn identity(&self, call: &HookCall) -> (&str, &str) {
        self.plugin(call.plugin)
    }

    /// Name and version of the plugin at position `i` (`?` out of range).
    pub fn plugin(&self, i: usize) -> (&str, &str) {
        self.plugins.get(i).map_or(("?", "?"), |(n, v)| (n.as_str(), v.as_str()))
    }

    /// The attributes as the log line shows them: `k=v,k=v`, or `None` when there are none.
    pub fn attributes_line(&self) -> Option<String> {
        if self.attributes.is_empty() {
            return None;
        }
        Some(self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn calls_name_their_plugin_and_attributes_make_one_log_field() {
        let now = Instant::now();
        let r = PluginReport {
            plugins: vec![("auth".into(), "aaa".into()), ("cost".into(), "bbb".into())].into(),
            attributes: vec![
                ("weir.plugin.cost.usd".into(), "0.1".into()),
                ("weir.plugin.auth.key".into(), "k1".into()),
            ],
            calls: vec![HookCall {
                plugin: 1,
                hook: Hook::OnComplete,
                start: now,
                took: Duration::ZERO,
                outcome: "ok",
                error: None,
            }],
            ..PluginReport::default()
        };
        assert_eq!(r.identity(&r.calls[0]), ("cost", "bbb"));
        let stray = HookCall { plugin: 7, ..r.calls[0].clone() };
        assert_eq!(r.identity(&stray), ("?", "?"));
        assert_eq!(r.attributes_line().as_deref(), Some("weir.plugin.cost.usd=0.1,weir.plugin.auth.key=k1"));
        assert_eq!(PluginReport::default().attributes_line(), None);
    }
}
