//! The failover drill: a cluster of `sluice worker` processes runs exactly-once sources
//! (the data generator and a file source over numbered lines) and a replicator copying the
//! generator's topic, while worker after worker is taken down and brought back: SIGKILL,
//! SIGTERM and SIGSTOP past the session timeout in turn, the leader and a worker that does
//! not lead alternately. At the end every record is checked (read_committed): each
//! generator task's sequence once, without a gap and in order per partition; every
//! numbered line once and in order; the replica the same records as its source, each once.
//! Failover times are printed as p50/p99/max per kind: control plane (the victim's tasks
//! RUNNING on other workers) and data plane (a record committed by a moved generator task
//! after it moved).
//!
//! `deploy/chaos/drill` runs it at full size against a release build (20 rounds, 3
//! workers); the test suite runs 3 rounds. Knobs: `SLUICE_DRILL_WORKERS`,
//! `SLUICE_DRILL_ROUNDS`, `SLUICE_DRILL_KINDS` (which takedowns, in turn: `kill,term,stop`),
//! `SLUICE_DRILL_LOGS` (a directory the workers' logs are copied to at the end), `SLUICE_BIN`
//! (the worker binary, so an operator can drill their own build).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::cluster::{balanced_total, Cluster};
use common::TempDir;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;
use serde_json::{json, Value};
use sluice_testkit::{stack, Isolation, Stack};

const GENERATOR_TASKS: u32 = 4;
const REPLICATOR_TASKS: u32 = 2;
const LINES: usize = 300_000;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Term,
    Stop,
}

/// The takedowns to cycle through: `SLUICE_DRILL_KINDS` (`kill,term,stop` by default).
fn kinds() -> Result<Vec<Kind>> {
    let spec = std::env::var("SLUICE_DRILL_KINDS").unwrap_or_else(|_| "kill,term,stop".into());
    spec.split(',')
        .map(|k| match k.trim() {
            "kill" => Ok(Kind::Kill),
            "term" => Ok(Kind::Term),
            "stop" => Ok(Kind::Stop),
            other => bail!("SLUICE_DRILL_KINDS: {other:?} is not kill, term or stop"),
        })
        .collect()
}

/// When each generator task's records were seen committed, by a reader following the topic.
#[derive(Default)]
struct Arrivals(Mutex<BTreeMap<u64, Vec<Instant>>>);

impl Arrivals {
    fn first_after(&self, task: u64, t: Instant) -> Option<Instant> {
        let map = self.0.lock().ok()?;
        map.get(&task)?.iter().copied().find(|a| *a > t)
    }
}

fn follow(
    stack: &Stack,
    topic: &str,
    arrivals: Arc<Arrivals>,
    running: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let consumer = stack.consumer(Isolation::ReadCommitted)?;
    consumer.subscribe(&[topic])?;
    Ok(std::thread::spawn(move || {
        while running.load(Ordering::SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let task = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    .and_then(|v| v["task"].as_u64());
                if let (Some(task), Ok(mut map)) = (task, arrivals.0.lock()) {
                    map.entry(task).or_default().push(Instant::now());
                }
            }
        }
    }))
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The victim's tasks (of every connector) before it goes.
fn tasks_on(
    cluster: &Cluster,
    worker: &str,
    connectors: &[(&str, u32)],
) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for (name, count) in connectors {
        let p = cluster.placement(name, *count, Duration::from_secs(60))?;
        out.extend(
            p.into_iter()
                .filter(|(_, w)| w == worker)
                .map(|(t, _)| ((*name).to_owned(), t)),
        );
    }
    Ok(out)
}

/// Waits until every task of `connectors` runs on a live worker other than `victim`.
fn moved(cluster: &Cluster, victim: &str, connectors: &[(&str, u32)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    'outer: loop {
        ensure!(
            Instant::now() < deadline,
            "tasks did not move off {victim}:\n{}",
            cluster.logs()
        );
        for (name, count) in connectors {
            let p = cluster.placement(name, *count, Duration::from_secs(120))?;
            if p.values().any(|w| w == victim) {
                std::thread::sleep(Duration::from_millis(50));
                continue 'outer;
            }
        }
        return Ok(());
    }
}

