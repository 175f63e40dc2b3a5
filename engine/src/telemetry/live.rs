//! Which labelled series still describe something on this worker. The Prometheus recorder
//! cannot forget a series, and an idle timeout would also drop the quiet series of a live
//! task, so `GET /metrics` shows a series labelled `connector` only while that connector
//! exists here, one labelled `task` only while the task does, and one labelled `partition`
//! only while that task owns the partition. Cardinality in the output is bounded by what
//! runs, however many connectors came and went.

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

#[derive(Debug, Default)]
struct State {
    connectors: HashSet<String>,
    tasks: HashSet<(String, String)>,
    /// (connector, task, topic, partition)
    partitions: HashSet<(String, String, String, String)>,
}

/// The live connectors, tasks and assigned partitions of this process.
#[derive(Debug, Default)]
pub struct Live {
    state: RwLock<State>,
}

/// The process's [`Live`] set (metrics are process-global, so is this).
pub fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(Live::default)
}

impl Live {
    fn write(&self, f: impl FnOnce(&mut State)) {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state);
    }

    /// A connector with tasks `0..tasks` now runs here (replacing any earlier task set).
    pub fn connector_up(&self, connector: &str, tasks: u32) {
        self.write(|s| {
            s.tasks.retain(|(c, _)| c != connector);
            s.connectors.insert(connector.to_owned());
            for t in 0..tasks {
                s.tasks.insert((connector.to_owned(), t.to_string()));
            }
        });
    }

    /// A connector is gone: its series, its tasks' and their partitions' leave the output.
    pub fn connector_down(&self, connector: &str) {
        self.write(|s| {
            s.connectors.remove(connector);
            s.tasks.retain(|(c, _)| c != connector);
            s.partitions.retain(|(c, ..)| c != connector);
        });
    }

    /// In a cluster, one unit of a connector now runs here: the connector (`None`, its
    /// series show) or one of its tasks (its task series show too).
    pub fn unit_up(&self, connector: &str, task: Option<u32>) {
        self.write(|s| {
            s.connectors.insert(connector.to_owned());
            if let Some(t) = task {
                s.tasks.insert((connector.to_owned(), t.to_string()));
            }
        });
    }

    /// In a cluster, a unit left this worker; once none of the connector's units is here
    /// (`any_left` false), its connector-level series leave the output too.
    pub fn unit_down(&self, connector: &str, task: Option<u32>, any_left: bool) {
        self.write(|s| {
            if let Some(t) = task {
                let t = t.to_string();
                s.tasks.remove(&(connector.to_owned(), t.clone()));
                s.partitions
                    .retain(|(c, pt, ..)| !(c == connector && *pt == t));
            }
            if !any_left {
                s.connectors.remove(connector);
                s.tasks.retain(|(c, _)| c != connector);
                s.partitions.retain(|(c, ..)| c != connector);
            }
        });
    }

    /// A task now owns these (topic, partition)s.
    pub fn assigned<'a>(
        &self,
        connector: &str,
        task: u32,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) {
        let task = task.to_string();
        self.write(|s| {
            for (topic, p) in partitions {
                s.partitions.insert((
                    connector.to_owned(),
                    task.clone(),
                    topic.to_owned(),
                    p.to_string(),
                ));
            }
        });
    }

    /// A task gave these partitions up (`None`: all of them).
    pub fn revoked(&self, connector: &str, task: u32, partitions: Option<Vec<(&str, i32)>>) {
        let task = task.to_string();
        self.write(|s| match partitions {
            None => s
                .partitions
                .retain(|(c, t, ..)| !(c == connector && *t == task)),
            Some(list) => {
                for (topic, p) in list {
                    s.partitions.remove(&(
                        connector.to_owned(),
                        task.clone(),
                        topic.to_owned(),
                        p.to_string(),
                    ));
                }
            }
        });
    }

    fn keeps(&self, state: &State, labels: &SampleLabels) -> bool {
        let Some(connector) = &labels.connector else {
            return true;
        };
        let Some(task) = &labels.task else {
            return state.connectors.contains(connector);
        };
        let key = (connector.clone(), task.clone());
        if !state.tasks.contains(&key) {
            return false;
        }
        match (&labels.topic, &labels.partition) {
            (Some(topic), Some(partition)) => {
                state
                    .partitions
                    .contains(&(key.0, key.1, topic.clone(), partition.clone()))
            }
            _ => true,
        }
    }

    /// The Prometheus text `text` without the series of what no longer runs here, and
    /// without the `# HELP`/`# TYPE` lines of families left with no series.
    pub fn filter(&self, text: &str) -> String {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(text.len());
        let mut header: Vec<&str> = Vec::new();
        let mut in_header = false;
        for line in text.lines() {
            if line.starts_with('#') {
                if !in_header {
                    header.clear();
                    in_header = true;
                }
                header.push(line);
                continue;
            }
            in_header = false;
            if line.is_empty() || !self.keeps(&state, &sample_labels(line)) {
                continue;
            }
            if !header.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                for h in header.drain(..) {
                    out.push_str(h);
                    out.push('\n');
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The labels of a sample line that tie it to something that may go away.
#[derive(Debug, Default, PartialEq)]
struct SampleLabels {
    connector: Option<String>,
    task: Option<String>,
    topic: Option<String>,
    partition: Option<String>,
}

/// Reads `name{k="v",...} value`; label values are unescaped (`\\`, `\"`, `\n`).
fn sample_labels(line: &str) -> SampleLabels {
    let mut labels = SampleLabels::default();
    let Some(open) = line.find('{') else {
        return labels;
    };
    if line[..open].contains(' ') {
        return labels; // no labels: the brace is in the value part (never, but be safe)
    }
    let mut chars = line[open + 1..].chars();
    loop {
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.is_empty() || key.starts_with('}') || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        match key.as_str() {
            "connector" => labels.connector = Some(value),
            "task" => labels.task = Some(value),
            "topic" => labels.topic = Some(value),
            "partition" => labels.partition = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE sluice_a_total counter\n\
        sluice_a_total{connector=\"keep\",task=\"0\"} 1\n\
        sluice_a_total{connector=\"gone\",task=\"0\"} 2\n\
        sluice_a_total{connector=\"keep\",task=\"7\"} 3\n\
        \n\
        # TYPE sluice_b counter\n\
        sluice_b{connector=\"gone\"} 4\n\
        \n\
        # TYPE sluice_lag gauge\n\
        sluice_lag{connector=\"keep\",task=\"0\",topic=\"t\",partition=\"1\"} 5\n\
        sluice_lag{connector=\"keep\",task=\"0\",topic=\"t\",partition=\"2\"} 6\n\
        \n\
        # TYPE sluice_rest_requests_total counter\n\
        sluice_rest_requests_total{route=\"/\"} 7\n\
        sluice_plain 8\n";

    /// A cluster's worker shows the series of the units it runs, task by task: one task
    /// moving away takes its series along, the last unit takes the connector's.
    #[test]
    fn a_cluster_worker_shows_the_units_it_runs() {
        let live = Live::default();
        live.unit_up("keep", Some(0));
        live.unit_up("keep", Some(7));
        live.unit_up("gone", Some(0));
        live.unit_down("keep", Some(7), true);
        live.unit_down("gone", Some(0), false);
        let out = live.filter(TEXT);
        assert!(
            out.contains("sluice_a_total{connector=\"keep\",task=\"0\"} 1"),
            "{out}"
        );
        assert!(!out.contains("task=\"7\""), "{out}");
        assert!(!out.contains("gone"), "{out}");
    }

    #[test]
    fn only_what_runs_is_shown() {
        let live = Live::default();
        live.connector_up("keep", 1);
        live.connector_up("gone", 1);
        live.connector_down("gone");
        live.assigned("keep", 0, [("t", 1), ("t", 2)]);
        live.revoked("keep", 0, Some(vec![("t", 2)]));
        let out = live.filter(TEXT);
        assert_eq!(
            out,
            "# TYPE sluice_a_total counter\n\
             sluice_a_total{connector=\"keep\",task=\"0\"} 1\n\
             \n\
             # TYPE sluice_lag gauge\n\
             sluice_lag{connector=\"keep\",task=\"0\",topic=\"t\",partition=\"1\"} 5\n\
             \n\
             # TYPE sluice_rest_requests_total counter\n\
             sluice_rest_requests_total{route=\"/\"} 7\n\
             sluice_plain 8\n"
        );
        live.revoked("keep", 0, None);
        assert!(!live.filter(TEXT).contains("sluice_lag"));
    }

    #[test]
    fn escaped_label_values_are_read_whole() {
        let labels = sample_labels(r#"m{stage="x",connector="a\"b,c=\\d",task="3"} 1"#);
        assert_eq!(labels.connector.as_deref(), Some("a\"b,c=\\d"));
        assert_eq!(labels.task.as_deref(), Some("3"));
        assert_eq!(sample_labels("m 1"), SampleLabels::default());
    }

    #[test]
    fn a_recreated_connector_with_fewer_tasks_hides_the_others() {
        let live = Live::default();
        live.connector_up("c", 3);
        live.connector_up("c", 2);
        let out = live.filter("m{connector=\"c\",task=\"2\"} 1\nm{connector=\"c\",task=\"1\"} 1\n");
        assert_eq!(out, "m{connector=\"c\",task=\"1\"} 1\n");
    }
}
