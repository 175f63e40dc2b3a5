//! Sluice's sink path, end to end: N records of a given size in a 6-partition topic, read by
//! `sluice standalone` (release build) in one task, either into the file sink
//! (`FileStreamSink`, at-least-once, fsync before each offset commit) or copied to another
//! topic by the replicator (exactly-once: output and consumer offsets in one transaction).
//! The clock runs until the consumer group has committed all N offsets (for the replicator
//! that is when the output is visible to read_committed readers). Reports records/s, MB/s,
//! CPU seconds per million records and peak RSS of the worker, and checks the output holds
//! exactly N records.
//!
//! `cargo build --release -p sluice-engine --bin sluice && \
//!  cargo run --release -p sluice-bench --bin sink -- file|replicator [records] [bytes]`
//! (defaults: file 1000000 100). The worker binary is `target/release/sluice`, or `SLUICE_BIN`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_bench::{
    arg, committed, cpu_seconds, metric, peak_rss_mib, spawn_worker, worker_properties,
};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

const PARTITIONS: i32 = 6;

/// Fills `topic` with `records` values of `size` bytes, spread over its partitions.
fn fill(stack: &Stack, topic: &str, records: u64, size: usize) -> Result<f64> {
    let producer: rdkafka::producer::BaseProducer = stack
        .kafka_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    let filler = "x".repeat(size);
    let started = Instant::now();
    for i in 0..records {
        let head = format!("{i:012} ");
        let value = format!("{head}{}", &filler[..size - head.len()]);
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "file".into());
    if mode != "file" && mode != "replicator" {
        bail!("argument 1: expected file or replicator, got {mode:?}");
    }
    let records = arg(2, 1_000_000)?;
    let size = usize::try_from(arg(3, 100)?)?.max(16);
    let rt = tokio::runtime::Runtime::new()?;
    let stack = stack()?;
    let topic = rt.block_on(stack.create_topic("bench-sink", PARTITIONS))?;
    let fill_secs = fill(stack, &topic, records, size)?;

    let dir = std::env::temp_dir().join(unique_name("bench-sink"));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let worker = dir.join("worker.properties");
    std::fs::write(
        &worker,
        worker_properties(stack, port, "offset.flush.interval.ms=1000\n"),
    )?;
    let name = unique_name("bench-sink");
    let out = dir.join("out.txt");
    let output_topic = format!("{topic}.out");
    let connector = dir.join("sink.properties");
    let body = if mode == "file" {
        format!(
            "name={name}\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            out.display()
        )
    } else {
        format!(
            "name={name}\nconnector.class=io.sluice.connect.kafka.KafkaReplicatorConnector\n\
             topics={topic}\ntopic.rename.format=${{topic}}.out\ncommit.interval.ms=100\n"
        )
    };
    std::fs::write(&connector, body)?;
    let group: BaseConsumer = stack
        .kafka_config()
        .set("group.id", format!("connect-{name}"))
        .set("enable.auto.commit", "false")
        .create()?;

    let started = Instant::now();
    let mut child = spawn_worker(&worker, &[&connector])?;
    let pid = child.id().to_string();
    let mut first_record: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("worker exited early: {status}");
        }
        if first_record.is_none() && metric(port, "sluice_sink_records_read_total") > 0 {
            first_record = Some(Instant::now());
        }
        let done = committed(&group, &topic, PARTITIONS);
        if done >= records {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {records} offsets committed in 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = started.elapsed().as_secs_f64();
    let steady = first_record.map_or(total, |t| t.elapsed().as_secs_f64());
    let cpu = cpu_seconds(&pid)?;
    let rss = peak_rss_mib(&pid)?;
    child.kill()?;
    child.wait()?;
    let written = if mode == "file" {
        std::fs::read_to_string(&out)?.lines().count()
    } else {
        stack
            .read_topic(
                &output_topic,
                Isolation::ReadCommitted,
                Duration::from_secs(600),
            )?
            .len()
    };
    anyhow::ensure!(
        written as u64 == records,
        "the output holds {written} records, expected {records}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    #[allow(clippy::cast_precision_loss)]
    let n = records as f64;
    println!(
        "sink {mode}: {records} records x {size} B from {PARTITIONS} partitions, one task: \
         {:.0} records/s ({:.1} MB/s) from first record, {:.0} records/s with start-up; \
         {:.2} CPU-s per 1M records; peak RSS {:.0} MiB (input filled at {:.0} records/s)",
        n / steady,
        n * size as f64 / steady / 1e6,
        n / total,
        cpu / n * 1e6,
        rss,
        n / fill_secs
    );
    Ok(())
}
