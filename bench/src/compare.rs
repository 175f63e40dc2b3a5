//! Sluice side by side with Apache Kafka Connect and the broker's own tools, on the same
//! broker in the same run (`bench/run` resolves Kafka Connect from Maven Central and
//! calls this). Each contender is a separate process, measured from `/proc`:
//!
//! - the limit: Kafka's `ProducerPerformance` (plain and transactional) with the record
//!   size of the run, Java producer defaults (acks=all), and `ConsumerPerformance`;
//! - Kafka Connect 4.1 distributed, one worker: FileStreamSource with exactly-once on and
//!   off, FileStreamSink;
//! - Sluice's `sluice worker` with the very same worker keys and connector JSON.
//!
//! Sizes 100 B and 1 KiB, `SLUICE_BENCH_RECORDS` records a run (1,000,000 unless set),
//! `SLUICE_BENCH_ROUNDS` rounds (3) with the order of Sluice and Kafka Connect swapped each
//! round; medians with min and max go to `bench/RESULTS.md`. A source's throughput is
//! timed from its first committed record to its last as a read_committed consumer sees
//! them; a sink's from the first byte in its output file to the last. CPU seconds and peak
//! RSS are the whole process's, start-up included. Latency: lines appended at a steady
//! rate, each carrying its send time, read back by a read_committed consumer.
//!
//! Environment (set by `bench/run`): `KC_CLASSPATH`, `KC_PLUGIN_PATH`, `KC_LOG4J`, and
//! optionally `SLUICE_BIN`, `JAVA`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use sluice_bench::workers::{Tool, Watched, Workers, STRING_CONVERTERS};
use sluice_bench::{percentile, write_results};
use sluice_testkit::{repo_root, stack, unique_name, Stack};

/// One measured run.
#[derive(Debug, Clone)]
struct Sample {
    records_per_s: f64,
    mb_per_s: f64,
    cpu_per_m: f64,
    rss_mib: f64,
    /// Process start to REST API ready.
    ready_s: Option<f64>,
    /// Process start to the first record committed (or written, for sinks).
    first_s: Option<f64>,
}

/// What a row of the results is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    size: usize,
    workload: &'static str,
    tool: &'static str,
}

struct Env {
    stack: &'static Stack,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    workers: Workers,
    records: u64,
}

impl Env {
    /// A fresh one-partition topic, so both contenders write to the same layout.
    fn topic(&self, prefix: &str) -> Result<String> {
        self.rt.block_on(self.stack.create_topic(prefix, 1))
    }

    /// A read_committed consumer of `topic` from its start, in a group of its own, with
    /// one fetch setting of the caller's.
    fn committed_reader(&self, topic: &str, (key, value): (&str, &str)) -> Result<BaseConsumer> {
        let consumer: BaseConsumer = self
            .stack
            .kafka_config()
            .set("group.id", unique_name("cmp-reader"))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set(key, value)
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// The connector JSON both contenders get: one FileStreamSource task.
    fn file_source(input: &Path, topic: &str) -> serde_json::Value {
        serde_json::json!({"name": unique_name("src"), "config": {
            "connector.class": "FileStreamSource", "tasks.max": "1",
            "file": input, "topic": topic}})
    }

    /// Counts `topic`'s committed records until `records`; returns (first, last) arrival.
    fn count(&self, topic: &str, w: &mut Watched) -> Result<(Instant, Instant)> {
        // Large fetches: counting must not be what limits the contender.
        let consumer = self.committed_reader(topic, ("fetch.max.bytes", "52428800"))?;
        let (mut n, mut first) = (0_u64, None);
        let deadline = Instant::now() + Duration::from_secs(600);
        while n < self.records {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => {
                    n += 1;
                    first.get_or_insert_with(Instant::now);
                }
                Some(Err(e)) => bail!("counting {topic}: {e}"),
                None => {
                    w.alive()?;
                    ensure!(
                        Instant::now() < deadline,
                        "{n} of {} records in 10 minutes",
                        self.records
                    );
                }
            }
        }
        Ok((first.unwrap_or_else(Instant::now), Instant::now()))
    }

