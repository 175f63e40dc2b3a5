//! Sluice's exactly-once source path, end to end: a file of N records of a given size,
//! read by `sluice standalone` (release build) with exactly-once on, written to a
//! one-partition topic. Reports records/s, MB/s, CPU seconds per million records and peak
//! RSS of the worker process, and checks that the topic holds exactly N records.
//!
//! `cargo build --release -p sluice-engine --bin sluice && \
//!  cargo run --release -p sluice-bench --bin source-eos -- [records] [bytes]`
//! (defaults: 1000000 100). The worker binary is `target/release/sluice`, or `SLUICE_BIN`;
//! `SLUICE_BENCH_BOUNDARY_MS=100` commits every 100 ms (KIP-618) instead of once per poll.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sluice_bench::{arg, cpu_seconds, metric, peak_rss_mib, spawn_worker, worker_properties};
use sluice_testkit::{free_port, stack, unique_name, Isolation};

fn main() -> Result<()> {
    let records = arg(1, 1_000_000)?;
    let size = usize::try_from(arg(2, 100)?)?.max(16);
    let rt = tokio::runtime::Runtime::new()?;
    let stack = stack()?;
    let topic = rt.block_on(stack.create_topic("bench-source-eos", 1))?;

    let dir = std::env::temp_dir().join(unique_name("bench-source-eos"));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("input.txt");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&input)?);
        let filler = "x".repeat(size);
        for i in 0..records {
            let head = format!("{i:012} ");
            writeln!(w, "{head}{}", &filler[..size - head.len() - 1])?;
        }
        w.flush()?;
    }
    let port = free_port()?;
    let worker = dir.join("worker.properties");
    std::fs::write(
        &worker,
        worker_properties(stack, port, "exactly.once.source.support=enabled\n"),
    )?;
    let connector = dir.join("source.properties");
    // SLUICE_BENCH_BOUNDARY_MS: KIP-618 interval transactions instead of one per poll.
    let boundary = match std::env::var("SLUICE_BENCH_BOUNDARY_MS") {
        Ok(ms) => format!("transaction.boundary=interval\ntransaction.boundary.interval.ms={ms}\n"),
        Err(_) => String::new(),
    };
    std::fs::write(
        &connector,
        format!(
            "name=bench\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\nbatch.size=2000\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n{boundary}",
            input.display()
        ),
    )?;
    let started = Instant::now();
    let mut child = spawn_worker(&worker, &[&connector])?;
    let pid = child.id().to_string();
    let mut first_record: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("worker exited early: {status}");
        }
        let n = metric(port, "sluice_source_records_written_total");
        if n > 0 && first_record.is_none() {
            first_record = Some(Instant::now());
        }
        if n >= records {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {records} records written in 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = started.elapsed().as_secs_f64();
    let steady = first_record.map_or(total, |t| t.elapsed().as_secs_f64());
    let cpu = cpu_seconds(&pid)?;
    let rss = peak_rss_mib(&pid)?;
    child.kill()?;
    child.wait()?;
    let read = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(600))?;
    anyhow::ensure!(
        read.len() as u64 == records,
        "topic holds {} records, expected {records}",
        read.len()
    );
    let _ = std::fs::remove_dir_all(&dir);

    #[allow(clippy::cast_precision_loss)]
    let n = records as f64;
    println!(
        "source-eos: {records} records x {size} B, exactly-once, transaction per poll of 2000: \
         {:.0} records/s ({:.1} MB/s) from first record, {:.0} records/s with start-up; \
         {:.2} CPU-s per 1M records; peak RSS {:.0} MiB",
        n / steady,
        n * size as f64 / steady / 1e6,
        n / total,
        cpu / n * 1e6,
        rss
    );
    Ok(())
}
