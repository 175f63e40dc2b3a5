//! The `sluice` binary.
//!
//! - `sluice standalone <worker.properties> <connector.properties|.json>...` runs the given
//!   connectors (like `connect-standalone`), with offsets in Kafka so exactly-once works.
//! - `sluice worker <worker.properties>` starts a worker whose REST API (Kafka Connect's)
//!   listens on the configured `listeners`; connectors are created over REST and kept in
//!   `config.storage.topic`, so a restarted worker runs them again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor as _;
use anyhow::{bail, Context as _, Result};
use sluice_engine::config::worker::{Mode, WorkerConfig};
use sluice_engine::config::{connector as connector_config, properties};
use sluice_engine::herder::cluster::{Cluster, Distributed};
use sluice_engine::herder::worker::Worker;
use sluice_engine::herder::{Herder, Standalone};
use sluice_engine::kafka::router::PartitionRouter;
use sluice_engine::rest::{RestState, ServerInfo};
use sluice_engine::storage::configs::ConfigStore;
use sluice_engine::storage::offsets::{ensure_compacted_topic, partition_count, OffsetStore};
use sluice_engine::storage::status::StatusStore;
use sluice_engine::task::supervisor::TargetState;
use sluice_engine::{kafka, rest, telemetry};

const USAGE: &str = "usage: sluice standalone <worker.properties> <connector.properties|.json>...\n       sluice worker <worker.properties>\n       sluice --version";

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
        ["worker", path] => serve(Path::new(path), Mode::Distributed, &[]),
        ["standalone", path, connectors @ ..] if !connectors.is_empty() => {
            let connectors: Vec<PathBuf> = connectors.iter().map(PathBuf::from).collect();
            serve(Path::new(path), Mode::Standalone, &connectors)
        }
        _ => bail!("{USAGE}"),
    }
}

fn load_worker_config(path: &Path, mode: Mode) -> Result<WorkerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading worker config {}", path.display()))?;
    let props = properties::parse(&text).with_context(|| format!("{}", path.display()))?;
    WorkerConfig::parse(&props, mode).with_context(|| format!("{}", path.display()))
}

/// Kafka Connect's standalone worker has no offsets topic; Sluice keeps offsets in Kafka in
/// both modes, so standalone gets a default.
const STANDALONE_OFFSETS_TOPIC: &str = "connect-offsets";

async fn start_worker(config: Arc<WorkerConfig>, connectors: &[PathBuf]) -> Result<Worker> {
    let admin = config.kafka_client_props("admin.");
    let topic = config
        .parsed
        .string("offset.storage.topic")
        .unwrap_or(STANDALONE_OFFSETS_TOPIC)
        .to_owned();
    let partitions = i32::try_from(
        config
            .parsed
            .long("offset.storage.partitions")
            .unwrap_or(25),
    )?;
    let replication = i16::try_from(
        config
            .parsed
            .long("offset.storage.replication.factor")
            .unwrap_or(3),
    )?;
    ensure_compacted_topic(&admin, &topic, partitions, replication)
        .await
        .context("offset.storage.topic")?;
    let partitions = partition_count(&admin, &topic, Duration::from_secs(30))
        .await
        .context("offset.storage.topic")?;
    let offsets = OffsetStore::new(topic, partitions, config.kafka_client_props("consumer."));
    let router = PartitionRouter::new(config.kafka_client_props("producer.")).start();
    let worker = Worker::new(Arc::clone(&config), router, offsets);
    for path in connectors {
        let props = connector_config::read_file(path).map_err(anyhow::Error::msg)?;
        worker
            .create_connector(&props, TargetState::Started)
            .with_context(|| format!("connector config {}", path.display()))?;
    }
    Ok(worker)
}

