//! What `weir check-config` prints: a human summary of what a config would serve, with what the environment adds
//! (whether each upstream's key variable is set, where traces would go). The environment is passed in, so the
//! config stays plain data and this stays testable.

use crate::config::{Config, PluginSpec};

/// The summary of `c`, with `env` as the environment.
pub fn of(c: &Config, env: impl Fn(&str) -> Option<String>) -> String {
    write(c, &env).unwrap_or_default()
}

// A chain of writes into a String, which cannot fail; `?` only because `writeln!` returns a Result.
fn write(c: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<String, std::fmt::Error> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let f = &mut out;
    writeln!(f, "listen: http://{}", c.listen)?;
    if let Some(m) = c.mock_upstream {
        writeln!(f, "built-in mock upstream: http://{m}")?;
    }
    writeln!(f, "upstreams:")?;
    for u in &c.upstreams {
        let key = match &u.api_key_env {
            Some(e) if env(e).is_some() => format!("key from ${e}"),
            Some(e) => format!("key from ${e} (NOT SET)"),
            None => "no key".into(),
        };
        writeln!(f, "  {:<20} {:<17} {}  ({key})", u.id, format!("{:?}", u.kind).to_lowercase(), u.base_url)?;
    }
    writeln!(f, "models:")?;
    for (model, cands) in &c.routes {
        let list: Vec<String> = cands
            .iter()
            .map(|cand| {
                let mut s =
                    format!("{} (priority {}, weight {})", c.upstream(cand.upstream).id, cand.priority, cand.weight);
                if let Some(m) = &cand.model {
                    s.push_str(&format!(" as `{m}`"));
                }
                s
            })
            .collect();
        writeln!(f, "  {model:<28} -> {}", list.join(", "))?;
    }
    // In the order they run (the registry's: `order`, then name).
    let mut plugins: Vec<&PluginSpec> = c.plugins.iter().collect();
    plugins.sort_by(|a, b| (a.settings.order, &a.name).cmp(&(b.settings.order, &b.name)));
    for p in plugins {
        let caps: Vec<&str> = p.settings.capabilities.iter().map(|c| c.interface()).collect();
        writeln!(
            f,
            "plugin {:<16} {} (order {}, {:?}, capabilities [{}])",
            p.name,
            p.file.display(),
            p.settings.order,
            p.settings.failure,
            caps.join(", ")
        )?;
    }
    if let Some(d) = &c.plugins_dir {
        writeln!(f, "plugins directory (watched): {}", d.display())?;
    }
    writeln!(f, "plugin state (kv): {}", c.kv.describe())?;
    let t = &c.translation;
    if t.enabled {
        let order = if t.prefer_same_family { "own family first" } else { "by priority and weight only" };
        let drops = if t.drop_fields.is_empty() { "none".to_string() } else { t.drop_fields.join(", ") };
        writeln!(
            f,
            "translation: on ({order}; default max_tokens {}; fields dropped instead of refused: {drops})",
            t.default_max_tokens
        )?;
    } else {
        writeln!(f, "translation: off (upstreams of the other API family are skipped)")?;
    }
    match crate::telemetry::trace::ExportTarget::resolve(&c.telemetry, env) {
        Ok(Some(t)) => writeln!(f, "{}", crate::telemetry::trace::describe(&t, &c.telemetry))?,
        Ok(None) => writeln!(f, "traces: off (no OTLP endpoint in [telemetry] or OTEL_EXPORTER_OTLP_ENDPOINT)")?,
        Err(e) => writeln!(f, "traces: {e}")?,
    }
    write!(
        f,
        "timeouts: connect {:?}, first byte {:?}, idle {:?}; retry: {} attempts, backoff {:?}..{:?}",
        c.timeouts.connect,
        c.timeouts.first_byte,
        c.timeouts.idle,
        c.retry.attempts,
        c.retry.backoff_base,
        c.retry.backoff_cap
    )?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
listen = "127.0.0.1:8080"
[[upstreams]]
id = "oai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OAI_KEY"
models = ["gpt-4o-mini"]
[telemetry]
otlp_protocol = "grpc"
"#;

    #[test]
    fn the_summary_reads_only_the_environment_it_is_given() {
        let c = Config::parse(CONFIG, std::path::Path::new("weir.toml")).unwrap();
        let bare = of(&c, |_| None);
        assert!(bare.contains("oai") && bare.contains("key from $OAI_KEY (NOT SET)"), "{bare}");
        assert!(bare.contains("gpt-4o-mini"), "{bare}");
        assert!(bare.contains("grpc"), "the config's protocol: {bare}");
        let set = of(&c, |k| (k == "OAI_KEY").then(|| "sk-x".to_string()));
        assert!(set.contains("key from $OAI_KEY)") && !set.contains("NOT SET"), "{set}");
        assert!(!set.contains("sk-x"), "never the key itself");
    }
}
