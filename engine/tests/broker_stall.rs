//! A broker that stalls (SIGSTOP) for longer than a transaction call's timeout while a
//! TCP syslog source takes messages at full speed: the task recovers its transaction in
//! place instead of restarting, so the listener stays open, the client is never reset, and
//! every message the listener accepted is in Kafka once.
//!
//! Stopping the broker disturbs every test using it, so this test has its own binary
//! (cargo runs test binaries one at a time).

mod common;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use common::SyslogWorker;
use sluice_testkit::{stack, stack_script, Isolation};

/// The short version's figures; `deploy/chaos/broker-stall` runs the long drill with
/// SLUICE_STALL_MESSAGES and SLUICE_STALL_SECS.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pid of the broker the stack script started, if it did.
fn broker_pid() -> Result<Option<String>> {
    let out = Command::new("bash")
        .arg(stack_script())
        .arg("status")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .find(|l| l.starts_with("kafka") && l.contains(" up "))
        .and_then(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "pid").and_then(|_| words.next())
        })
        .map(str::to_owned))
}

fn signal(pid: &str, sig: &str) -> Result<()> {
    let status = Command::new("kill").args([sig, pid]).status()?;
    if !status.success() {
        bail!("kill {sig} {pid}: {status}");
    }
    Ok(())
}

/// Continues the broker when dropped, whatever happens to the test.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = signal(&self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_stall_loses_nothing_and_resets_no_client() -> Result<()> {
    let stack = stack()?;
    let messages = usize::try_from(knob("SLUICE_STALL_MESSAGES", 200_000))?;
    let stall = Duration::from_secs(knob("SLUICE_STALL_SECS", 45));
    let Some(pid) = broker_pid()? else {
        eprintln!("SKIPPED: the Kafka broker was not started by deploy/local/stack");
        return Ok(());
    };
    let SyslogWorker {
        worker: mut w,
        syslog_port: syslog,
        rest_port: rest,
        topic,
        dir: _dir,
    } = SyslogWorker::start(stack, "stall")?;

    // One client, sending as fast as the listener takes it.
    let sender = std::thread::spawn(move || -> Result<usize> {
        let mut client = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut client);
        for i in 0..messages {
            writeln!(out, "<13>1 - host app - - - message {i:07}")
                .with_context(|| format!("writing message {i}"))?;
        }
        out.flush().context("flushing")?;
        drop(out);
        client.shutdown(std::net::Shutdown::Write)?;
        Ok(messages)
    });
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("stopping the broker (pid {pid}) for {stall:?}");
    signal(&pid, "-STOP")?;
    let resume = Resume(pid);
    // Meanwhile the status says the task is retrying its transaction (once a call failed).
    let stalled = Instant::now();
    let mut retrying_note = None;
    while stalled.elapsed() < stall {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok((_, status)) = w.get_json("/connectors/s/status") {
            if let Some(trace) = status["tasks"][0]["trace"].as_str() {
                if status["tasks"][0]["state"] == "RUNNING" && trace.starts_with("retrying:") {
                    retrying_note.get_or_insert_with(|| trace.to_owned());
                }
            }
        }
    }
    drop(resume);
    eprintln!("broker continued");

    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?
        .with_context(|| {
            format!(
                "the client was reset or refused; worker log:\n{}",
                w.log_text()
            )
        })?;
    // Reading the whole topic back takes time at the drill's full size (1.2M lines: more
    // than 30 s for this debug-built reader on a loaded machine).
    let read_timeout = Duration::from_secs(30 + sent as u64 / 20_000);
    let deadline = Instant::now() + Duration::from_secs(180) + 2 * read_timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match stack.read_topic(&topic, Isolation::ReadCommitted, read_timeout) {
            Ok(records) if records.len() >= sent => {
                seen = records;
                break;
            }
            Ok(records) => seen = records,
            Err(e) => eprintln!("broker not ready yet: {e:#}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (_, status) = w.get_json("/connectors/s/status")?;
    let metrics = sluice_testkit::http_get(rest, "/metrics")?.1;
    let log = w.log_text();
    w.terminate(Duration::from_secs(30))?;

    let mut numbers: Vec<usize> = seen
        .iter()
        .filter_map(|r| r.value.as_deref())
        .filter_map(|v| {
            let text = String::from_utf8_lossy(v);
            let at = text.find("message ")?;
            text[at + 8..at + 15].parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    eprintln!(
        "sent {sent}, in Kafka {before} ({} distinct), missing {}",
        numbers.len(),
        sent.saturating_sub(numbers.len())
    );
    assert_eq!(before, numbers.len(), "duplicates in the topic");
    assert_eq!(
        numbers.len(),
        sent,
        "messages accepted by the listener missing from Kafka: {} of {sent}",
        sent - numbers.len()
    );
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    let failures: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_task_failures_total{") && l.contains("connector=\"s\""))
        .collect();
    assert!(
        failures.iter().all(|l| l.ends_with(" 0")),
        "the task restarted: {failures:?}\n{log}"
    );
    eprintln!("status during the stall: {retrying_note:?}");
    assert!(
        retrying_note.is_some(),
        "the status never said the task was retrying"
    );
    // The stall was long enough to fail a transaction call (else this test proved nothing).
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sluice_source_transaction_recoveries_total{")
                && l.contains("connector=\"s\"")
                && !l.ends_with(" 0")
        ),
        "no transaction call failed during the stall:\n{log}"
    );
    Ok(())
}
