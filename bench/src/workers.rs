//! The contenders' workers, started the same way for every benchmark: Apache Kafka
//! Connect's distributed worker (from the classpath `bench/run` resolves) and Sluice's
//! `sluice worker`, each a process whose CPU time and peak RSS are sampled from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use sluice_testkit::{free_port, http_get, http_request, unique_name, Stack};

use crate::{cpu_seconds, peak_rss_mib};

/// CPU and peak RSS of a process, sampled until it exits (the last sample stands).
pub struct Watched {
    pub child: Child,
    pub started: Instant,
    last: Arc<Mutex<(f64, f64)>>,
    done: Arc<AtomicBool>,
}

impl Watched {
    pub fn spawn(mut command: Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let started = Instant::now();
        let child = command
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let pid = child.id().to_string();
        let last = Arc::new(Mutex::new((0.0, 0.0)));
        let done = Arc::new(AtomicBool::new(false));
        let (l, d) = (Arc::clone(&last), Arc::clone(&done));
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                match (cpu_seconds(&pid), peak_rss_mib(&pid)) {
                    (Ok(cpu), Ok(rss)) => {
                        if let Ok(mut g) = l.lock() {
                            *g = (cpu, rss);
                        }
                    }
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(Watched {
            child,
            started,
            last,
            done,
        })
    }

    /// CPU seconds and peak RSS now (or at the last sample, if it exited).
    pub fn usage(&self) -> (f64, f64) {
        let pid = self.child.id().to_string();
        match (cpu_seconds(&pid), peak_rss_mib(&pid)) {
            (Ok(cpu), Ok(rss)) => (cpu, rss),
            _ => self.last.lock().map_or((0.0, 0.0), |g| *g),
        }
    }

    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("process exited early: {status}");
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which worker runs a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Sluice,
    KafkaConnect,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Sluice => "Sluice",
            Tool::KafkaConnect => "Kafka Connect",
        }
    }
}

/// Where the contenders come from, and where their files go.
pub struct Workers {
    pub stack: &'static Stack,
    /// Scratch directory: worker configs and logs.
    pub dir: PathBuf,
    pub java: String,
    pub kc_classpath: String,
    pub kc_plugin_path: String,
    pub kc_log4j: String,
    pub sluice: PathBuf,
    /// The worker's converter keys (`key.converter=...` lines).
    pub converters: String,
}

/// Kafka Connect's String converters for key and value.
pub const STRING_CONVERTERS: &str =
    "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
     value.converter=org.apache.kafka.connect.storage.StringConverter\n";

impl Workers {
    pub fn java(&self, main: &str, args: &[String], log: &Path) -> Result<Watched> {
        let mut c = Command::new(&self.java);
        c.args([
            "-Xms256M",
            "-Xmx2G",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
        ])
        .arg(format!("-Dlog4j2.configurationFile={}", self.kc_log4j))
        .arg("-cp")
        .arg(&self.kc_classpath)
        .arg(main)
        .args(args);
        Watched::spawn(c, log)
    }

    /// The same worker keys for both: Kafka Connect's distributed worker config.
    pub fn worker_config(&self, port: u16, exactly_once: bool) -> Result<PathBuf> {
        let id = unique_name("cmp");
        let text = format!(
            "bootstrap.servers={}\ngroup.id={id}\n{}\
             offset.storage.topic={id}-offsets\noffset.storage.replication.factor=1\noffset.storage.partitions=1\n\
             config.storage.topic={id}-configs\nconfig.storage.replication.factor=1\n\
             status.storage.topic={id}-status\nstatus.storage.replication.factor=1\nstatus.storage.partitions=1\n\
             listeners=http://127.0.0.1:{port}\nplugin.path={}\noffset.flush.interval.ms=1000\n\
             exactly.once.source.support={}\n",
            self.stack.kafka_bootstrap,
            self.converters,
            self.kc_plugin_path,
            if exactly_once { "enabled" } else { "disabled" }
        );
        let path = self.dir.join(format!("{id}.properties"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Starts a worker and waits for its REST API (`GET /connectors` 200).
    pub fn worker(&self, tool: Tool, exactly_once: bool, log: &str) -> Result<(Watched, u16, f64)> {
        let port = free_port()?;
        let config = self.worker_config(port, exactly_once)?;
        let log = self.dir.join(log);
        let mut w = match tool {
            Tool::KafkaConnect => self.java(
                "org.apache.kafka.connect.cli.ConnectDistributed",
                &[config.display().to_string()],
                &log,
            )?,
            Tool::Sluice => {
                let mut c = Command::new(&self.sluice);
                c.arg("worker").arg(&config).env("RUST_LOG", "warn");
                Watched::spawn(c, &log)?
            }
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            w.alive()
                .with_context(|| format!("{} worker; log {}", tool.name(), log.display()))?;
            if matches!(http_get(port, "/connectors"), Ok((200, _))) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} worker not ready",
                tool.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = w.started.elapsed().as_secs_f64();
        Ok((w, port, ready))
    }

    pub fn create(&self, port: u16, body: &serde_json::Value) -> Result<()> {
        let (status, text) = http_request(port, "POST", "/connectors", Some(&body.to_string()))?;
        ensure!(status == 201, "creating a connector: {status} {text}");
        Ok(())
    }
}
