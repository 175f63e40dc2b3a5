//! Shared pieces of Sluice's benchmarks: CPU time and peak memory of a process, read from
//! `/proc`, so every benchmark reports the same figures the same way.

use anyhow::{Context as _, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(peak_rss_mib("self").unwrap() > 0.0);
    }
}
