//! Sluice's PostgreSQL source side by side with Debezium's (3.6.1.Final, on Apache Kafka
//! Connect 4.1's distributed worker), on the same PostgreSQL and broker in the same run
//! (`bench/cdc` resolves both from Maven Central and calls this).
//!
//! One database is loaded with `pgbench -i -s <scale>` and published once
//! (`FOR ALL TABLES`); each contender gets its own slot and topics, with the same
//! connector keys and the same worker converters (JSON with schemas, key and value).
//! Sluice runs exactly-once (its worker's `exactly.once.source.support=enabled`; records
//! read read_committed); Debezium runs as it can, at-least-once. For each contender:
//!
//! - snapshot: from the connector's creation to the last snapshot row readable in Kafka
//!   (rows/s), the worker's CPU seconds over that time per million rows, the whole
//!   machine's busy cores over it (PostgreSQL, the broker and the worker together: whether
//!   the snapshot uses both cores), and the worker's peak RSS;
//! - streaming at the maximum rate: `pgbench -N` unthrottled (one UPDATE and one INSERT
//!   per transaction: two events), events per second from pgbench's start to the last event
//!   readable (pgbench's run plus the catch-up: the maximum sustainable rate), CPU seconds
//!   per million events;
//! - lag at a fixed rate (`pgbench -N -R`): from the commit in PostgreSQL (`source.ts_ms`)
//!   to the event readable in Kafka, p50 and p99.
//!
//! Knobs: `SLUICE_CDC_SCALE` (50), `SLUICE_CDC_THREADS` (`snapshot.max.threads` of both,
//! 2), `SLUICE_CDC_STREAM_S` (30), `SLUICE_CDC_RATE` (transactions/s of the lag run, 500),
//! `SLUICE_CDC_ROUNDS` (1; the contenders' order alternates), `SLUICE_CDC_SLUICE_EXTRA`
//! (`k=v,...` added to Sluice's connector config only, for tuning), `SLUICE_CDC_CONTENDERS`
//! (`sluice,debezium`; one of them alone to profile it), `SLUICE_BENCH_OUT`.
//! Environment set by `bench/cdc`: `KC_CLASSPATH`, `KC_PLUGIN_PATH`, `KC_LOG4J`,
//! optionally `SLUICE_BIN`, `JAVA`, `SLUICE_PG_BIN`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use sluice_bench::workers::{Tool, Watched, Workers};
use sluice_bench::{percentile, write_section};
use sluice_testkit::{http_request, repo_root, stack, unique_name, Stack};

/// JSON with schemas, key and value: what Debezium's users run and its docs show.
const JSON_CONVERTERS: &str = "key.converter=org.apache.kafka.connect.json.JsonConverter\n\
     key.converter.schemas.enable=true\n\
     value.converter=org.apache.kafka.connect.json.JsonConverter\n\
     value.converter.schemas.enable=true\n";

/// pgbench's tables.
const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_history",
    "pgbench_tellers",
];

const PUBLICATION: &str = "cdcbench_pub";

struct Env {
    stack: &'static Stack,
    rt: tokio::runtime::Runtime,
    workers: Workers,
    pgbench: PathBuf,
    db: String,
    threads: String,
}

/// One contender's figures.
#[derive(Debug, Clone, Default)]
struct Run {
    snapshot_rows: u64,
    snapshot_s: f64,
    snapshot_cpu: f64,
    snapshot_machine_cores: f64,
    stream_events: u64,
    stream_s: f64,
    catch_up_s: f64,
    stream_cpu: f64,
    stream_lag: (f64, f64),
    lag_events: u64,
    lag: (f64, f64),
    rss_mib: f64,
    ready_s: f64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
fn machine_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Cores busy between two `machine_jiffies` readings.
fn cores_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 / total * cores
}