async fn shutdown_signal() -> Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok("SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

fn serve(path: &Path, mode: Mode, connectors: &[PathBuf]) -> Result<()> {
    let config = Arc::new(load_worker_config(path, mode)?);
    let loggers = telemetry::Loggers::install(config.log_format);
    let metrics = telemetry::install_metrics().context("installing the metrics recorder")?;
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, file = %path.display(), "unknown worker config key, ignored");
    }
    tracing::info!(config = ?config.parsed.masked(), ?mode, "worker config");

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

        // The REST API answers from the start: /health says 503 until the worker runs.
        let clustered = mode == Mode::Distributed
            && config.parsed.string("sluice.cluster.membership") == Some("group");
        let standalone = Arc::new(Standalone::new(Arc::clone(&loggers)));
        let distributed = Arc::new(Distributed::new(loggers));
        let herder: Arc<dyn Herder> = if clustered {
            Arc::clone(&distributed) as Arc<dyn Herder>
        } else {
            Arc::clone(&standalone) as Arc<dyn Herder>
        };
        let exposition = metrics.clone();
        let exposition: rest::Exposition = Arc::new(move || telemetry::render(&exposition));
        let state = RestState::new(ServerInfo::new(cluster_id), exposition, herder).with_topic_tracking(
            config.parsed.boolean("topic.tracking.enable").unwrap_or(true),
            config.parsed.boolean("topic.tracking.allow.reset").unwrap_or(true),
        );
        let mut server = actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(rest::configure(state.clone()))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5);
        for addr in &config.listeners {
            server = server
                .bind(addr)
                .with_context(|| format!("binding the REST listener {addr} (listeners)"))?;
        }
        let server = server.run();
        let handle = server.handle();
        let served = actix_web::rt::spawn(server);
        tracing::info!(listeners = ?config.listeners, "REST API up; worker starting");

        let running = match start(Arc::clone(&config), mode, clustered, connectors).await {
            Ok(running) => running,
            Err(e) => {
                handle.stop(false).await;
                return Err(e);
            }
        };
        match &running {
            Running::Single(worker) => standalone.ready(Worker::clone(worker)),
            Running::Cluster(cluster) => distributed.ready(Arc::clone(cluster)),
        }
        tracing::info!("worker started");
        let grace = Duration::from_millis(
            config
                .parsed
                .long("task.shutdown.graceful.timeout.ms")
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(5000),
        );
        tokio::select! {
            served = served => served.context("REST server")?.context("REST server")?,
            signal = shutdown_signal() => {
                tracing::info!(signal = signal?, "stopping: connectors commit what they have");
                match &running {
                    Running::Single(worker) => worker.stop_all(grace).await,
                    // Its tasks commit and stop, then it leaves the group: the others
                    // take its work over at once, not after a session timeout.
                    Running::Cluster(cluster) => cluster.leave().await,
                }
                handle.stop(true).await;
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    })
}

/// Starts the worker: offsets, router, connectors; in distributed mode also the config
/// and status topics, and the connectors stored there.
/// What runs: one worker alone, or a member of a cluster.
enum Running {
    Single(Box<Worker>),
    Cluster(Arc<Cluster>),
}

async fn start(
    config: Arc<WorkerConfig>,
    mode: Mode,
    clustered: bool,
    connectors: &[PathBuf],
) -> Result<Running> {
    let mut worker = start_worker(Arc::clone(&config), connectors).await?;
    if mode == Mode::Distributed {
        if clustered {
            // Wrong credentials or an untrusted broker certificate stop the start here,
            // said plainly, before the storage topics' clients retry them in their logs.
            Cluster::check_membership(&worker)
                .await
                .context("joining the cluster (group.id)")?;
        }
        let topic = config
            .parsed
            .string("config.storage.topic")
            .unwrap_or_default()
            .to_owned();
        let replication = i16::try_from(
            config
                .parsed
                .long("config.storage.replication.factor")
                .unwrap_or(3),
        )?;
        let store = ConfigStore::open(
            topic,
            &config.kafka_client_props("admin."),
            replication,
            config.kafka_client_props("producer."),
            config.kafka_client_props("consumer."),
        )
        .await
        .context("config.storage.topic")?;
        let status = StatusStore::open(
            config
                .parsed
                .string("status.storage.topic")
                .unwrap_or_default()
                .to_owned(),
            i32::try_from(config.parsed.long("status.storage.partitions").unwrap_or(5))?,
            i16::try_from(
                config
                    .parsed
                    .long("status.storage.replication.factor")
                    .unwrap_or(3),
            )?,
            &config.kafka_client_props("admin."),
            config.kafka_client_props("producer."),
            worker.worker_id.clone(),
        )
        .await
        .context("status.storage.topic")?;
        let status_topic = config
            .parsed
            .string("status.storage.topic")
            .unwrap_or_default()
            .to_owned();
        let store = if clustered { store.clustered() } else { store };
        worker = worker.with_store(store.clone()).with_status(status);
        if clustered {
            let cluster = Cluster::start(worker, store, &status_topic)
                .context("joining the cluster (group.id)")?;
            return Ok(Running::Cluster(cluster));
        }
        let restored = worker
            .restore()
            .await
            .context("reading config.storage.topic")?;
        tracing::info!(
            connectors = restored,
            "connectors restored from config.storage.topic"
        );
        worker
            .follow_config_topic()
            .context("following config.storage.topic")?;
    }
    Ok(Running::Single(Box::new(worker)))
}
