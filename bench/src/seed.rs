//! The seed pipeline's benchmarks, against the real local stack and a release worker:
//!
//! - `ingest [messages] [connections]`: syslog over plain TCP into Kafka, exactly-once
//!   (transactional) writes; RFC 5424 messages of ~130 B sent as fast as the source takes
//!   them over several connections; the clock stops when the worker has committed them all.
//! - `relp [messages] [window]`: the same over RELP, one session keeping `window` messages
//!   unacknowledged (rsyslog's omrelp default is 128); the clock stops at the last
//!   acknowledgement, which the source sends only after the transaction committed.
//! - `index [documents] [tasks]`: Kafka -> OpenSearch with the Elasticsearch sink
//!   (`key.ignore=true`, JSON documents of ~150 B from a 3-partition topic); the clock stops
//!   when the group has committed every offset, i.e. every bulk succeeded.
//! - `latency [messages] [per-second]`: the seed pipeline (TCP syslog source and
//!   Elasticsearch sink, the seed's settings) and messages sent one by one at a steady rate;
//!   p50/p99 from a message's send to its document being returned by a search (OpenSearch's
//!   default 1 s refresh included: that is when a user can find it).
//!
//! Each reports rates, and the worker's CPU seconds and peak RSS.
//!
//! `cargo build --release -p sluice-engine --bin sluice && \
//!  cargo run --release -p sluice-bench --bin seed -- ingest|relp|index|latency [n] [k]`

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::{CountParts, SearchParts};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::{json, Value};
use sluice_bench::{
    arg, committed, cpu_seconds, metric, peak_rss_mib, percentile, spawn_worker, worker_properties,
};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

/// A worker with one connector, in a fresh directory; killed on drop.
struct Bench {
    dir: PathBuf,
    child: Child,
    port: u16,
    started: Instant,
}

