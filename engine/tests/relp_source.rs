//! The RELP source against real clients.
//!
//! - A raw RELP session: `open` is answered with the server's offers, a `syslog` frame is
//!   acknowledged only when its record is already readable with read_committed, `close` is
//!   answered, a broken frame ends the session with the byte named in the log.
//! - rsyslog (Debian's `rsyslogd` with `omrelp`) forwards a stream it receives on `imtcp`
//!   to the source while the worker is SIGKILLed at random moments and restarted: every
//!   message is in the topic exactly once (rsyslog resends what it had no acknowledgement
//!   for; the source recognises what it had already committed).

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{worker_properties, Rng, TempDir, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

fn relp_connector(dir: &TempDir, topic: &str, port: u16) -> Result<std::path::PathBuf> {
    dir.write(
        "relp.properties",
        &format!(
            "name=relp\nconnector.class=RelpSyslogSourceConnector\nkafka.topic={topic}\n\
             syslog.port={port}\nsyslog.listen.address=127.0.0.1\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter.schemas.enable=false\n"
        ),
    )
}

fn wait_listening(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The `message` field of each committed record.
fn messages(stack: &Stack, topic: &str) -> Vec<String> {
    stack
        .read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(30))
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Reads one reply frame: `TXNR rsp DATALEN [SP DATA] LF`.
fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<(u32, String)> {
    // The header, byte by byte: it ends at the separator after DATALEN (SP or LF).
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    loop {
        reader.read_exact(&mut byte)?;
        let spaces = head.iter().filter(|b| **b == b' ').count();
        if spaces == 2 && (byte[0] == b' ' || byte[0] == b'\n') {
            break;
        }
        head.push(byte[0]);
        ensure!(head.len() < 40, "reply header too long: {head:?}");
    }
    let ended = byte[0] == b'\n';
    let head = String::from_utf8_lossy(&head).into_owned();
    let fields: Vec<&str> = head.split(' ').collect();
    ensure!(
        fields.len() == 3 && fields[1] == "rsp",
        "reply header {head:?}"
    );
    let txnr = fields[0].parse()?;
    let len: usize = fields[2].parse()?;
    if ended {
        ensure!(len == 0, "reply {txnr} announces {len} bytes but ends");
        return Ok((txnr, String::new()));
    }
    let mut data = vec![0_u8; len + 1];
    reader.read_exact(&mut data)?;
    ensure!(data.pop() == Some(b'\n'), "reply {txnr} not ended by LF");
    Ok((txnr, String::from_utf8_lossy(&data).into_owned()))
}

fn frame(txnr: u32, command: &str, data: &str) -> Vec<u8> {
    if data.is_empty() {
        format!("{txnr} {command} 0\n").into_bytes()
    } else {
        format!("{txnr} {command} {} {data}\n", data.len()).into_bytes()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_is_acknowledged_only_once_it_is_committed() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("relp-ack", 1).await?;
    let dir = TempDir::new("relp-ack")?;
    let (rest, port) = (free_port()?, free_port()?);
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            rest,
            &unique_name("relp"),
            &unique_name("relp-offsets"),
            "",
        ),
    )?;
    let connector = relp_connector(&dir, &topic, port)?;
    let mut w = WorkerProcess::standalone(&worker, &[&connector], rest, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    wait_listening(port, Duration::from_secs(30))?;

    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(&frame(
        1,
        "open",
        "relp_version=0\nrelp_software=sluice-test\ncommands=syslog",
    ))?;
    let (txnr, offers) = read_reply(&mut reader)?;
    assert_eq!(txnr, 1);
    assert!(
        offers.starts_with("200 OK\n") && offers.contains("commands=syslog"),
        "{offers}"
    );
    for n in 2..12_u32 {
        let text = format!("<13>1 2026-11-25T10:00:00Z host app - - - acked {n}");
        writer.write_all(&frame(n, "syslog", &text))?;
        let (txnr, status) = read_reply(&mut reader)?;
        assert_eq!((txnr, status.as_str()), (n, "200 OK"));
        // Acknowledged means committed: readable now, not eventually.
        let seen = messages(stack, &topic);
        assert!(
            seen.iter().any(|m| m == &format!("acked {n}")),
            "message {n} acknowledged before it was committed: {seen:?}"
        );
    }
    writer.write_all(&frame(12, "close", ""))?;
    assert_eq!(read_reply(&mut reader)?, (12, String::new()));

    // A broken frame ends that session, naming the byte; the worker keeps serving.
    let mut bad = TcpStream::connect(("127.0.0.1", port))?;
    bad.write_all(b"1 open 0\n2 syslog 3 abcX")?;
    bad.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut rest_of_session = Vec::new();
    let _ = bad.read_to_end(&mut rest_of_session);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log_text().contains("RELP framing error") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = w.log_text();
    assert!(
        log.contains("RELP framing error") && log.contains("RELP byte 23"),
        "{log}"
    );
    let (_, status) = w.get_json("/connectors/relp/status")?;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(messages(stack, &topic).len(), 10);
    Ok(())
}

/// rsyslogd in the foreground: `imtcp` on `input`, everything forwarded with `omrelp` to
/// `target`, retrying for ever while the target is down.
fn rsyslog(dir: &TempDir, input: u16, target: u16) -> Result<Child> {
    let work = dir.0.join("rsyslog-work");
    std::fs::create_dir_all(&work)?;
    let config = dir.write(
        "rsyslog.conf",
        &format!(
            "global(workDirectory=\"{}\")\n\
             module(load=\"imtcp\")\nmodule(load=\"omrelp\")\n\
             input(type=\"imtcp\" port=\"{input}\" address=\"127.0.0.1\")\n\
             action(type=\"omrelp\" target=\"127.0.0.1\" port=\"{target}\" \
             template=\"RSYSLOG_SyslogProtocol23Format\" \
             action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\" \
             queue.type=\"LinkedList\" queue.size=\"500000\")\n",
            work.display()
        ),
    )?;
    let log = std::fs::File::create(dir.0.join("rsyslog.log"))?;
    let child = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&config)
        .arg("-i")
        .arg(dir.0.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context(
            "starting rsyslogd (deploy/local/install-deps installs rsyslog and rsyslog-relp)",
        )?;
    Ok(child)
}

const MESSAGES: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn rsyslog_over_relp_through_sigkills_delivers_each_message_once() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("relp-crash", 1).await?;
    let dir = TempDir::new("relp-crash")?;
    let (rest, port, input) = (free_port()?, free_port()?, free_port()?);
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            rest,
            &unique_name("relp-crash"),
            &unique_name("relp-crash-offsets"),
            "",
        ),
    )?;
    let connector = relp_connector(&dir, &topic, port)?;
    let mut first =
        WorkerProcess::standalone(&worker, &[&connector], rest, dir.0.join("run-0.log"))?;
    first.wait_ready(Duration::from_secs(60))?;
    wait_listening(port, Duration::from_secs(30))?;
    let mut rsyslogd = rsyslog(&dir, input, port)?;
    let _reap = KillOnDrop(&mut rsyslogd);
    wait_listening(input, Duration::from_secs(30))?;

    // ~1000 messages a second into rsyslog, for about 20 s.
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut out = TcpStream::connect(("127.0.0.1", input))?;
        for chunk in (1..=MESSAGES).collect::<Vec<_>>().chunks(100) {
            let text: String = chunk
                .iter()
                .map(|n| format!("<13>Nov 25 10:00:00 host app: relp seq {n}\n"))
                .collect();
            out.write_all(text.as_bytes())?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });

    let mut rng = Rng::from_env_or_clock();
    let mut w = first;
    let mut at_kill = Vec::new();
    for round in 1..=3 {
        std::thread::sleep(rng.millis(1500, 4000));
        w.kill()?;
        let seen = messages(stack, &topic).len();
        eprintln!("kill {round}: {seen} messages committed");
        at_kill.push(seen);
        w = WorkerProcess::standalone(
            &worker,
            &[&connector],
            rest,
            dir.0.join(format!("run-{round}.log")),
        )?;
        w.wait_ready(Duration::from_secs(60))?;
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    assert!(
        at_kill.iter().all(|n| *n < MESSAGES),
        "kills landed after the stream ended: {at_kill:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = messages(stack, &topic);
    while seen.len() < MESSAGES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        seen = messages(stack, &topic);
    }
    // A moment more for a late duplicate to show.
    std::thread::sleep(Duration::from_secs(3));
    let seen = messages(stack, &topic);
    w.terminate(Duration::from_secs(30))?;

    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &seen {
        let Some(n) = m
            .trim()
            .strip_prefix("relp seq ")
            .and_then(|n| n.parse().ok())
        else {
            bail!("unexpected message {m:?}");
        };
        *count.entry(n).or_default() += 1;
    }
    let missing: Vec<usize> = (1..=MESSAGES).filter(|n| !count.contains_key(n)).collect();
    let twice: Vec<(usize, usize)> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} messages; missing {} (first {:?}); more than once {} (first {:?}); rsyslog log:\n{}",
        seen.len(),
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first(),
        std::fs::read_to_string(dir.0.join("rsyslog.log")).unwrap_or_default()
    );
    Ok(())
}

/// Kills and reaps a child process when dropped.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