    /// A FileStreamSource run; `interval_ms`: Kafka Connect's `transaction.boundary=interval`
    /// (KIP-618) instead of one transaction per poll.
    fn source(
        &self,
        tool: Tool,
        exactly_once: bool,
        interval_ms: Option<u64>,
        input: &Path,
        size: usize,
    ) -> Result<(Sample, String)> {
        let topic = self.topic("cmp-src")?;
        let (mut w, port, ready) =
            self.workers
                .worker(tool, exactly_once, &unique_name("source"))?;
        let mut body = Self::file_source(input, &topic);
        if let Some(ms) = interval_ms {
            body["config"]["transaction.boundary"] = "interval".into();
            body["config"]["transaction.boundary.interval.ms"] = ms.to_string().into();
        }
        self.workers.create(port, &body)?;
        let (first, last) = self.count(&topic, &mut w)?;
        let (cpu, rss) = w.usage();
        w.stop();
        Ok((
            self.sample(size, last - first, cpu, rss, ready, first - w.started),
            topic,
        ))
    }

    fn sink(&self, tool: Tool, topic: &str, size: usize) -> Result<Sample> {
        let (mut w, port, ready) = self.workers.worker(tool, false, &unique_name("sink"))?;
        let out = self.dir.join(unique_name("sink-out"));
        self.workers.create(
            port,
            &serde_json::json!({"name": unique_name("sink"), "config": {
                "connector.class": "FileStreamSink", "tasks.max": "1",
                "file": out, "topics": topic}}),
        )?;
        let expected = self.records * size as u64;
        let (mut first, deadline) = (None, Instant::now() + Duration::from_secs(600));
        loop {
            let len = std::fs::metadata(&out).map_or(0, |m| m.len());
            if len > 0 {
                first.get_or_insert_with(Instant::now);
            }
            if len >= expected {
                break;
            }
            w.alive()?;
            ensure!(
                Instant::now() < deadline,
                "sink wrote {len} of {expected} bytes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let last = Instant::now();
        let first = first.unwrap_or(last);
        let (cpu, rss) = w.usage();
        w.stop();
        let _ = std::fs::remove_file(&out);
        Ok(self.sample(size, last - first, cpu, rss, ready, first - w.started))
    }

    fn sample(
        &self,
        size: usize,
        window: Duration,
        cpu: f64,
        rss: f64,
        ready: f64,
        first: Duration,
    ) -> Sample {
        let secs = window.as_secs_f64().max(1e-3);
        let n = self.records as f64;
        Sample {
            records_per_s: n / secs,
            mb_per_s: n * size as f64 / secs / 1e6,
            cpu_per_m: cpu / n * 1e6,
            rss_mib: rss,
            ready_s: Some(ready),
            first_s: Some(first.as_secs_f64()),
        }
    }

    /// Kafka's ProducerPerformance; `transactional`: one transaction per 100 ms.
    fn producer_perf(&self, size: usize, transactional: bool) -> Result<(Sample, String)> {
        let topic = unique_name("cmp-pp");
        let mut args: Vec<String> = [
            "--topic",
            &topic,
            "--num-records",
            &self.records.to_string(),
            "--record-size",
            &size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={}", self.stack.kafka_bootstrap),
            "acks=all",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        if transactional {
            args.extend(
                [
                    "--transactional-id",
                    &unique_name("pp"),
                    "--transaction-duration-ms",
                    "100",
                ]
                .iter()
                .map(ToString::to_string),
            );
        }
        let (text, cpu, rss) = self.tool("ProducerPerformance", &args)?;
        // "1000000 records sent, 512345.6 records/sec (48.86 MB/sec), ..."
        let summary = text
            .lines()
            .rev()
            .find(|l| l.contains("records sent,"))
            .with_context(|| format!("no summary from ProducerPerformance: {text}"))?;
        let rate: f64 = summary
            .split(", ")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("ProducerPerformance summary {summary:?}"))?;
        Ok((self.tool_sample(rate, size, cpu, rss), topic))
    }

    /// Runs one of Kafka's tools (`org.apache.kafka.tools.<name>`) to its end: its output,
    /// CPU seconds and peak RSS.
    fn tool(&self, name: &str, args: &[String]) -> Result<(String, f64, f64)> {
        let log = self.dir.join(unique_name(name));
        let mut w = self
            .workers
            .java(&format!("org.apache.kafka.tools.{name}"), args, &log)?;
        let status = w.child.wait()?;
        let (cpu, rss) = w.usage();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(status.success(), "{name} failed: {text}");
        Ok((text, cpu, rss))
    }

    /// A tool's figures: it reports its own rate; CPU and memory come from /proc.
    fn tool_sample(&self, rate: f64, size: usize, cpu: f64, rss: f64) -> Sample {
        Sample {
            records_per_s: rate,
            mb_per_s: rate * size as f64 / 1e6,
            cpu_per_m: cpu / self.records as f64 * 1e6,
            rss_mib: rss,
            ready_s: None,
            first_s: None,
        }
    }

    /// Kafka's ConsumerPerformance reading `topic` whole.
    fn consumer_perf(&self, topic: &str, size: usize) -> Result<Sample> {
        let args: Vec<String> = [
            "--bootstrap-server",
            &self.stack.kafka_bootstrap,
            "--topic",
            topic,
            "--messages",
            &self.records.to_string(),
            "--group",
            &unique_name("cp"),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let (text, cpu, rss) = self.tool("ConsumerPerformance", &args)?;
        // A header naming the columns, then one summary row; fetch.nMsg.sec leaves the
        // group join out, as the other figures do.
        let header = text
            .lines()
            .find(|l| l.contains("fetch.nMsg.sec"))
            .with_context(|| format!("no ConsumerPerformance header: {text}"))?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let rate_col = columns
            .iter()
            .position(|c| *c == "fetch.nMsg.sec")
            .context("fetch.nMsg.sec column")?;
        let row = text
            .lines()
            .rev()
            .find(|l| l.split(',').count() == columns.len() && !l.contains("nMsg.sec"))
            .context("ConsumerPerformance row")?;
        let rate: f64 = row
            .split(',')
            .nth(rate_col)
            .and_then(|v| v.trim().parse().ok())
            .context("ConsumerPerformance rate")?;
        Ok(self.tool_sample(rate, size, cpu, rss))
    }

    /// p50 and p99 (ms) from a line appended to the source file to the record being
    /// readable by a read_committed consumer, exactly-once on.
    fn latency(&self, tool: Tool, lines: u64, per_second: u64) -> Result<(f64, f64)> {
        let input = self.dir.join(unique_name("latency-in"));
        std::fs::write(&input, "")?;
        let topic = self.topic("cmp-lat")?;
        let (mut w, port, _) = self.workers.worker(tool, true, &unique_name("latency"))?;
        self.workers
            .create(port, &Self::file_source(&input, &topic))?;
        // Short fetch waits: the broker must not hold back what is there.
        let consumer = self.committed_reader(&topic, ("fetch.wait.max.ms", "10"))?;
        let writer_input = input;
        let writer = std::thread::spawn(move || -> Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&writer_input)?;
            let every = Duration::from_micros(1_000_000 / per_second.max(1));
            let start = Instant::now();
            for n in 0..lines {
                let due = start + every * u32::try_from(n)?;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                writeln!(file, "{} latency probe {n}", now_micros())?;
                file.flush()?;
            }
            Ok(())
        });
        let mut delays = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(lines / per_second.max(1) + 120);
        while (delays.len() as u64) < lines {
            ensure!(
                Instant::now() < deadline,
                "{} of {lines} probes",
                delays.len()
            );
            w.alive()?;
            if let Some(m) = consumer.poll(Duration::from_millis(10)) {
                let m = m?;
                let now = now_micros();
                let sent = m
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.split(' ').next())
                    .and_then(|t| t.parse::<u128>().ok());
                if let Some(sent) = sent {
                    delays.push(now.saturating_sub(sent) as f64 / 1000.0);
                }
            }
        }
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("latency writer panicked"))??;
        w.stop();
        Ok((percentile(&mut delays, 0.5), percentile(&mut delays, 0.99)))
    }
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// `records` lines of `size` bytes (newline included), numbered.
fn input_file(dir: &Path, size: usize, records: u64) -> Result<PathBuf> {
    let path = dir.join(format!("input-{size}.txt"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let pad = "x".repeat(size);
    for n in 0..records {
        let head = format!("{n:012} ");
        let rest = size.saturating_sub(head.len() + 1);
        out.write_all(head.as_bytes())?;
        out.write_all(&pad.as_bytes()[..rest])?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(path)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median, min and max of one figure across a row's runs.
fn stats(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = samples.iter().filter_map(f).collect();
    if v.is_empty() {
        return None;
    }
    let m = median(&mut v);
    Some((m, v[0], v[v.len() - 1]))
}

fn cell(s: Option<(f64, f64, f64)>, decimals: usize) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |(m, lo, hi)| format!("{m:.decimals$} ({lo:.decimals$}-{hi:.decimals$})"),
    )
}

/// What a command prints (stdout, else stderr: `java -version` writes there).
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if out.is_empty() {
                String::from_utf8_lossy(&o.stderr).trim().to_owned()
            } else {
                out
            }
        })
        .unwrap_or_default()
}

