//! The broker's own limit for Sluice's write path: one librdkafka transactional producer
//! writing N records of a given size, committing every B records, against the local stack.
//! Whatever Sluice's source path reaches later is compared with this number.
//!
//! `cargo run --release -p sluice-bench --bin broker-txn-baseline -- [records] [bytes] [per-txn]`
//! (defaults: 1000000 100 10000). Prints records/s, MB/s, CPU seconds per million records,
//! and peak RSS of this process.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use sluice_bench::{cpu_seconds, peak_rss_mib};
use sluice_testkit::{stack, unique_name, Isolation};

const T: Duration = Duration::from_secs(60);

fn arg(n: usize, default: u64) -> Result<u64> {
    match std::env::args().nth(n) {
        Some(v) => v
            .parse()
            .with_context(|| format!("argument {n}: {v:?} is not a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let records = arg(1, 1_000_000)?;
    let size = usize::try_from(arg(2, 100)?)?;
    let per_txn = arg(3, 10_000)?.max(1);
    let rt = tokio::runtime::Runtime::new()?;
    let stack = stack()?;
    let topic = rt.block_on(stack.create_topic("bench-txn", 6))?;

    let producer: BaseProducer = stack
        .kafka_config()
        .set("transactional.id", unique_name("bench-txn"))
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    producer.init_transactions(T)?;

    let payload = vec![b'x'; size];
    let cpu0 = cpu_seconds("self")?;
    let started = Instant::now();
    let mut sent = 0_u64;
    while sent < records {
        producer.begin_transaction()?;
        let end = (sent + per_txn).min(records);
        while sent < end {
            let key = sent.to_be_bytes();
            let mut record = BaseRecord::to(&topic).key(&key[..]).payload(&payload[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            sent += 1;
        }
        // rdkafka's flush polls in 100 ms slices; serving delivery reports here first
        // lets commit_transaction find nothing outstanding (see producer.rs in the engine).
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(1));
        }
        producer.commit_transaction(T)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self")? - cpu0;
    // Before the read-back below, which holds every record in memory.
    let rss = peak_rss_mib("self")?;

    // Everything must be there, exactly once: a benchmark that loses data measures nothing.
    let read = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(300))?;
    anyhow::ensure!(
        read.len() as u64 == records,
        "read back {} of {records} records",
        read.len()
    );

    #[allow(clippy::cast_precision_loss)]
    let (n, bytes) = (records as f64, (records as f64) * (size as f64));
    println!(
        "broker-txn-baseline: {records} records x {size} B, {per_txn}/txn: {:.0} records/s, {:.1} MB/s, {:.2} CPU-s per 1M records, peak RSS {:.0} MiB",
        n / elapsed,
        bytes / elapsed / 1e6,
        cpu / n * 1e6,
        rss
    );
    Ok(())
}