impl Bench {
    fn start(stack: &Stack, worker_extra: &str, connectors: &[(&str, String)]) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("bench-seed"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let worker = dir.join("worker.properties");
        std::fs::write(&worker, worker_properties(stack, port, worker_extra))?;
        let mut files = Vec::new();
        for (name, body) in connectors {
            let file = dir.join(name);
            std::fs::write(&file, body)?;
            files.push(file);
        }
        let started = Instant::now();
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let child = spawn_worker(&worker, &refs)?;
        Ok(Bench {
            dir,
            child,
            port,
            started,
        })
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("worker exited early: {status}");
        }
        Ok(())
    }

    /// CPU seconds and peak RSS (MiB) of the worker so far.
    fn usage(&self) -> Result<(f64, f64)> {
        let pid = self.child.id().to_string();
        Ok((cpu_seconds(&pid)?, peak_rss_mib(&pid)?))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn syslog_line(n: u64) -> String {
    format!(
        "<134>1 2026-11-25T10:00:00.000Z bench-host bench-app 4242 MSG - benchmark message number {n:012} with some padding text\n"
    )
}

fn ingest(
    stack: &Stack,
    rt: &tokio::runtime::Runtime,
    messages: u64,
    connections: u64,
) -> Result<()> {
    let topic = rt.block_on(stack.create_topic("bench-ingest", 1))?;
    let syslog = free_port()?;
    let mut bench = Bench::start(
        stack,
        "exactly.once.source.support=enabled\n",
        &[(
            "syslog.properties",
            format!(
                "name=ingest\nconnector.class=io.confluent.kafka.connect.syslog.source.TCPSyslogSourceConnector\n\
                 kafka.topic={topic}\nsyslog.port={syslog}\nsyslog.listen.address=127.0.0.1\nbatch.size=5000\n"
            ),
        )],
    )?;
    wait_listening(syslog)?;
    let per = messages / connections.max(1);
    let sent_at = Instant::now();
    let senders: Vec<_> = (0..connections.max(1))
        .map(|c| {
            std::thread::spawn(move || -> Result<()> {
                let mut out = std::io::BufWriter::with_capacity(
                    256 * 1024,
                    TcpStream::connect(("127.0.0.1", syslog))?,
                );
                for n in c * per..(c + 1) * per {
                    out.write_all(syslog_line(n).as_bytes())?;
                }
                out.flush()?;
                Ok(())
            })
        })
        .collect();
    let total = per * connections.max(1);
    for s in senders {
        s.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    let sent_secs = sent_at.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(900);
    while metric(bench.port, "sluice_source_records_written_total") < total {
        bench.alive()?;
        ensure!(
            Instant::now() < deadline,
            "not all messages written in 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = sent_at.elapsed().as_secs_f64();
    let (cpu, rss) = bench.usage()?;
    let read = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(600))?;
    ensure!(
        read.len() as u64 == total,
        "topic holds {} of {total}",
        read.len()
    );
    let n = total as f64;
    println!(
        "seed ingest (TCP syslog -> Kafka, transactional): {total} messages x {} B over {connections} connections: \
         {:.0} messages/s end to end (senders done after {:.1} s); {:.2} CPU-s per 1M; peak RSS {:.0} MiB",
        syslog_line(0).len(),
        n / secs,
        sent_secs,
        cpu / n * 1e6,
        rss
    );
    Ok(())
}

/// One RELP reply header and data: `TXNR rsp LEN [DATA]`.
fn read_reply(reader: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Result<u32> {
    line.clear();
    reader.read_until(b'\n', line)?;
    let text = String::from_utf8_lossy(line);
    let txnr = text
        .split(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("RELP reply {text:?}"))?;
    Ok(txnr)
}

fn relp(stack: &Stack, rt: &tokio::runtime::Runtime, messages: u64, window: u64) -> Result<()> {
    let topic = rt.block_on(stack.create_topic("bench-relp", 1))?;
    let port = free_port()?;
    let mut bench = Bench::start(
        stack,
        "exactly.once.source.support=enabled\n",
        &[(
            "relp.properties",
            format!(
                "name=relp\nconnector.class=RelpSyslogSourceConnector\nkafka.topic={topic}\n\
                 syslog.port={port}\nsyslog.listen.address=127.0.0.1\nbatch.size=5000\n"
            ),
        )],
    )?;
    wait_listening(port)?;
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut out = std::io::BufWriter::new(stream.try_clone()?);
    let mut replies = BufReader::new(stream);
    let offers = "relp_version=0\nrelp_software=sluice-bench\ncommands=syslog";
    writeln!(out, "1 open {} {offers}", offers.len())?;
    out.flush()?;
    // The open reply spans lines: read until its data length is consumed.
    let mut line = Vec::new();
    replies.read_until(b' ', &mut line)?;
    replies.read_until(b' ', &mut line)?;
    line.clear();
    replies.read_until(b' ', &mut line)?;
    let len: usize = String::from_utf8_lossy(&line).trim().parse()?;
    let mut rest = vec![0_u8; len + 1];
    std::io::Read::read_exact(&mut replies, &mut rest)?;

    let started = Instant::now();
    let (mut sent, mut acked) = (0_u64, 0_u64);
    while acked < messages {
        while sent < messages && sent - acked < window {
            let data = syslog_line(sent);
            let data = data.trim_end();
            writeln!(out, "{} syslog {} {data}", sent + 2, data.len())?;
            sent += 1;
        }
        out.flush()?;
        read_reply(&mut replies, &mut line)?;
        acked += 1;
        if acked % 100_000 == 0 {
            bench.alive()?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu, rss) = bench.usage()?;
    let read = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(600))?;
    ensure!(
        read.len() as u64 == messages,
        "topic holds {} of {messages}",
        read.len()
    );
    let n = messages as f64;
    println!(
        "seed relp (RELP -> Kafka, acknowledged after commit): {messages} messages, window {window}: \
         {:.0} messages/s acknowledged; {:.2} CPU-s per 1M; peak RSS {:.0} MiB",
        n / secs,
        cpu / n * 1e6,
        rss
    );
    Ok(())
}

fn fill(stack: &Stack, topic: &str, documents: u64) -> Result<()> {
    let producer: rdkafka::producer::BaseProducer = stack
        .kafka_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()?;
    for n in 0..documents {
        let value = json!({"n": n, "host": "bench-host", "level": 6, "facility": 16,
            "message": format!("benchmark document {n:012} with a little text"), "date": 1_795_600_000_000_u64 + n})
        .to_string();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes());
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

fn index(stack: &Stack, rt: &tokio::runtime::Runtime, documents: u64, tasks: u64) -> Result<()> {
    const PARTITIONS: i32 = 3;
    let topic = rt.block_on(stack.create_topic("bench-index", PARTITIONS))?;
    fill(stack, &topic, documents)?;
    let name = unique_name("bench-index");
    let mut bench = Bench::start(
        stack,
        "offset.flush.interval.ms=1000\n",
        &[(
            "es.properties",
            format!(
                "name={name}\nconnector.class=io.confluent.connect.elasticsearch.ElasticsearchSinkConnector\n\
                 tasks.max={tasks}\ntopics={topic}\nkey.ignore=true\nconnection.url={}\nbatch.size=2000\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=false\n\
                 consumer.override.max.poll.records=5000\n",
                stack.opensearch_url
            ),
        )],
    )?;
    let group: BaseConsumer = stack
        .kafka_config()
        .set("group.id", format!("connect-{name}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        bench.alive()?;
        let done = committed(&group, &topic, PARTITIONS);
        if first.is_none() && metric(bench.port, "sluice_sink_records_read_total") > 0 {
            first = Some(Instant::now());
        }
        if done >= documents {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{done} of {documents} committed in 20 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let steady = first.map_or(bench.started, |t| t).elapsed().as_secs_f64();
    let (cpu, rss) = bench.usage()?;
    let client = stack.opensearch()?;
    let index = topic.to_lowercase();
    let count = rt.block_on(async {
        let _ = client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&index]))
            .send()
            .await;
        let response = client.count(CountParts::Index(&[&index])).send().await?;
        let body: Value = response.json().await?;
        Ok::<_, anyhow::Error>(body["count"].as_u64().unwrap_or(0))
    })?;
    ensure!(count == documents, "index holds {count} of {documents}");
    let n = documents as f64;
    println!(
        "seed index (Kafka -> OpenSearch, bulk, key.ignore ids): {documents} documents, {tasks} task(s): \
         {:.0} documents/s; worker {:.2} CPU-s per 1M; peak RSS {:.0} MiB",
        n / steady,
        cpu / n * 1e6,
        rss
    );
    Ok(())
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn latency(stack: &Stack, rt: &tokio::runtime::Runtime, messages: u64, rate: u64) -> Result<()> {
    let topic = unique_name("bench-latency");
    let syslog = free_port()?;
    let mut bench = Bench::start(
        stack,
        "exactly.once.source.support=enabled\n",
        &[
            (
                "syslog.properties",
                format!(
                    "name=tcpsyslog\nconnector.class=io.confluent.kafka.connect.syslog.source.TCPSyslogSourceConnector\n\
                     kafka.topic={topic}\nsyslog.port={syslog}\nsyslog.listen.address=127.0.0.1\n"
                ),
            ),
            (
                "es.properties",
                format!(
                    "name=elasticsearch-sink\nconnector.class=io.confluent.connect.elasticsearch.ElasticsearchSinkConnector\n\
                     topics={topic}\nkey.ignore=true\nconnection.url={}\n",
                    stack.opensearch_url
                ),
            ),
        ],
    )?;
    wait_listening(syslog)?;
    // Warm up: the sink's group and the index exist before the clock runs.
    let mut out = TcpStream::connect(("127.0.0.1", syslog))?;
    out.write_all(b"<134>1 - warm up - - - warm up\n")?;
    let client = stack.opensearch()?;
    let index = topic.to_lowercase();
    let search = |body: Value| {
        let client = client.clone();
        let index = index.clone();
        async move {
            let response = client
                .search(SearchParts::Index(&[&index]))
                .body(body)
                .send()
                .await?;
            let body: Value = response.json().await?;
            Ok::<_, anyhow::Error>(body["hits"]["hits"].as_array().cloned().unwrap_or_default())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt
        .block_on(search(json!({"query": {"match_all": {}}})))
        .map_or(true, |h| h.is_empty())
    {
        bench.alive()?;
        ensure!(
            Instant::now() < deadline,
            "the warm-up message never became searchable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let sender = std::thread::spawn(move || -> Result<Vec<u128>> {
        let mut sent = Vec::with_capacity(usize::try_from(messages)?);
        let every = Duration::from_micros(1_000_000 / rate.max(1));
        let start = Instant::now();
        for n in 0..messages {
            let due = start + every * u32::try_from(n)?;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sent.push(now_micros());
            out.write_all(format!("<134>1 - bench-host bench-app - - - latency {n}\n").as_bytes())?;
        }
        Ok(sent)
    });
    let mut seen: Vec<Option<u128>> = vec![None; usize::try_from(messages)?];
    let deadline = Instant::now() + Duration::from_secs(messages / rate.max(1) + 120);
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        let hits = rt
            .block_on(search(json!({
            "size": 1000, "_source": ["message"],
            "query": {"match_phrase_prefix": {"message": "latency"}}})))
            .unwrap_or_default();
        let at = now_micros();
        for h in hits {
            let n = h["_source"]["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("latency "))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(slot) = n.and_then(|n| seen.get_mut(n)) {
                slot.get_or_insert(at);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (cpu, rss) = bench.usage()?;
    let mut delays: Vec<f64> = sent
        .iter()
        .zip(&seen)
        .filter_map(|(s, seen)| Some((seen.as_ref()?.saturating_sub(*s)) as f64 / 1000.0))
        .collect();
    ensure!(
        delays.len() as u64 == messages,
        "only {} of {messages} messages became searchable",
        delays.len()
    );
    let (p50, p99) = (percentile(&mut delays, 0.5), percentile(&mut delays, 0.99));
    println!(
        "seed latency (TCP syslog -> Kafka -> OpenSearch, searchable): {messages} messages at {rate}/s: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (OpenSearch refresh interval 1 s; search polled every 20 ms); \
         worker {:.2} CPU-s, peak RSS {:.0} MiB",
        p50,
        p99,
        delays.last().copied().unwrap_or(0.0),
        cpu,
        rss
    );
    Ok(())
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Runtime::new()?;
    let stack = stack()?;
    match mode.as_str() {
        "ingest" => ingest(stack, &rt, arg(2, 1_000_000)?, arg(3, 4)?),
        "relp" => relp(stack, &rt, arg(2, 200_000)?, arg(3, 128)?),
        "index" => index(stack, &rt, arg(2, 500_000)?, arg(3, 1)?),
        "latency" => latency(stack, &rt, arg(2, 500)?, arg(3, 20)?),
        other => bail!("argument 1: expected ingest, relp, index or latency, got {other:?}"),
    }
}
