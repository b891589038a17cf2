//! The host's layering, checked on its source: which top-level module uses which (`crate::<module>` paths), and
//! that the modules the architecture keeps out of circles stay out of them.
//!
//! - No module is in a circle: a module uses only what stands below it. In particular `record` (what a request
//!   learnt) does not know who consumes it, the completion phase reads plugins only through their report, and a
//!   dialect returns what it observed for the usage tap to apply.
//! - `telemetry` is infrastructure (exporter, registry): it uses no request-level module.
//! - `config` is plain data: it uses nothing above the API types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name as `crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            // Code only: a doc comment may name a module without using it.
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let uses = g.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    g
}

/// Whether `to` is reachable from `from`.
fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for next in g.get(&m).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_is_in_a_circle() {
    let g = graph();
    assert!(g.contains_key("record") && g.contains_key("completion"), "{g:?}");
    for m in g.keys() {
        assert!(!reaches(&g, m, m), "`{m}` reaches itself: {g:#?}");
    }
}

#[test]
fn telemetry_and_config_use_nothing_request_level() {
    let g = graph();
    let request_level = ["record", "completion", "plugin", "pipeline", "ingress", "upstream", "dialect"];
    for low in ["telemetry", "config"] {
        for high in request_level {
            assert!(!reaches(&g, low, high), "`{low}` reaches `{high}`: {:?}", g.get(low));
        }
    }
}

#[test]
fn the_checker_sees_uses() {
    // The check above is only as good as the graph: the pipeline does use the record and the plugins.
    let g = graph();
    assert!(reaches(&g, "pipeline", "record") && reaches(&g, "pipeline", "plugin"));
    assert!(reaches(&g, "completion", "telemetry"));
}
