//! Exactly-once Kafka -> Kafka under SIGKILL: the replicator copies a three-partition topic
//! (through a transform) while records keep arriving; the worker is killed at random
//! moments (five times) and restarted. The output, read with read_committed, holds each input record
//! exactly once, in its input partition, in input order, and carries the transform's header.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{worker_properties, Rng, TempDir, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

const PARTITIONS: i32 = 3;

/// Per partition, the sequence numbers of `"<p>:<seq>"` values, checking the partition.
fn sequences(stack: &Stack, topic: &str) -> Result<BTreeMap<i32, Vec<usize>>> {
    let mut out: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for r in stack.read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(60))? {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        let Some((p, seq)) = value.split_once(':') else {
            bail!("unexpected value {value:?}");
        };
        if p.parse::<i32>()? != r.partition {
            bail!("{value:?} landed in partition {}", r.partition);
        }
        out.entry(r.partition).or_default().push(seq.parse()?);
    }
    Ok(out)
}

/// Each partition holds 0..n exactly once, in order.
fn assert_prefixes(seqs: &BTreeMap<i32, Vec<usize>>, expected: Option<usize>) {
    for (p, s) in seqs {
        if let Some(i) = s.iter().enumerate().position(|(i, v)| *v != i) {
            panic!(
                "partition {p}: position {i} holds {} ({} records)",
                s[i],
                s.len()
            );
        }
        if let Some(n) = expected {
            assert_eq!(s.len(), n, "partition {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_replication_loses_and_duplicates_nothing() -> Result<()> {
    let stack = stack()?;
    let input = stack.create_topic("replica-in", PARTITIONS).await?;
    let output = format!("{input}.copy");
    let dir = TempDir::new("replica")?;
    let port = free_port()?;
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("replica"),
            &unique_name("replica-offsets"),
            "",
        ),
    )?;
    let connector = dir.write(
        "replicator.properties",
        &format!(
            "name=copy\nconnector.class=io.sluice.connect.kafka.KafkaReplicatorConnector\n\
             topics={input}\ntopic.rename.format=${{topic}}.copy\ntasks.max=2\n\
             transforms=tag\ntransforms.tag.type=org.apache.kafka.connect.transforms.InsertHeader\n\
             transforms.tag.header=copied-by\ntransforms.tag.value.literal=sluice\n"
        ),
    )?;

    // Records keep arriving for the whole run, so every kill lands mid-stream.
    let running = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (running, produced, input) = (Arc::clone(&running), Arc::clone(&produced), input);
        std::thread::spawn(move || -> Result<()> {
            let producer = stack.producer()?;
            let mut seq = 0;
            while running.load(Ordering::SeqCst) {
                for _ in 0..200 {
                    for p in 0..PARTITIONS {
                        let value = format!("{p}:{seq}");
                        let mut record = BaseRecord::<[u8], [u8]>::to(&input)
                            .partition(p)
                            .payload(value.as_bytes());
                        while let Err((_, back)) = producer.send(record) {
                            record = back;
                            producer.poll(Duration::from_millis(5));
                        }
                    }
                    seq += 1;
                }
                producer.flush(Duration::from_secs(30))?;
                produced.store(seq, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })
    };

    let mut rng = Rng::from_env_or_clock();
    let (mut copied_before, mut mid_stream) = (0, 0);
    for round in 0..5 {
        let mut w = WorkerProcess::standalone(
            &worker,
            &[&connector],
            port,
            dir.0.join(format!("run-{round}.log")),
        )?;
        w.wait_ready(Duration::from_secs(60))?;
        // A killed life's consumers hold their partitions until their session (10 s)
        // expires, so the next life starts copying up to 10 s after it starts.
        std::thread::sleep(rng.millis(9000, 14000));
        w.kill()?;
        let so_far = sequences(stack, &output).unwrap_or_default();
        eprintln!(
            "round {round}: killed with {:?} records copied, {} per partition produced",
            so_far.values().map(Vec::len).collect::<Vec<_>>(),
            produced.load(Ordering::SeqCst)
        );
        // What is committed is already a gap-free, duplicate-free prefix per partition.
        assert_prefixes(&so_far, None);
        let copied = so_far.values().map(Vec::len).sum::<usize>();
        if copied > copied_before {
            mid_stream += 1;
        }
        copied_before = copied;
    }
    running.store(false, Ordering::SeqCst);
    assert!(
        mid_stream >= 3,
        "only {mid_stream} of 4 lives copied anything before the kill"
    );
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    let total = produced.load(Ordering::SeqCst);
    assert!(
        total * PARTITIONS as usize >= 100_000,
        "only {total} records per partition produced"
    );

    let mut last =
        WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("final.log"))?;
    last.wait_ready(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seqs = sequences(stack, &output)?;
    while seqs.values().map(Vec::len).sum::<usize>() < total * PARTITIONS as usize
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        seqs = sequences(stack, &output)?;
    }
    let status = last.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit {status}\n{}", last.log_text());
    assert_eq!(seqs.len(), PARTITIONS as usize, "{:?}", seqs.keys());
    assert_prefixes(&seqs, Some(total));

    let records = stack.read_topic(&output, Isolation::ReadCommitted, Duration::from_secs(60))?;
    assert!(records.iter().all(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "copied-by" && v.as_deref() == Some(b"sluice".as_slice()))));
    Ok(())
}