/// `source.ts_ms` of a Debezium event in JSON (with or without its schema), without
/// parsing the whole event.
fn source_ts_ms(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let payload = text.rfind("\"payload\":").unwrap_or(0);
    let source = payload + text.get(payload..)?.find("\"source\":")?;
    let ts = source + text.get(source..)?.find("\"ts_ms\":")? + "\"ts_ms\":".len();
    let digits: String = text
        .get(ts..)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Env {
    fn psql(&self, sql: &str) -> Result<Vec<tokio_postgres::SimpleQueryMessage>> {
        self.rt.block_on(async {
            let client = self.stack.postgres(&self.db).await?;
            Ok(client.simple_query(sql).await?)
        })
    }

    /// The first column of the first row of `sql`.
    fn scalar(&self, sql: &str) -> Result<String> {
        self.psql(sql)?
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .with_context(|| format!("no row from {sql}"))
    }

    fn pgbench(&self, args: &[&str]) -> Result<String> {
        let port = self.stack.postgres_port.to_string();
        let out = Command::new(&self.pgbench)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg(&self.db)
            .output()
            .with_context(|| format!("running {}", self.pgbench.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        Ok(text)
    }

    /// Transactions pgbench ran (its "actually processed" line).
    fn transactions(output: &str) -> Result<u64> {
        output
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no transaction count in pgbench's output:\n{output}"))
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        Ok(self.stack.kafka_config().create()?)
    }

    /// The contender's topics, made up front with one partition each, so both write to the
    /// same layout.
    fn topics(&self, prefix: &str) -> Result<Vec<String>> {
        let names: Vec<String> = TABLES
            .iter()
            .map(|t| format!("{prefix}.public.{t}"))
            .collect();
        let admin = self.admin()?;
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
            .collect();
        for r in self
            .rt
            .block_on(admin.create_topics(&topics, &AdminOptions::new()))?
        {
            if let Err((topic, code)) = r {
                bail!("creating topic {topic}: {code}");
            }
        }
        Ok(names)
    }

    fn delete_topics(&self, names: &[String]) {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Ok(admin) = self.admin() {
            let _ = self
                .rt
                .block_on(admin.delete_topics(&refs, &AdminOptions::new()));
        }
    }

    /// The connector both contenders get: Debezium's class and keys.
    fn connector(&self, name: &str, prefix: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "plugin.name": "pgoutput",
            "database.hostname": "127.0.0.1",
            "database.port": self.stack.postgres_port.to_string(),
            "database.user": "postgres",
            "database.dbname": self.db,
            "topic.prefix": prefix,
            "slot.name": format!("{prefix}_slot"),
            "publication.name": PUBLICATION,
            "publication.autocreate.mode": "disabled",
            "snapshot.mode": "initial",
            "snapshot.max.threads": self.threads,
        }})
    }

    /// Reads until `want` records have arrived (or the deadline): their count, the last
    /// arrival, and each record's lag from `source.ts_ms` when `lags` is given.
    fn drain(
        consumer: &BaseConsumer,
        w: &mut Watched,
        want: u64,
        timeout: Duration,
        mut lags: Option<&mut Vec<f64>>,
    ) -> Result<(u64, Instant)> {
        let deadline = Instant::now() + timeout;
        let (mut n, mut last) = (0_u64, Instant::now());
        while n < want {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    n += 1;
                    last = Instant::now();
                    if let (Some(lags), Some(ts)) =
                        (lags.as_deref_mut(), m.payload().and_then(source_ts_ms))
                    {
                        lags.push((now_ms() - ts) as f64);
                    }
                }
                Some(Err(e)) => bail!("reading the change topics: {e}"),
                None => {
                    w.alive()?;
                    ensure!(
                        Instant::now() < deadline,
                        "{n} of {want} records within {timeout:?}"
                    );
                }
            }
        }
        Ok((n, last))
    }

    /// Runs pgbench with `args` while reading its events as they arrive, then until all
    /// of them (two per transaction) are in: their count, the last arrival, and each one's
    /// lag from its commit in PostgreSQL.
    fn phase(
        &self,
        consumer: &BaseConsumer,
        w: &mut Watched,
        args: &[&str],
    ) -> Result<(u64, Instant, Vec<f64>)> {
        std::thread::scope(|s| {
            let pgbench = s.spawn(|| self.pgbench(args));
            let mut lags = Vec::new();
            let mut seen = 0;
            let mut last = Instant::now();
            while !pgbench.is_finished() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        seen += 1;
                        last = Instant::now();
                        if let Some(ts) = m.payload().and_then(source_ts_ms) {
                            lags.push((now_ms() - ts) as f64);
                        }
                    }
                    Some(Err(e)) => bail!("reading the change topics: {e}"),
                    None => w.alive()?,
                }
            }
            let output = pgbench
                .join()
                .map_err(|_| anyhow::anyhow!("the pgbench thread panicked"))??;
            let want = 2 * Self::transactions(&output)?;
            let (rest, at) = Self::drain(
                consumer,
                w,
                want.saturating_sub(seen),
                Duration::from_secs(1800),
                Some(&mut lags),
            )?;
            if rest > 0 {
                last = at;
            }
            Ok((seen + rest, last, lags))
        })
    }

    /// One contender: snapshot, streaming at the maximum rate, lag at a fixed rate.
    fn run(&self, tool: Tool, rows: u64, stream_s: u64, rate: u64) -> Result<Run> {
        let (mut w, port, ready_s) =
            self.workers
                .worker(tool, tool == Tool::Sluice, &unique_name("cdc-worker"))?;
        let prefix = unique_name("cdc").replace('-', "_");
        let topics = self.topics(&prefix)?;
        let consumer: BaseConsumer = self
            .stack
            .kafka_config()
            .set("group.id", unique_name("cdc-reader"))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.max.bytes", "52428800")
            .create()?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        let name = unique_name("pg");
        let mut run = Run {
            ready_s,
            ..Run::default()
        };
        let result = (|| -> Result<()> {
            // Snapshot.
            let (cpu0, machine0) = (w.usage().0, machine_jiffies()?);
            let begun = Instant::now();
            let mut connector = self.connector(&name, &prefix);
            if tool == Tool::Sluice {
                // SLUICE_CDC_SLUICE_EXTRA: k=v,... added to Sluice's connector config only
                // (tuning experiments; the recorded runs leave it empty).
                for pair in env_or("SLUICE_CDC_SLUICE_EXTRA", "").split(',') {
                    if let Some((k, v)) = pair.split_once('=') {
                        connector["config"][k.trim()] = serde_json::Value::from(v.trim());
                    }
                }
            }
            self.workers.create(port, &connector)?;
            let (n, last) = Self::drain(&consumer, &mut w, rows, Duration::from_secs(3600), None)?;
            run.snapshot_rows = n;
            run.snapshot_s = last.duration_since(begun).as_secs_f64();
            run.snapshot_cpu = w.usage().0 - cpu0;
            run.snapshot_machine_cores = cores_busy(machine0, machine_jiffies()?);
            println!(
                "cdc: {} snapshot: {n} rows in {:.1} s ({:.0} rows/s), {:.1} CPU-s, machine {:.2} cores busy",
                tool.name(),
                run.snapshot_s,
                n as f64 / run.snapshot_s,
                run.snapshot_cpu,
                run.snapshot_machine_cores
            );
            // Streaming, unthrottled.
            let cpu1 = w.usage().0;
            let begun = Instant::now();
            let secs = stream_s.to_string();
            let (events, last, mut lags) = self.phase(
                &consumer,
                &mut w,
                &["-n", "-N", "-c", "4", "-j", "2", "-T", &secs],
            )?;
            run.stream_events = events;
            run.stream_s = last.duration_since(begun).as_secs_f64();
            run.catch_up_s = (run.stream_s - stream_s as f64).max(0.0);
            run.stream_cpu = w.usage().0 - cpu1;
            run.stream_lag = (percentile(&mut lags, 0.5), percentile(&mut lags, 0.99));
            println!(
                "cdc: {} streaming: {events} events in {:.1} s ({:.0} events/s, catch-up {:.1} s), {:.1} CPU-s",
                tool.name(),
                run.stream_s,
                events as f64 / run.stream_s,
                run.catch_up_s,
                run.stream_cpu
            );
            // Lag at a rate both keep up with.
            let rate_arg = rate.to_string();
            let (n, _, mut lags) = self.phase(
                &consumer,
                &mut w,
                &[
                    "-n", "-N", "-c", "2", "-j", "2", "-R", &rate_arg, "-T", "20",
                ],
            )?;
            run.lag_events = n;
            run.lag = (percentile(&mut lags, 0.5), percentile(&mut lags, 0.99));
            run.rss_mib = w.usage().1;
            println!(
                "cdc: {} lag at {rate} tx/s: p50 {:.0} ms, p99 {:.0} ms",
                tool.name(),
                run.lag.0,
                run.lag.1
            );
            Ok(())
        })();
        let _ = http_request(port, "DELETE", &format!("/connectors/{name}"), None);
        w.stop();
        self.drop_slot(&format!("{prefix}_slot"));
        self.delete_topics(&topics);
        result
            .with_context(|| format!("{} (logs in {})", tool.name(), self.workers.dir.display()))?;
        Ok(run)
    }

    /// Drops a contender's slot once its session has ended.
    fn drop_slot(&self, slot: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let sql = format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                  WHERE slot_name = '{slot}' AND NOT active"
            );
            let gone =
                format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
            let _ = self.psql(&sql);
            if self.scalar(&gone).is_ok_and(|n| n == "0") {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("cdc: slot {slot} still exists; drop it by hand");
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

fn report(env: &Env, scale: u64, runs: &[(Tool, Run)], minutes: f64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## PostgreSQL CDC: Sluice and Debezium\n");
    let _ = writeln!(
        t,
        "Written by `bench/cdc`. Same PostgreSQL 15, broker and machine; whole run {minutes:.1} min.\n"
    );
    let _ = writeln!(
        t,
        "- Data: `pgbench -i -s {scale}` ({} rows); one publication `FOR ALL TABLES`; each contender its own slot and topics (one partition each).",
        runs.first().map_or(0, |(_, r)| r.snapshot_rows)
    );
    let _ = writeln!(
        t,
        "- Same connector keys (Debezium's: `pgoutput`, `snapshot.mode=initial`, `snapshot.max.threads={}`, defaults otherwise) and the same worker converters: JsonConverter with schemas, key and value. Debezium 3.6.1.Final on Kafka Connect 4.1.2 (distributed worker, at-least-once, the only mode Debezium has); Sluice with exactly-once on, read read_committed.",
        env.threads
    );
    let _ = writeln!(
        t,
        "- Snapshot: connector created to last row readable in Kafka. CPU-s: the worker process's over that time (start-up excluded), per million rows; machine cores: all processes (PostgreSQL, broker, worker) busy over that time, of {}. Streaming: `pgbench -N -c 4 -j 2` unthrottled (1 UPDATE + 1 INSERT per transaction), events from its start to the last readable (its run plus the catch-up: the maximum sustainable rate). Lag: commit in PostgreSQL (`source.ts_ms`) to readable in Kafka, at the maximum rate and at a fixed rate (`pgbench -R`). Peak RSS: the worker's, start-up included.\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = writeln!(
        t,
        "| contender | snapshot rows/s | snapshot CPU-s per 1M rows | machine cores busy | streaming events/s | catch-up s | streaming CPU-s per 1M events | lag p50/p99 ms (max rate) | lag p50/p99 ms (fixed rate) | peak RSS MiB | ready s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for tool in [Tool::Sluice, Tool::KafkaConnect] {
        let rs: Vec<&Run> = runs
            .iter()
            .filter(|(t, _)| *t == tool)
            .map(|(_, r)| r)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let m = |f: &dyn Fn(&Run) -> f64| median(&mut rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let snap_rate = m(&|r| r.snapshot_rows as f64 / r.snapshot_s.max(1e-9));
        let snap_cpu = m(&|r| r.snapshot_cpu / (r.snapshot_rows.max(1) as f64 / 1e6));
        let stream_rate = m(&|r| r.stream_events as f64 / r.stream_s.max(1e-9));
        let stream_cpu = m(&|r| r.stream_cpu / (r.stream_events.max(1) as f64 / 1e6));
        ratios.push((tool, snap_rate, snap_cpu, stream_rate, stream_cpu));
        let name = match tool {
            Tool::Sluice => "Sluice (exactly-once)",
            Tool::KafkaConnect => "Debezium 3.6.1 on Kafka Connect 4.1.2",
        };
        let _ = writeln!(
            t,
            "| {name} | {snap_rate:.0} | {snap_cpu:.1} | {:.2} | {stream_rate:.0} | {:.1} | {stream_cpu:.1} | {:.0}/{:.0} | {:.0}/{:.0} | {:.0} | {:.1} |",
            m(&|r| r.snapshot_machine_cores),
            m(&|r| r.catch_up_s),
            m(&|r| r.stream_lag.0),
            m(&|r| r.stream_lag.1),
            m(&|r| r.lag.0),
            m(&|r| r.lag.1),
            m(&|r| r.rss_mib),
            m(&|r| r.ready_s),
        );
    }
    if let (Some(s), Some(d)) = (
        ratios.iter().find(|r| r.0 == Tool::Sluice),
        ratios.iter().find(|r| r.0 == Tool::KafkaConnect),
    ) {
        let _ = writeln!(
            t,
            "\nSluice / Debezium: snapshot {:.2}x rows/s, {:.2}x rows per CPU-second; streaming {:.2}x events/s, {:.2}x events per CPU-second.",
            s.1 / d.1,
            d.2 / s.2,
            s.3 / d.3,
            d.4 / s.4
        );
    }
    let _ = writeln!(
        t,
        "\nRuns: {} per contender (medians). Each run: {}.",
        runs.iter().filter(|(t, _)| *t == Tool::Sluice).count(),
        runs.iter()
            .map(|(tool, r)| format!(
                "{} {} rows / {} streamed / {} at the fixed rate",
                tool.name(),
                r.snapshot_rows,
                r.stream_events,
                r.lag_events
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    t
}

fn main() -> Result<()> {
    let begun = Instant::now();
    let stack = stack()?;
    let scale: u64 = env_or("SLUICE_CDC_SCALE", "50").parse()?;
    let rounds: usize = env_or("SLUICE_CDC_ROUNDS", "1").parse()?;
    let stream_s: u64 = env_or("SLUICE_CDC_STREAM_S", "30").parse()?;
    let rate: u64 = env_or("SLUICE_CDC_RATE", "500").parse()?;
    let dir = std::env::temp_dir().join(unique_name("bench-cdc"));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Runtime::new()?;
    let (db, _) = rt.block_on(stack.create_database("cdcbench"))?;
    let env = Env {
        stack,
        rt,
        workers: Workers {
            stack,
            dir: dir.clone(),
            java: env_or("JAVA", "java"),
            kc_classpath: std::env::var("KC_CLASSPATH").context("KC_CLASSPATH (run bench/cdc)")?,
            kc_plugin_path: std::env::var("KC_PLUGIN_PATH").context("KC_PLUGIN_PATH")?,
            kc_log4j: std::env::var("KC_LOG4J").context("KC_LOG4J")?,
            sluice: std::env::var("SLUICE_BIN")
                .map_or_else(|_| repo_root().join("target/release/sluice"), PathBuf::from),
            converters: JSON_CONVERTERS.to_owned(),
        },
        pgbench: PathBuf::from(env_or("SLUICE_PG_BIN", "/usr/lib/postgresql/15/bin"))
            .join("pgbench"),
        db,
        threads: env_or("SLUICE_CDC_THREADS", "2"),
    };
    println!("cdc: loading pgbench scale {scale} into {}", env.db);
    let load = Instant::now();
    env.pgbench(&["-i", "-q", "-s", &scale.to_string()])?;
    let loaded = load.elapsed().as_secs_f64();
    env.psql(&format!("CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES"))?;
    let rows: u64 = TABLES
        .iter()
        .map(|t| {
            env.scalar(&format!("SELECT count(*) FROM {t}"))
                .and_then(|n| Ok(n.parse::<u64>()?))
        })
        .sum::<Result<u64>>()?;
    println!("cdc: {rows} rows loaded in {loaded:.0} s");
    // `sluice` or `debezium` alone (to profile one), both by default.
    let only = env_or("SLUICE_CDC_CONTENDERS", "sluice,debezium");
    let mut runs = Vec::new();
    let mut outcome = Ok(());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Tool::Sluice, Tool::KafkaConnect]
        } else {
            [Tool::KafkaConnect, Tool::Sluice]
        };
        for tool in order {
            let key = if tool == Tool::Sluice {
                "sluice"
            } else {
                "debezium"
            };
            if !only.split(',').any(|c| c.trim() == key) {
                continue;
            }
            // The previous contender's streaming grew pgbench_history and left dead rows in
            // pgbench_accounts: the same rows, vacuumed, for each.
            env.psql("TRUNCATE pgbench_history")?;
            env.psql("VACUUM ANALYZE")?;
            match env.run(tool, rows, stream_s, rate) {
                Ok(run) => runs.push((tool, run)),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_err() {
            break;
        }
    }
    let _ = env.rt.block_on(async {
        let admin = env.stack.postgres("postgres").await?;
        admin
            .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", env.db))
            .await?;
        anyhow::Ok(())
    });
    outcome?;
    let text = report(&env, scale, &runs, begun.elapsed().as_secs_f64() / 60.0);
    let out = std::env::var("SLUICE_BENCH_OUT")
        .map_or_else(|_| repo_root().join("bench/RESULTS.md"), PathBuf::from);
    write_section(&out, "cdc", &text)?;
    println!("{text}");
    println!("cdc: written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_time_is_read_from_the_source_block() {
        let with_schema = br#"{"schema":{"fields":[{"field":"ts_ms"}]},"payload":{"before":null,"after":{"ts_ms":5},"source":{"version":"x","ts_ms":1700000000123,"db":"d"},"op":"c","ts_ms":1700000000999}}"#;
        assert_eq!(source_ts_ms(with_schema), Some(1_700_000_000_123));
        let plain = br#"{"before":null,"after":{"id":1},"source":{"ts_ms":42},"op":"u"}"#;
        assert_eq!(source_ts_ms(plain), Some(42));
        assert_eq!(source_ts_ms(b"not json"), None);
    }
}
