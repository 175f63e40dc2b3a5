//! Observability against the real stack: the stack's Prometheus scrapes a worker running
//! a file source and a file sink, and PromQL through its HTTP API sees written records
//! flowing and the sink's per-partition lag; every family the worker exports is in
//! METRICS.md; JSON logs carry connector and task; a level changed over `/admin/loggers`
//! takes effect in the running process; and 50 connectors created and deleted leave no
//! series behind.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{state_topics, worker_properties, TempDir, WorkerProcess};
use serde_json::{json, Value};
use sluice_engine::telemetry::catalog;
use sluice_testkit::{free_port, http_get, stack, unique_name, Stack};

/// The first PromQL result's value, once `query` returns one within `timeout`.
fn wait_for_series(stack: &Stack, query: &str, timeout: Duration) -> Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = stack.promql(query)?;
        if !result.is_empty() {
            return Ok(result);
        }
        ensure!(
            Instant::now() < deadline,
            "PromQL {query:?} returned nothing in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Metric names of the sample lines of a Prometheus text body.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn prometheus_scrapes_rates_lag_and_states_of_a_running_pipeline() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("observability")?;
    let port = free_port()?;
    let topic = unique_name("obs");
    let input = dir.write("input.txt", "")?;
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("obs"),
            &unique_name("obs-offsets"),
            "log.format=json\noffset.flush.interval.ms=500\n",
        ),
    )?;
    let source = dir.write(
        "source.properties",
        &format!(
            "name=obs-source\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\n",
            input.display()
        ),
    )?;
    let sink = dir.write(
        "sink.properties",
        &format!(
            "name=obs-sink\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n",
            dir.0.join("out.txt").display()
        ),
    )?;
    let mut w = WorkerProcess::standalone(&worker, &[&source, &sink], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let (status, health) = w.get_json("/health")?;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");

    // Lines keep arriving while Prometheus scrapes, so the rate is measured on live traffic.
    let writer_input = input;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || -> Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&writer_input)?;
        let mut n = 0_u64;
        while stop_rx.try_recv().is_err() {
            for _ in 0..200 {
                writeln!(file, "line {n}")?;
                n += 1;
            }
            file.flush()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(n)
    });

    let target = stack.scrape(port)?;
    let test = &target.name;
    let written = wait_for_series(
        stack,
        &format!(
            "sum(rate(sluice_source_records_written_total{{test=\"{test}\",connector=\"obs-source\"}}[5s])) > 0"
        ),
        Duration::from_secs(90),
    )?;
    assert!(value_of(&written[0]) > 0.0, "{written:?}");
    let lag = wait_for_series(
        stack,
        &format!("sluice_sink_consumer_lag_records{{test=\"{test}\",connector=\"obs-sink\",topic=\"{topic}\"}}"),
        Duration::from_secs(60),
    )?;
    assert_eq!(lag[0]["metric"]["partition"], "0", "{lag:?}");
    assert!(value_of(&lag[0]) >= 0.0, "{lag:?}");
    let running = wait_for_series(
        stack,
        &format!(
            "sum by (connector) (sluice_task_status{{test=\"{test}\",state=\"running\"}}) == 1"
        ),
        Duration::from_secs(30),
    )?;
    assert_eq!(running.len(), 2, "{running:?}");
    let commits = wait_for_series(
        stack,
        &format!("histogram_quantile(0.99, sum by (le) (rate(sluice_source_transaction_commit_seconds_bucket{{test=\"{test}\"}}[10s])))"),
        Duration::from_secs(30),
    )?;
    assert!(value_of(&commits[0]) > 0.0, "{commits:?}");

    // Every family the worker exports is documented, with its documented labels.
    let (_, text) = http_get(port, "/metrics")?;
    let docs = catalog::metrics();
    for name in sample_names(&text) {
        assert!(
            catalog::family_of(&docs, &name).is_some(),
            "{name} is exported but not in METRICS.md"
        );
    }
    assert!(text.contains("# HELP sluice_source_records_written_total Records committed"));

    // A level set over REST applies to the running process: debug lines appear.
    let (status, body) = w.request(
        "PUT",
        "/admin/loggers/sluice_engine::task::source",
        Some(&json!({"level": "DEBUG"})),
    )?;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.log_text().contains("\"level\":\"DEBUG\"") {
        ensure!(
            Instant::now() < deadline,
            "no DEBUG line after the level change"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, loggers) = w.get_json("/admin/loggers")?;
    assert_eq!(loggers["sluice_engine::task::source"]["level"], "DEBUG");

    let _ = stop_tx.send(());
    let lines = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert!(lines > 0);
    w.terminate(Duration::from_secs(30))?;

    // JSON logs: every line is an object; task lines name connector and task.
    let log = w.log_text();
    let mut task_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value =
            serde_json::from_str(line).with_context(|| format!("log line is not JSON: {line}"))?;
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
        if event["message"] == "task started" {
            assert!(
                event["connector"].is_string() && !event["task"].is_null(),
                "{line}"
            );
            task_lines += 1;
        }
    }
    assert!(task_lines >= 2, "{log}");
    Ok(())
}

#[test]
fn fifty_connectors_created_and_deleted_leave_no_series() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("cardinality")?;
    let port = free_port()?;
    let input = dir.write("input.txt", "a\nb\nc\n")?;
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("card"),
            &unique_name("card-offsets"),
            &format!(
                "{}exactly.once.source.support=disabled\n",
                state_topics("card")
            ),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let topic = unique_name("card");
    let prefix = unique_name("card-c");
    // Sample lines, leaving out the REST API's own (they grow with the routes called).
    let series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("sluice_rest_"))
            .count()
    };
    let (_, before) = http_get(port, "/metrics")?;

    for i in 0..50 {
        let body = json!({"name": format!("{prefix}-{i}"), "config": {
            "connector.class": "FileStreamSource", "file": input, "topic": topic}});
        let (status, text) = w.request("POST", "/connectors", Some(&body))?;
        ensure!(status == 201, "{text}");
    }
    // Every connector's records are written, so each has its full set of task series.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, text) = http_get(port, "/metrics")?;
        let writing = text
            .lines()
            .filter(|l| {
                l.starts_with("sluice_source_records_written_total{")
                    && l.contains(&format!("connector=\"{prefix}-"))
                    && !l.ends_with(" 0")
            })
            .count();
        if writing == 50 {
            assert!(series(&text) > series(&before) + 50 * 5);
            break;
        }
        if Instant::now() >= deadline {
            let log = w.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let written: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("sluice_source_records_written_total"))
                .take(5)
                .collect();
            bail!(
                "{writing} of 50 connectors wrote their records ({written:?}); the worker's log ends:\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    for i in 0..50 {
        let (status, text) = w.request("DELETE", &format!("/connectors/{prefix}-{i}"), None)?;
        ensure!(status == 204, "{text}");
    }
    let (_, after) = http_get(port, "/metrics")?;
    let left: Vec<&str> = after
        .lines()
        .filter(|l| l.contains(&format!("connector=\"{prefix}-")))
        .collect();
    assert!(left.is_empty(), "series of deleted connectors: {left:?}");
    // What remains is the worker's own series: connector and task counts, start-ups,
    // router batches.
    let added = series(&after).saturating_sub(series(&before));
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("sluice_rest_"))
            .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_owned()))
            .collect()
    };
    let new: Vec<String> = names(&after).difference(&names(&before)).cloned().collect();
    assert!(added <= 8, "{added} series more than before: {new:?}");
    let (_, count) = http_get(port, "/metrics")?;
    assert!(count.contains("sluice_connectors 0"), "{count}");
    Ok(())
}
