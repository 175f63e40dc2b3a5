//! Syslog over TLS (RFC 5425) with Confluent's generic class and keys
//! (`syslog.listener=TCPSSL`, `syslog.ssl.cert.chain.path`, `syslog.ssl.key.path`,
//! `syslog.ssl.key.password`) and client certificates required (`syslog.ssl.client.ca.path`).
//! Certificates come from the `openssl` command; the client is `openssl s_client`, which
//! verifies the server. A client without a certificate and a cleartext client are refused
//! without a record and without harm to the task; a key that cannot be decrypted fails the
//! task with the key named.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::{state_topics, tls_certificates, worker_properties, TempDir, WorkerProcess};
use serde_json::json;
use sluice_testkit::{free_port, stack, unique_name, Isolation};

/// Sends `lines` with `openssl s_client` (verifying the server against the CA), with the
/// client certificate or without; returns whether the client exited successfully.
fn send_tls(dir: &Path, port: u16, with_cert: bool, lines: &str) -> Result<bool> {
    let mut command = Command::new("openssl");
    command
        .current_dir(dir)
        .args(["s_client", "-quiet", "-no_ign_eof", "-verify_return_error"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", "ca.pem", "-verify_ip", "127.0.0.1"]);
    if with_cert {
        command.args(["-cert", "client.pem", "-key", "client.key"]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_clients_with_certificates_get_through_and_others_are_refused() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("syslog-tls", 1).await?;
    let dir = TempDir::new("syslog-tls")?;
    tls_certificates(&dir.0)?;
    let (rest, port) = (free_port()?, free_port()?);
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            rest,
            &unique_name("tls"),
            &unique_name("tls-offsets"),
            &state_topics("tls"),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, rest, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let path = |f: &str| dir.0.join(f).display().to_string();
    let mut config = json!({
        "connector.class": "io.confluent.connect.syslog.SyslogSourceConnector",
        "syslog.listener": "TCPSSL", "syslog.port": port, "syslog.listen.address": "127.0.0.1",
        "kafka.topic": topic,
        "syslog.ssl.cert.chain.path": path("server.pem"),
        "syslog.ssl.key.path": path("server.enc.key"), "syslog.ssl.key.password": "secret",
        "syslog.ssl.client.ca.path": path("ca.pem"),
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false"});
    let (status, text) = w.request(
        "POST",
        "/connectors",
        Some(&json!({"name": "tls", "config": config})),
    )?;
    assert_eq!(status, 201, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "TLS listener not up: {}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The probe above was a connection without a handshake too.
    std::thread::sleep(Duration::from_millis(500));
    let refused_before = w.log_text().matches("TLS handshake failed").count();
    assert!(send_tls(
        &dir.0,
        port,
        true,
        "<13>Nov 25 10:00:00 host app: over tls 1\n<13>Nov 25 10:00:01 host app: over tls 2\n"
    )?);
    // No client certificate: the handshake fails, nothing is written.
    let _ = send_tls(
        &dir.0,
        port,
        false,
        "<13>Nov 25 10:00:02 host app: no certificate\n",
    )?;
    // Cleartext on the TLS port: not a handshake, nothing written.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port))?;
    plain.write_all(b"<13>Nov 25 10:00:03 host app: cleartext\n")?;
    drop(plain);

    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        messages = stack
            .read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
            .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
            .collect();
    }
    // Time for a refused message to show up if it were (wrongly) accepted.
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.log_text().matches("TLS handshake failed").count() < refused_before + 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))?;
    assert_eq!(
        messages,
        vec!["host app: over tls 1", "host app: over tls 2"],
        "log:\n{}",
        w.log_text()
    );
    assert_eq!(all.len(), 2, "refused clients wrote records");
    assert_eq!(
        w.log_text().matches("TLS handshake failed").count(),
        refused_before + 2
    );
    let (_, status) = w.get_json("/connectors/tls/status")?;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");

    // A key the password does not open: the task fails, naming the key.
    config["syslog.ssl.key.password"] = json!("wrong");
    config["syslog.port"] = json!(free_port()?);
    let (status, text) = w.request(
        "POST",
        "/connectors",
        Some(&json!({"name": "tls-bad-key", "config": config})),
    )?;
    assert_eq!(status, 201, "{text}");
    let mut task = json!(null);
    let deadline = Instant::now() + Duration::from_secs(30);
    while task["state"] != "FAILED" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        task = w.get_json("/connectors/tls-bad-key/status")?.1["tasks"][0].clone();
    }
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(task["state"], "FAILED", "{task}");
    assert!(
        task["trace"]
            .as_str()
            .unwrap_or_default()
            .contains("syslog.ssl.key.path: cannot decrypt"),
        "{task}"
    );
    Ok(())
}