fn report(
    env: &Env,
    results: &BTreeMap<Key, Vec<Sample>>,
    latency: &[(&str, f64, f64)],
    elapsed: Duration,
) -> Result<String> {
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let mut out = String::new();
    writeln!(
        out,
        "# Benchmarks: Sluice, Apache Kafka Connect and Kafka's own tools"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Written by `bench/run` ({}). Same broker, same machine, one process per contender.",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- Machine: {} cores ({}), {:.1} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        command_output(
            "sh",
            &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]
        ),
        mem_kib / 1024.0 / 1024.0,
        command_output("uname", &["-r"])
    )?;
    writeln!(
        out,
        "- Versions: Apache Kafka broker and Kafka Connect 4.1.2 (Maven Central), {}; Sluice {} ({})",
        command_output(&env.workers.java, &["-version"]).lines().next().unwrap_or("java"),
        env!("CARGO_PKG_VERSION"),
        command_output("git", &["-C", &repo_root().display().to_string(), "rev-parse", "--short", "HEAD"])
    )?;
    writeln!(
        out,
        "- {} records per run, {} runs per row (Sluice and Kafka Connect alternating first), whole run {:.1} min",
        env.records,
        results.values().map(Vec::len).max().unwrap_or(0),
        elapsed.as_secs_f64() / 60.0
    )?;
    writeln!(out, "- Sources: FileStreamSource (`batch.size` 2000, the default of both), one task, StringConverter; throughput from the first to the last record visible to a read_committed consumer. Sinks: FileStreamSink from the exactly-once source's topic, first to last byte written. CPU and peak RSS: the whole process, start-up included. Ready: process start to `GET /connectors` answering 200. First record: process start to the first record committed (sources) or written (sinks).")?;
    writeln!(out, "- ProducerPerformance: Java producer defaults (acks=all, linger.ms=5, batch.size=16384), transactional = one transaction per 100 ms. Kafka Connect uses the Java client (transaction protocol v2); Sluice uses librdkafka 2.12 (v1, one more round trip per transaction: AddPartitionsToTxn).")?;
    writeln!(out, "- Exactly-once sources commit one transaction per poll (2000 lines) by default; the `100 ms transactions` rows set `transaction.boundary=interval`, `transaction.boundary.interval.ms=100` (KIP-618, both contenders), the batching the transactional producer tool uses.")?;
    writeln!(out)?;
    writeln!(out, "Medians, with min-max in brackets.")?;
    writeln!(out)?;
    writeln!(out, "| size | workload | contender | records/s | MB/s | CPU-s per 1M records | peak RSS MiB | ready s | first record s |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for (key, samples) in results {
        writeln!(
            out,
            "| {} B | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.size,
            key.workload,
            key.tool,
            cell(stats(samples, |s| Some(s.records_per_s)), 0),
            cell(stats(samples, |s| Some(s.mb_per_s)), 1),
            cell(stats(samples, |s| Some(s.cpu_per_m)), 2),
            cell(stats(samples, |s| Some(s.rss_mib)), 0),
            cell(stats(samples, |s| s.ready_s), 2),
            cell(stats(samples, |s| s.first_s), 2),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "## Ratios (medians)")?;
    writeln!(out)?;
    writeln!(out, "| size | workload | Sluice / Kafka Connect records/s | ... per CPU-second | Kafka Connect RSS / Sluice RSS | Sluice / producer tool records/s |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let med = |k: &Key, f: &dyn Fn(&Sample) -> f64| {
        results
            .get(k)
            .map(|s| median(&mut s.iter().map(f).collect::<Vec<_>>()))
    };
    let sizes: std::collections::BTreeSet<usize> = results.keys().map(|k| k.size).collect();
    for size in sizes {
        for (workload, pp) in [
            ("source, exactly-once", "producer, transactional"),
            (
                "source, exactly-once, 100 ms transactions",
                "producer, transactional",
            ),
            ("source, at-least-once", "producer, plain"),
            ("sink", ""),
        ] {
            let key = |tool| Key {
                size,
                workload,
                tool,
            };
            let (s, k) = (key("Sluice"), key("Kafka Connect"));
            let rate = |k: &Key| med(k, &|x: &Sample| x.records_per_s);
            let per_cpu = |k: &Key| med(k, &|x: &Sample| 1e6 / x.cpu_per_m);
            let rss = |k: &Key| med(k, &|x: &Sample| x.rss_mib);
            let ratio = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .map_or_else(|| "-".to_owned(), |(a, b)| format!("{:.2}", a / b))
            };
            let producer = Key {
                size,
                workload: pp,
                tool: "Kafka tools",
            };
            writeln!(
                out,
                "| {size} B | {workload} | {} | {} | {} | {} |",
                ratio(rate(&s), rate(&k)),
                ratio(per_cpu(&s), per_cpu(&k)),
                ratio(rss(&k), rss(&s)),
                if pp.is_empty() {
                    "-".to_owned()
                } else {
                    ratio(rate(&s), rate(&producer))
                },
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "## Source latency, exactly-once (line appended -> readable, read_committed)"
    )?;
    writeln!(out)?;
    writeln!(out, "| contender | p50 ms | p99 ms |")?;
    writeln!(out, "|---|---|---|")?;
    for (tool, p50, p99) in latency {
        writeln!(out, "| {tool} | {p50:.0} | {p99:.0} |")?;
    }
    Ok(out)
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn main() -> Result<()> {
    let begun = Instant::now();
    let stack = stack()?;
    let records: u64 = env_or("SLUICE_BENCH_RECORDS", "1000000").parse()?;
    let rounds: usize = env_or("SLUICE_BENCH_ROUNDS", "3").parse()?;
    let sizes: Vec<usize> = env_or("SLUICE_BENCH_SIZES", "100,1024")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let dir = std::env::temp_dir().join(unique_name("bench-compare"));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        stack,
        rt: tokio::runtime::Runtime::new()?,
        dir: dir.clone(),
        workers: Workers {
            stack,
            dir: dir.clone(),
            java: env_or("JAVA", "java"),
            kc_classpath: std::env::var("KC_CLASSPATH").context("KC_CLASSPATH (run bench/run)")?,
            kc_plugin_path: std::env::var("KC_PLUGIN_PATH").context("KC_PLUGIN_PATH")?,
            kc_log4j: std::env::var("KC_LOG4J").context("KC_LOG4J")?,
            sluice: std::env::var("SLUICE_BIN")
                .map_or_else(|_| repo_root().join("target/release/sluice"), PathBuf::from),
            converters: STRING_CONVERTERS.to_owned(),
        },
        records,
    };
    let mut results: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    let mut add = |size, workload, tool, sample: Sample| {
        println!(
            "compare: {size} B {workload} {tool}: {:.0} records/s, {:.2} CPU-s/1M, {:.0} MiB",
            sample.records_per_s, sample.cpu_per_m, sample.rss_mib
        );
        results
            .entry(Key {
                size,
                workload,
                tool,
            })
            .or_default()
            .push(sample);
    };
    for &size in &sizes {
        let input = input_file(&dir, size, records)?;
        for round in 0..rounds {
            println!("compare: {size} B, round {}", round + 1);
            let (plain, _) = env.producer_perf(size, false)?;
            add(size, "producer, plain", "Kafka tools", plain);
            let (txn, topic) = env.producer_perf(size, true)?;
            add(size, "producer, transactional", "Kafka tools", txn);
            add(
                size,
                "consumer",
                "Kafka tools",
                env.consumer_perf(&topic, size)?,
            );
            let order = if round % 2 == 0 {
                [Tool::Sluice, Tool::KafkaConnect]
            } else {
                [Tool::KafkaConnect, Tool::Sluice]
            };
            for tool in order {
                let (eos, topic) = env.source(tool, true, None, &input, size)?;
                add(size, "source, exactly-once", tool.name(), eos);
                let (eos, _) = env.source(tool, true, Some(100), &input, size)?;
                add(
                    size,
                    "source, exactly-once, 100 ms transactions",
                    tool.name(),
                    eos,
                );
                let (alo, _) = env.source(tool, false, None, &input, size)?;
                add(size, "source, at-least-once", tool.name(), alo);
                add(size, "sink", tool.name(), env.sink(tool, &topic, size)?);
            }
        }
        let _ = std::fs::remove_file(&input);
    }
    let mut latency = Vec::new();
    for tool in [Tool::Sluice, Tool::KafkaConnect] {
        let (p50, p99) = env.latency(tool, 1000, 200)?;
        println!(
            "compare: latency {}: p50 {p50:.0} ms, p99 {p99:.0} ms",
            tool.name()
        );
        latency.push((tool.name(), p50, p99));
    }
    let text = report(&env, &results, &latency, begun.elapsed())?;
    let out = std::env::var("SLUICE_BENCH_OUT")
        .map_or_else(|_| repo_root().join("bench/RESULTS.md"), PathBuf::from);
    write_results(&out, &text)?;
    println!("{text}");
    println!("compare: written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
