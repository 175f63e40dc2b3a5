//! The metric catalog: `engine/METRICS.md` is the one list of every metric, read here so the
//! exporter's `# HELP` lines come from it and tests can hold the code, a live scrape and the
//! Grafana dashboard to it.

/// The document, compiled in.
pub const DOCUMENT: &str = include_str!("../../METRICS.md");

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One documented metric.
#[derive(Debug, Clone)]
pub struct MetricDoc {
    /// Full name, `sluice_...`.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names.
    pub labels: Vec<&'static str>,
    /// What it means.
    pub help: &'static str,
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

/// Every documented metric, in the document's order. A row that does not parse is a
/// mistake in the document; [`tests`] reject it.
pub fn metrics() -> Vec<MetricDoc> {
    DOCUMENT
        .lines()
        .filter(|l| l.starts_with("| `sluice_"))
        .filter_map(|row| {
            let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
            let [name, kind, labels, help] = cells.as_slice() else {
                return None;
            };
            let kind = match kind.trim() {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                _ => return None,
            };
            Some(MetricDoc {
                name: unquote(name),
                kind,
                labels: labels
                    .split(',')
                    .map(unquote)
                    .filter(|l| !l.is_empty())
                    .collect(),
                help: help.trim(),
            })
        })
        .collect()
}

/// Registers every metric's help text with the installed recorder.
pub fn describe_all() {
    for m in metrics() {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The documented family a sample's metric name belongs to (`x_bucket` -> `x` for a
/// histogram), if any.
pub fn family_of<'a>(docs: &'a [MetricDoc], sample: &str) -> Option<&'a MetricDoc> {
    docs.iter().find(|m| m.name == sample).or_else(|| {
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            docs.iter()
                .find(|m| m.name == base && m.kind == Kind::Histogram)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_document_parses() {
        let rows = DOCUMENT
            .lines()
            .filter(|l| l.starts_with("| `sluice_"))
            .count();
        let docs = metrics();
        assert_eq!(docs.len(), rows, "a row of METRICS.md does not parse");
        let mut names: Vec<_> = docs.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), docs.len(), "a metric is listed twice");
        for m in &docs {
            assert!(!m.help.is_empty(), "{} has no meaning", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                m.name
            );
        }
    }

    #[test]
    fn histogram_samples_map_to_their_family() {
        let docs = metrics();
        let family = family_of(&docs, "sluice_sink_put_batch_seconds_bucket");
        assert_eq!(
            family.map(|m| m.name),
            Some("sluice_sink_put_batch_seconds")
        );
        assert!(family_of(&docs, "sluice_connectors_bucket").is_none());
    }

    /// Every `counter!`/`gauge!`/`histogram!` in the workspace's sources names a documented
    /// metric of that type, and every documented metric is emitted somewhere.
    #[test]
    fn the_code_and_the_document_name_the_same_metrics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["engine/src", "engine/group/src", "connectors"] {
            collect_rust_files(&root.join(dir), &mut files);
        }
        let mut emitted = std::collections::BTreeMap::new();
        for file in &files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (macro_name, kind) in [
                ("counter!(", Kind::Counter),
                ("gauge!(", Kind::Gauge),
                ("histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue; // a name passed in a variable: this module's own describe
                    };
                    let name: String = rest.chars().take_while(|c| *c != '"').collect();
                    if !name.starts_with("sluice_") {
                        continue;
                    }
                    emitted.insert(name, (kind, file.display().to_string()));
                }
            }
        }
        let docs = metrics();
        for (name, (kind, file)) in &emitted {
            let doc = docs.iter().find(|m| m.name == name);
            assert!(doc.is_some(), "{name} ({file}) is not in METRICS.md");
            assert_eq!(
                doc.map(|d| d.kind),
                Some(*kind),
                "{name}: type differs from METRICS.md"
            );
        }
        for m in &docs {
            assert!(
                emitted.contains_key(m.name),
                "{} is in METRICS.md but no code emits it",
                m.name
            );
        }
    }

    /// Every expression of `value` (a Grafana dashboard), depth first.
    fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => expressions(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_dashboard_parses_and_queries_only_documented_metrics() {
        let text = include_str!("../../../deploy/grafana/sluice-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(text).expect("the dashboard is JSON");
        assert!(dashboard["panels"]
            .as_array()
            .is_some_and(|p| p.len() >= 10));
        let mut exprs = Vec::new();
        expressions(&dashboard, &mut exprs);
        let docs = metrics();
        let mut used = std::collections::BTreeSet::new();
        for expr in &exprs {
            for (at, _) in expr.match_indices("sluice_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = family_of(&docs, &name);
                assert!(
                    family.is_some(),
                    "the dashboard queries {name}, not in METRICS.md"
                );
                used.extend(family.map(|m| m.name));
            }
        }
        // What the dashboard promises to show.
        for needed in [
            "sluice_source_records_written_total",
            "sluice_sink_consumer_lag_records",
            "sluice_task_record_errors_total",
            "sluice_dlq_records_total",
            "sluice_source_transaction_commit_seconds",
            "sluice_task_status",
            "sluice_task_restarts_total",
        ] {
            assert!(
                used.contains(needed),
                "the dashboard has no panel on {needed}"
            );
        }
    }

    fn collect_rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") && !path.ends_with("tests") {
                collect_rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}
