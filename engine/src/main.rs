//! The `sluice` binary: `sluice worker <worker.properties>` starts a worker whose REST API
//! (Kafka Connect's) listens on the configured `listeners`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sluice_engine::rest::{RestState, ServerInfo};
use sluice_engine::worker_config::{Mode, WorkerConfig};
use sluice_engine::{kafka, properties, rest, telemetry};

const USAGE: &str = "usage: sluice worker <worker.properties>\n       sluice --version";

fn main() {
    if let Err(e) = run() {
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--version" | "-V"] => {
            println!(
                "sluice {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("SLUICE_GIT_COMMIT")
            );
            Ok(())
        }
        ["worker", path] => worker(Path::new(path)),
        _ => bail!("{USAGE}"),
    }
}

fn load_worker_config(path: &Path) -> Result<WorkerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading worker config {}", path.display()))?;
    let props = properties::parse(&text).with_context(|| format!("{}", path.display()))?;
    WorkerConfig::parse(&props, Mode::Distributed).with_context(|| format!("{}", path.display()))
}

fn worker(path: &Path) -> Result<()> {
    let config = load_worker_config(path)?;
    telemetry::init_logging();
    let metrics = telemetry::install_metrics().context("installing the metrics recorder")?;
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, file = %path.display(), "unknown worker config key, ignored");
    }
    let masked = config.parsed.masked();
    tracing::info!(config = ?masked, "worker config");

    actix_web::rt::System::new().block_on(async move {
        let cluster_id = kafka::fetch_cluster_id(config.kafka_client_props("admin."), Duration::from_secs(30))
            .await
            .context("connecting to Kafka (bootstrap.servers)")?;
        tracing::info!(kafka_cluster_id = %cluster_id, bootstrap = %config.bootstrap_servers, "connected to Kafka");
        metrics::gauge!("sluice_worker_info", "version" => env!("CARGO_PKG_VERSION"), "kafka_cluster_id" => cluster_id.clone()).set(1.0);

        let upkeep = metrics.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });

        let state = RestState { info: ServerInfo::new(cluster_id), metrics };
        let mut server = actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(rest::configure(state.clone()))
        })
        .workers(1)
        .shutdown_timeout(5);
        for addr in &config.listeners {
            server = server
                .bind(addr)
                .with_context(|| format!("binding the REST listener {addr} (listeners)"))?;
        }
        tracing::info!(listeners = ?config.listeners, "REST API up");
        server.run().await.context("REST server")?;
        tracing::info!("worker stopped");
        Ok(())
    })
}
