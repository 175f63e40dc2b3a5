//! The syslog source against real clients: util-linux `logger` sends RFC 3164, RFC 5424
//! (with structured data) and octet-counted messages over TCP, and a raw socket sends a line
//! that is not syslog; the topic holds each, with the seed's fields, and the bad line whole
//! with its parse error. Oversized, abandoned and non-UTF-8 frames end as the docs say: cut
//! with a marker, dropped with a log line (only the partial frame), and replaced characters. The connector is created with the seed's class name and keys.

mod common;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::{worker_properties, TempDir, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name, Isolation};

fn logger(port: u16, args: &[&str], message: &str) -> Result<()> {
    let status = Command::new("logger")
        .args([
            "--tcp",
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-t",
            "sluicetest",
        ])
        .args(args)
        .arg(message)
        .status()?;
    ensure!(status.success(), "logger {args:?} exited with {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_messages_arrive_with_the_seeds_fields() -> Result<()> {
    let stack = stack()?;
    let topic = unique_name("syslog-tcp");
    let dir = TempDir::new("syslog")?;
    let (rest, syslog) = (free_port()?, free_port()?);
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            rest,
            &unique_name("syslog"),
            &unique_name("syslog-offsets"),
            "",
        ),
    )?;
    // The seed's body, with a free port and a fresh topic.
    let connector = dir.write(
        "tcpsyslog.json",
        &serde_json::json!({"name": "tcpsyslog", "config": {
            "tasks.max": "1",
            "connector.class": "io.confluent.kafka.connect.syslog.source.TCPSyslogSourceConnector",
            "kafka.topic": topic, "syslog.port": syslog, "syslog.listen.address": "127.0.0.1",
            "syslog.reverse.dns.remote.ip": true, "syslog.max.message.bytes": 2048,
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})
        .to_string(),
    )?;
    let mut w = WorkerProcess::standalone(&worker, &[&connector], rest, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    // The listener is up once the task runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", syslog)).is_err() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    logger(syslog, &["--rfc3164", "-p", "local0.warning"], "bsd style")?;
    logger(
        syslog,
        &[
            "--rfc5424",
            "--msgid",
            "ID7",
            "--sd-id",
            "test@32473",
            "--sd-param",
            "k=\"v\"",
        ],
        "five four two four",
    )?;
    logger(
        syslog,
        &["--octet-count", "-p", "user.err"],
        "counted octets",
    )?;
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
    raw.write_all(b"this is not syslog\n")?;
    drop(raw);
    // Oversized: cut at syslog.max.message.bytes; the rest of that line is skipped and the
    // next message on the connection is intact.
    let mut long = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
    let mut text = b"<13>Nov 25 10:00:00 host app: ".to_vec();
    text.extend(std::iter::repeat_n(b'x', 6000));
    text.extend(b"\n<13>Nov 25 10:00:01 host app: after the long one\n");
    long.write_all(&text)?;
    drop(long);
    // A whole octet-counted frame, then one the peer abandons half-way: the first is kept,
    // the partial one is not made up into a message.
    let mut partial = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
    partial.write_all(
        b"36 <13>Nov 25 10:00:02 host app: whole1200 <13>Nov 25 10:00:03 host app: cut",
    )?;
    drop(partial);
    // Bytes that are not UTF-8 are replaced, not dropped, and the message is kept.
    let mut latin = std::net::TcpStream::connect(("127.0.0.1", syslog))?;
    latin.write_all(b"<13>Nov 25 10:00:04 host app: caf\xe9 latin-1\n")?;
    drop(latin);

    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < 8 && Instant::now() < deadline {
        records = stack
            .read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        std::thread::sleep(Duration::from_millis(300));
    }
    w.terminate(Duration::from_secs(30))?;
    let docs: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| serde_json::from_slice(r.value.as_deref()?).ok())
        .collect();
    assert_eq!(docs.len(), 8, "{docs:?}; log:\n{}", w.log_text());
    let find = |text: &str| {
        docs.iter()
            .find(|d| d["message"].as_str().is_some_and(|m| m.contains(text)))
            .cloned()
            .unwrap_or_default()
    };

    let bsd = find("bsd style");
    assert_eq!(bsd["facility"], 16, "{bsd}");
    assert_eq!(bsd["level"], 4, "{bsd}");
    assert_eq!(bsd["app_name"], "sluicetest", "{bsd}");
    assert_eq!(bsd["hostname"], "localhost", "{bsd}");
    assert_eq!(bsd["charset"], "UTF-8", "{bsd}");
    assert!(
        bsd["remote_address"]
            .as_str()
            .unwrap_or_default()
            .starts_with("localhost/127.0.0.1:"),
        "{bsd}"
    );
    assert!(bsd["date"].as_i64().is_some(), "{bsd}");
    assert!(bsd["host"].is_string(), "{bsd}");
    assert_eq!(bsd["parse_error"], serde_json::Value::Null, "{bsd}");

    let modern = find("five four two four");
    assert_eq!(modern["version"], 1, "{modern}");
    assert_eq!(modern["message"], "five four two four", "{modern}");
    assert_eq!(modern["message_id"], "ID7", "{modern}");
    assert_eq!(
        modern["structured_data"]["test@32473"]["k"], "v",
        "{modern}"
    );
    assert_eq!(modern["app_name"], "sluicetest", "{modern}");
    // Recent to the second: the RFC 3339 timestamp was read, zone included.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let date = modern["date"].as_i64().unwrap_or_default();
    assert!((now - date).abs() < 120_000, "date {date} vs now {now}");

    let counted = find("counted octets");
    assert_eq!(
        (counted["facility"].clone(), counted["level"].clone()),
        (1.into(), 3.into()),
        "{counted}"
    );

    let bad = find("this is not syslog");
    assert_eq!(bad["message"], "this is not syslog");
    assert!(
        bad["parse_error"]
            .as_str()
            .unwrap_or_default()
            .contains("byte 0"),
        "{bad}"
    );

    let cut = find("xxxx");
    let message = cut["message"].as_str().unwrap_or_default();
    assert!(
        message.len() < 2048 && message.len() > 1900,
        "{}",
        message.len()
    );
    assert_eq!(cut["parse_error"], "truncated to 2048 bytes", "{cut}");
    assert_eq!(
        find("after the long one")["parse_error"],
        serde_json::Value::Null
    );
    assert_eq!(find("whole1")["message"], "host app: whole1");
    assert!(
        docs.iter()
            .all(|d| !d["message"].as_str().unwrap_or_default().contains("cut")),
        "{docs:?}"
    );
    // Logged once: for the abandoned frame, not for the connections that closed cleanly.
    assert_eq!(
        w.log_text().matches("peer closed mid-frame").count(),
        1,
        "{}",
        w.log_text()
    );
    assert_eq!(find("latin-1")["message"], "host app: caf\u{fffd} latin-1");
    Ok(())
}