/// Peak RSS (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[test]
fn failover_drill() -> Result<()> {
    let workers = env_or("SLUICE_DRILL_WORKERS", 3).max(2);
    let rounds = env_or("SLUICE_DRILL_ROUNDS", 3);
    let kinds = kinds()?;
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let generated = rt.block_on(stack.create_topic("drill-gen", 3))?;
    // The replicator creates its target topic (as many partitions as the source).
    let copied = format!("{generated}.copy");
    let numbers = rt.block_on(stack.create_topic("drill-lines", 1))?;
    let input = TempDir::new("drill-input")?;
    let body: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    let file = input.write("lines.txt", &body)?;

    let mut cluster = Cluster::new()?;
    for _ in 0..workers {
        cluster.start(stack)?;
    }
    let post = |config: Value| -> Result<()> {
        let (code, body) = cluster
            .any()?
            .request("POST", "/connectors", Some(&config))?;
        ensure!(code == 201, "create: {code} {body}");
        Ok(())
    };
    post(json!({"name": "gen", "config": {
        "connector.class": "io.sluice.connect.datagen.DatagenSourceConnector",
        "kafka.topic": generated, "tasks.max": GENERATOR_TASKS.to_string(),
        "datagen.records.per.second": "500", "datagen.record.bytes": "100", "batch.size": "100",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false"}}))?;
    post(json!({"name": "lines", "config": {
        "connector.class": "FileStreamSource", "file": file.display().to_string(),
        "topic": numbers, "batch.size": "200",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"}}))?;
    post(json!({"name": "copy", "config": {
        "connector.class": "io.sluice.connect.kafka.KafkaReplicatorConnector",
        "topics": generated, "topic.rename.format": "${topic}.copy",
        "tasks.max": REPLICATOR_TASKS.to_string()}}))?;
    let connectors = [
        ("gen", GENERATOR_TASKS),
        ("lines", 1),
        ("copy", REPLICATOR_TASKS),
    ];
    for (name, count) in connectors {
        cluster
            .placement(name, count, Duration::from_secs(120))
            .with_context(|| cluster.logs())?;
    }

    let arrivals = Arc::new(Arrivals::default());
    let running = Arc::new(AtomicBool::new(true));
    let reader = follow(
        stack,
        &generated,
        Arc::clone(&arrivals),
        Arc::clone(&running),
    )?;

    let mut control: BTreeMap<Kind, Vec<u128>> = BTreeMap::new();
    let mut data: BTreeMap<Kind, Vec<u128>> = BTreeMap::new();
    let mut peak_rss: Vec<u64> = Vec::new();
    for round in 0..rounds {
        let kind = kinds[round % kinds.len()];
        let leader = cluster.leader()?;
        let victim = if round % 2 == 0 {
            leader.clone()
        } else {
            cluster.follower(&leader)?
        };
        let lost = tasks_on(&cluster, &victim, &connectors)?;
        if let Some(pid) = cluster.workers.get(&victim).map(|w| w.child.id()) {
            peak_rss.extend(peak_rss_kib(pid));
        }
        let t0 = Instant::now();
        match kind {
            Kind::Kill => {
                if let Some(w) = cluster.workers.get_mut(&victim) {
                    w.kill()?;
                }
            }
            Kind::Term => {
                if let Some(w) = cluster.workers.get_mut(&victim) {
                    let status = w.terminate(Duration::from_secs(60))?;
                    ensure!(status.success(), "SIGTERM exit: {status}");
                }
            }
            Kind::Stop => cluster
                .workers
                .get(&victim)
                .context("victim")?
                .signal("-STOP")?,
        }
        // The stopped worker stays in the table but cannot answer: read through another.
        let gone = cluster.workers.remove(&victim).context("victim")?;
        moved(&cluster, &victim, &connectors)?;
        let t1 = Instant::now();
        control.entry(kind).or_default().push((t1 - t0).as_millis());
        let moved_generators: Vec<u64> = lost
            .iter()
            .filter(|(c, _)| c == "gen")
            .map(|(_, t)| u64::from(*t))
            .collect();
        let mut worst = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        for task in &moved_generators {
            let arrival = loop {
                if let Some(a) = arrivals.first_after(*task, t1) {
                    break a;
                }
                ensure!(
                    Instant::now() < deadline,
                    "generator task {task} wrote nothing after it moved"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            worst = worst.max(Some((arrival - t0).as_millis()));
        }
        if let Some(w) = worst {
            data.entry(kind).or_default().push(w);
        }
        println!(
            "round {round}: {kind:?} of {} {victim} ({} tasks): control plane {} ms, data plane {}",
            if victim == leader {
                "the leader"
            } else {
                "a worker"
            },
            lost.len(),
            (t1 - t0).as_millis(),
            worst.map_or_else(|| "-".to_owned(), |w| format!("{w} ms"))
        );
        // Back: a stopped worker resumes (and finds itself evicted); the others restart.
        match kind {
            Kind::Stop => {
                gone.signal("-CONT")?;
                cluster.workers.insert(victim.clone(), gone);
            }
            Kind::Kill | Kind::Term => {
                drop(gone);
                cluster.start(stack)?;
            }
        }
        balanced_total(&cluster, &connectors).with_context(|| cluster.logs())?;
    }
    for w in cluster.workers.values() {
        peak_rss.extend(peak_rss_kib(w.child.id()));
    }
    if let Ok(to) = std::env::var("SLUICE_DRILL_LOGS") {
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(&cluster.dir.0)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                if let Some(name) = path.file_name() {
                    std::fs::copy(&path, std::path::Path::new(&to).join(name))?;
                }
            }
        }
        println!("worker logs copied to {to}");
    }
    let balance = balanced_total(&cluster, &connectors)?;

    // The file source reads its file to the end (it has no rate), the generator is
    // stopped, the replica catches up; then every record is checked.
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let n = stack
            .read_topic(&numbers, Isolation::ReadCommitted, Duration::from_secs(60))
            .map_or(0, |r| r.len());
        if n >= LINES {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (code, body) = cluster
        .any()?
        .request("PUT", "/connectors/gen/stop", None)?;
    ensure!(
        code == 202 || code == 204,
        "stop gen: {code} {body}\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    running.store(false, Ordering::SeqCst);
    let _ = reader.join();
    let source = stack.read_topic(
        &generated,
        Isolation::ReadCommitted,
        Duration::from_secs(120),
    )?;
    let mut seqs: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut last_in_partition: BTreeMap<(i32, u64), u64> = BTreeMap::new();
    let mut duplicates = 0_usize;
    let mut out_of_order = 0_usize;
    let mut values: Vec<Vec<u8>> = Vec::new();
    for r in &source {
        let bytes = r.value.clone().unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes)?;
        let (Some(task), Some(seq)) = (v["task"].as_u64(), v["seq"].as_u64()) else {
            bail!("no task or seq in {v}");
        };
        if !seqs.entry(task).or_default().insert(seq) {
            duplicates += 1;
        }
        if last_in_partition
            .insert((r.partition, task), seq)
            .is_some_and(|prev| prev >= seq)
        {
            out_of_order += 1;
        }
        values.push(bytes);
    }
    let gaps: u64 = seqs
        .values()
        .map(|s| s.iter().next_back().map_or(0, |m| m + 1) - s.len() as u64)
        .sum();
    // The replica: the same records, each once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let replica = loop {
        let replica =
            stack.read_topic(&copied, Isolation::ReadCommitted, Duration::from_secs(120))?;
        if replica.len() >= source.len() || Instant::now() > deadline {
            break replica;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut a = values.clone();
    let mut b: Vec<Vec<u8>> = replica
        .iter()
        .map(|r| r.value.clone().unwrap_or_default())
        .collect();
    a.sort();
    b.sort();
    let replica_ok = a == b;
    // The numbered lines: 1..=LINES, each once, in order.
    let lines = stack.read_topic(&numbers, Isolation::ReadCommitted, Duration::from_secs(120))?;
    let expected: Vec<String> = (1..=LINES).map(|i| i.to_string()).collect();
    let got: Vec<String> = lines
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let lines_ok = got == expected;

    println!("\nfailover drill: {workers} workers, {rounds} rounds");
    for (label, times) in [("control plane", &control), ("data plane", &data)] {
        for (kind, t) in times {
            let mut t = t.clone();
            t.sort_unstable();
            println!(
                "  {label} {kind:?}: n={} p50={} ms p99={} ms max={} ms",
                t.len(),
                percentile(&t, 50.0),
                percentile(&t, 99.0),
                t.last().copied().unwrap_or(0)
            );
        }
    }
    println!(
        "  generator: {} records of {} tasks, duplicates {duplicates}, gaps {gaps}, out of order {out_of_order}",
        source.len(),
        seqs.len()
    );
    println!(
        "  replica: {} records, same as the source: {replica_ok}",
        replica.len()
    );
    println!(
        "  lines: {} of {LINES}, each once in order: {lines_ok}",
        got.len()
    );
    println!("  final balance (tasks per worker, all connectors): {balance:?}");
    println!(
        "  peak RSS per worker: max {} MiB",
        peak_rss.iter().max().copied().unwrap_or(0) / 1024
    );
    let ok = duplicates == 0 && gaps == 0 && out_of_order == 0 && replica_ok && lines_ok;
    let all: Vec<u128> = control.values().flatten().copied().collect();
    let mut sorted = all;
    sorted.sort_unstable();
    println!(
        "verdict: {} (exactly-once {}, control-plane failover p99 {} ms{})",
        if ok { "PASS" } else { "FAIL" },
        if ok { "held" } else { "BROKEN" },
        percentile(&sorted, 99.0),
        if percentile(&sorted, 99.0) < 10_000 {
            ", under 10 s"
        } else {
            ", OVER 10 s"
        }
    );
    ensure!(ok, "exactly-once broken:\n{}", cluster.logs());
    Ok(())
}
