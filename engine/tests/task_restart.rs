//! A task restarted by hand (`POST /connectors/{c}/tasks/{t}/restart`) ends its running
//! life before the next one starts: a TCP syslog source gets its port back, the restart
//! is not counted as a failure, and messages sent afterwards arrive.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{wait_listening, SyslogWorker};
use sluice_testkit::{stack, Isolation};

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_restart_runs_one_life_at_a_time() -> Result<()> {
    let stack = stack()?;
    let SyslogWorker {
        worker: mut w,
        syslog_port: syslog,
        rest_port: rest,
        topic,
        dir: _dir,
    } = SyslogWorker::start(stack, "restart-syslog")?;
    for round in 0..3 {
        let (status, body) = w.request("POST", "/connectors/s/tasks/0/restart", None)?;
        assert_eq!(status, 204, "{body}");
        std::thread::sleep(Duration::from_millis(500));
        wait_listening(syslog);
        let mut client = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
        client.write_all(format!("<13>1 - host app - - - after restart {round}\n").as_bytes())?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))?;
        if seen.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, status) = w.get_json("/connectors/s/status")?;
    let metrics = sluice_testkit::http_get(rest, "/metrics")?.1;
    let log = w.log_text();
    w.terminate(Duration::from_secs(30))?;
    assert!(
        !log.contains("Address already in use"),
        "two lives of the task held the port at once:\n{log}"
    );
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    assert!(status["tasks"][0].get("trace").is_none(), "{status}");
    let failures = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_task_failures_total{") && l.contains("connector=\"s\""))
        .map(|l| l.rsplit(' ').next().unwrap_or("0").to_owned())
        .collect::<Vec<_>>();
    assert!(
        failures.iter().all(|v| v == "0"),
        "manual restarts counted as failures: {failures:?}"
    );
    assert_eq!(seen.len(), 3, "messages sent after the restarts: {seen:?}");
    Ok(())
}
