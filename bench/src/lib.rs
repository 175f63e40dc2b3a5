//! Shared pieces of Sluice's benchmarks: CPU time and peak memory of a process, read from
//! `/proc`, so every benchmark reports the same figures the same way; and the worker each
//! benchmark starts (a release `sluice standalone`) with its configuration and metrics; and
//! the contenders' workers side by side ([`workers`]).

pub mod workers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result};
use sluice_testkit::{http_get, repo_root, unique_name, Stack};

/// The sum of a consumer group's committed offsets over `topic`'s first `partitions`
/// partitions (0 while it has none), read through `consumer`, a member of that group.
pub fn committed(consumer: &rdkafka::consumer::BaseConsumer, topic: &str, partitions: i32) -> u64 {
    use rdkafka::consumer::Consumer as _;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    consumer
        .committed_offsets(list, std::time::Duration::from_secs(5))
        .map_or(0, |l| {
            l.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => u64::try_from(o).ok(),
                    _ => None,
                })
                .sum()
        })
}

/// Command-line argument `n` as a number, or `default` when absent.
pub fn arg(n: usize, default: u64) -> Result<u64> {
    match std::env::args().nth(n) {
        Some(v) => v
            .parse()
            .with_context(|| format!("argument {n}: {v:?} is not a number")),
        None => Ok(default),
    }
}

/// A metric of the worker on `port`, summed over its series, from `GET /metrics`
/// (0 while the worker does not answer).
pub fn metric(port: u16, name: &str) -> u64 {
    let Ok((200, body)) = http_get(port, "/metrics") else {
        return 0;
    };
    let prefix = format!("{name}{{");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A benchmark worker's config: the stack's broker, fresh group and offsets topic, REST on
/// `port`, then `extra` lines.
pub fn worker_properties(stack: &Stack, port: u16, extra: &str) -> String {
    format!(
        "bootstrap.servers={}\ngroup.id={}\noffset.storage.topic={}\noffset.storage.partitions=1\n\
         offset.storage.replication.factor=1\nlisteners=http://127.0.0.1:{port}\n\
         producer.linger.ms=5\nproducer.broker.address.family=v4\n\
         consumer.broker.address.family=v4\nadmin.broker.address.family=v4\n{extra}",
        stack.kafka_bootstrap,
        unique_name("bench"),
        unique_name("bench-offsets")
    )
}

/// Starts `sluice standalone worker connectors...` from `target/release/sluice` (or
/// `SLUICE_BIN`), logging warnings only.
pub fn spawn_worker(worker: &Path, connectors: &[&Path]) -> Result<Child> {
    let bin = std::env::var("SLUICE_BIN")
        .map_or_else(|_| repo_root().join("target/release/sluice"), PathBuf::from);
    Command::new(&bin)
        .arg("standalone")
        .arg(worker)
        .args(connectors)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p sluice-engine)",
                bin.display()
            )
        })
}

/// The `q` quantile (0..=1) of `values` (sorted in place), nearest rank; NaN if empty.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let at = ((values.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    values[at.min(values.len() - 1)]
}

/// User + system CPU seconds of process `pid` ("self" for this one), from `/proc/<pid>/stat`
/// (clock ticks of 100 Hz).
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("stat format")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).context("stat field")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Peak resident memory (VmHWM) of process `pid` ("self" for this one), in MiB.
pub fn peak_rss_mib(pid: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// The marked sections of a results file (`<!-- begin NAME -->` to `<!-- end NAME -->`),
/// each with its markers.
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- begin ") {
        let after = &rest[start + "<!-- begin ".len()..];
        let Some(name_end) = after.find(" -->") else {
            break;
        };
        let name = after[..name_end].to_owned();
        let end_marker = format!("<!-- end {name} -->");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        out.push((name, rest[start..stop].to_owned()));
        rest = &rest[stop..];
    }
    out
}

/// Writes `text` as section `name` of the results file at `path`, keeping the file's other
/// content (a section written by another benchmark, or the main table).
pub fn write_section(path: &Path, name: &str, text: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!(
        "<!-- begin {name} -->\n{}\n<!-- end {name} -->",
        text.trim_end()
    );
    let new = match sections(&old).into_iter().find(|(n, _)| n == name) {
        Some((_, existing)) => old.replacen(&existing, &block, 1),
        None => format!("{}\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// Writes `text` as the results file's main part, keeping its marked sections after it.
pub fn write_results(path: &Path, text: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut new = text.trim_end().to_owned();
    for (_, block) in sections(&old) {
        new.push_str("\n\n");
        new.push_str(&block);
    }
    new.push('\n');
    std::fs::write(path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(peak_rss_mib("self").unwrap() > 0.0);
    }

    #[test]
    fn sections_survive_each_other() -> Result<()> {
        let dir = std::env::temp_dir().join(unique_name("bench-results"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("RESULTS.md");
        write_results(&path, "# main 1\n")?;
        write_section(&path, "cdc", "## cdc 1\n")?;
        write_results(&path, "# main 2\n")?;
        assert_eq!(
            std::fs::read_to_string(&path)?,
            "# main 2\n\n<!-- begin cdc -->\n## cdc 1\n<!-- end cdc -->\n"
        );
        write_section(&path, "cdc", "## cdc 2")?;
        assert_eq!(
            std::fs::read_to_string(&path)?,
            "# main 2\n\n<!-- begin cdc -->\n## cdc 2\n<!-- end cdc -->\n"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
