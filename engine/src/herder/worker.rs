//! The worker: validates connector configs, builds each task's spec (converters,
//! producer, exactly-once settings) and hands the tasks to a connector supervisor. The
//! REST layer and the command line both go through [`Worker`], the one place with every
//! cluster action (Kafka Connect's `Herder`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use sluice_proto::{ConfigDef, ErrorKind, ExactlyOnceSupport, ParsedConfig};

use super::HerderError;
use crate::config::connector::common_def;
use crate::config::connector::kind_def;
use crate::config::worker::WorkerConfig;
use crate::convert::{self, Part};
use crate::kafka::router::PartitionRouter;
use crate::registry;
use crate::storage::configs::ConfigStore;
use crate::storage::offsets::OffsetStore;
use crate::storage::status::StatusStore;
use crate::task::actor::{trace, TaskFailure, TaskLauncher};
use crate::task::sink;
use crate::task::source::{Boundary, SourceTaskSpec, TaskError, TaskFactory};
use crate::task::supervisor::{
    ConnectorSupervisor, GetStatus, RestartPolicy, RestartTask, SetTarget, StopConnector,
    TargetState, TaskState, TaskStatus,
};
use crate::transforms::TransformChain;

/// What the worker keeps per connector.
#[derive(Clone)]
pub struct ConnectorEntry {
    /// The supervisor.
    pub supervisor: Addr<ConnectorSupervisor>,
    /// Canonical class.
    pub class: &'static str,
    /// The config as given (secrets included: never shown).
    pub config: BTreeMap<String, String>,
    /// The config, secrets masked.
    pub masked_config: BTreeMap<String, String>,
    /// Each task's config, secrets masked.
    pub task_configs: Vec<BTreeMap<String, String>>,
    /// Each task's config as the connector produced it (for the config topic only).
    pub raw_task_configs: Vec<BTreeMap<String, String>>,
    /// Task count.
    pub tasks: u32,
    /// What the user asked for.
    pub target: TargetState,
    /// Topics the connector's records went to (KIP-558).
    pub topics: Arc<Mutex<BTreeSet<String>>>,
    /// `source` or `sink`.
    pub kind: &'static str,
    /// A sink's topics.
    pub subscription: Option<sink::Subscription>,
}

/// A connector checked and ready to start: what [`Worker::plan`] hands [`Worker::launch`].
pub(super) struct Planned {
    name: String,
    class: &'static str,
    kind: &'static str,
    config: BTreeMap<String, String>,
    masked_config: BTreeMap<String, String>,
    masked_tasks: Vec<BTreeMap<String, String>>,
    raw_tasks: Vec<BTreeMap<String, String>>,
    specs: Vec<TaskLauncher>,
    topics: Arc<Mutex<BTreeSet<String>>>,
    subscription: Option<sink::Subscription>,
    exactly_once: bool,
}

/// Puts the stored value back where an update gives a secret as the mask `GET` shows:
/// only for keys that were masked (secrets), so no other value can be taken for one.
fn keep_masked_secrets(props: &mut BTreeMap<String, String>, existing: &ConnectorEntry) {
    for (key, value) in props.iter_mut() {
        if value == sluice_proto::config::HIDDEN
            && existing.masked_config.get(key).map(String::as_str)
                == Some(sluice_proto::config::HIDDEN)
        {
            if let Some(stored) = existing.config.get(key) {
                value.clone_from(stored);
            }
        }
    }
}

/// The worker.
#[derive(Clone)]
pub struct Worker {
    config: Arc<WorkerConfig>,
    router: Addr<PartitionRouter>,
    offsets: OffsetStore,
    group_id: String,
    /// `host:port` of this worker, as the status API reports it.
    pub worker_id: String,
    connectors: Arc<RwLock<BTreeMap<String, ConnectorEntry>>>,
    store: Option<ConfigStore>,
    status: Option<StatusStore>,
    /// Held by every change of the connector table (REST, or a config-topic record), so
    /// the config-topic follower sees a change this worker wrote only once it is applied.
    pub(super) changes: Arc<tokio::sync::Mutex<()>>,
    /// What the config-topic follower has read, once it runs.
    pub(super) followed: Arc<std::sync::OnceLock<crate::storage::configs::Followed>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// Counts a connector creation in `sluice_connector_startup_total`.
fn count_startup(
    result: Result<ConnectorEntry, HerderError>,
) -> Result<ConnectorEntry, HerderError> {
    let outcome = if result.is_ok() { "success" } else { "failure" };
    metrics::counter!("sluice_connector_startup_total", "result" => outcome).increment(1);
    result
}

fn key_error(key: &str, message: impl std::fmt::Display) -> HerderError {
    HerderError::BadConfig(format!("{key}: {message}"))
}

/// What every task of a connector shares, whatever its kind.
struct TaskCommon {
    key_converter: Arc<dyn convert::Converter>,
    value_converter: Arc<dyn convert::Converter>,
    producer_props: BTreeMap<String, String>,
    transforms: Arc<TransformChain>,
    errors: crate::task::errors::ErrorPolicy,
}

/// A sink's topics: exactly one of `topics` and `topics.regex`, and never its own
/// dead-letter queue (Kafka Connect refuses that loop too).
fn sink_subscription(parsed: &ParsedConfig) -> Result<sink::Subscription, HerderError> {
    let topics: Vec<String> = parsed
        .list("topics")
        .unwrap_or_default()
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    let regex = parsed.string("topics.regex").filter(|r| !r.is_empty());
    let dlq = parsed
        .string("errors.deadletterqueue.topic.name")
        .filter(|t| !t.is_empty());
    match (topics.is_empty(), regex) {
        (false, Some(_)) => Err(key_error(
            "topics",
            "topics and topics.regex are mutually exclusive; set one",
        )),
        (true, None) => Err(key_error(
            "topics",
            "a sink connector needs topics or topics.regex",
        )),
        (true, Some(regex)) => {
            regex::Regex::new(regex).map_err(|e| key_error("topics.regex", e))?;
            if dlq.is_some_and(|d| {
                regex::Regex::new(&format!("^(?:{regex})$")).is_ok_and(|r| r.is_match(d))
            }) {
                return Err(key_error(
                    "topics.regex",
                    "matches the dead-letter queue topic (errors.deadletterqueue.topic.name)",
                ));
            }
            Ok(sink::Subscription::Regex(regex.to_owned()))
        }
        (false, None) => {
            if let Some(d) = dlq.filter(|d| topics.iter().any(|t| t == d)) {
                return Err(key_error(
                    "topics",
                    format!("contains the dead-letter queue topic {d}"),
                ));
            }
            Ok(sink::Subscription::Topics(topics))
        }
    }
}

fn source_launcher(spec: Arc<SourceTaskSpec>) -> TaskLauncher {
    TaskLauncher {
        task: spec.task,
        run: Arc::new(move |stop, health| {
            let spec = Arc::clone(&spec);
            Box::pin(async move {
                crate::task::source::run_source_task(spec, stop, health)
                    .await
                    .map_err(|e| TaskFailure {
                        trace: trace(&e),
                        // A wrong config, or another instance with this transactional.id
                        // took over (restarting would fence it back): no restart helps.
                        permanent: matches!(&e, TaskError::Connector(c) if c.kind == ErrorKind::Config)
                            || matches!(&e, TaskError::Producer(p) if p.is_fenced()),
                    })
            })
        }),
    }
}

fn sink_launcher(spec: Arc<sink::SinkTaskSpec>) -> TaskLauncher {
    TaskLauncher {
        task: spec.task,
        run: Arc::new(move |stop, health| {
            let spec = Arc::clone(&spec);
            Box::pin(async move {
                sink::run_sink_task(spec, stop, health)
                    .await
                    .map_err(|e| TaskFailure {
                        trace: trace(&e),
                        permanent: matches!(&e, sink::SinkError::Connector(c) if c.kind == ErrorKind::Config),
                    })
            })
        }),
    }
}

impl Worker {
    /// A worker writing offsets to `offsets`, routing through `router`.
    pub fn new(
        config: Arc<WorkerConfig>,
        router: Addr<PartitionRouter>,
        offsets: OffsetStore,
    ) -> Self {
        let group_id = config
            .group_id
            .clone()
            .unwrap_or_else(|| "sluice-standalone".to_owned());
        let worker_id = config
            .listeners
            .first()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        Worker {
            config,
            router,
            offsets,
            group_id,
            worker_id,
            connectors: Arc::new(RwLock::new(BTreeMap::new())),
            store: None,
            status: None,
            changes: Arc::new(tokio::sync::Mutex::new(())),
            followed: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Writes connector and task status to `status` (Kafka Connect's status topic).
    #[must_use]
    pub fn with_status(mut self, status: StatusStore) -> Self {
        self.status = Some(status);
        self
    }

    pub(super) fn report_connector(&self, name: &str, target: TargetState) {
        let state = match target {
            TargetState::Started => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        };
        for s in ["RUNNING", "PAUSED", "STOPPED"] {
            metrics::gauge!("sluice_connector_status", "connector" => name.to_owned(), "state" => s.to_ascii_lowercase())
                .set(if s == state { 1.0 } else { 0.0 });
        }
        let Some(status) = self.status.clone() else {
            return;
        };
        let name = name.to_owned();
        actix::spawn(async move { status.put_connector(&name, state).await });
    }

    /// The config store, for a REST-managed worker.
    pub(super) fn config_store(&self) -> Option<&ConfigStore> {
        self.store.as_ref()
    }

    /// Keeps connector configs in `store` (the REST-managed worker), so they survive a
    /// restart; [`Worker::restore`] reads them back.
    #[must_use]
    pub fn with_store(mut self, store: ConfigStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts every connector found in the config store. A connector whose stored config
    /// no longer validates is logged and skipped; the others start.
    pub async fn restore(&self) -> Result<usize, HerderError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let stored = store
            .read_all(Duration::from_secs(60))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        let mut started = 0;
        for (name, connector) in stored {
            match self.create_connector(&connector.config, connector.target) {
                Ok(_) => {
                    started += 1;
                    tracing::info!(connector = %name, target = ?connector.target, "connector restored from the config topic");
                }
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "stored connector config is invalid; not started");
                }
            }
        }
        Ok(started)
    }

    /// Writes the connector's current config and target to the store (if any).
    async fn persist(&self, name: &str) -> Result<(), HerderError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let entry = self.connector(name)?;
        store
            .put(name, &entry.config, &entry.raw_task_configs, entry.target)
            .await
            .map_err(|e| HerderError::Unavailable(format!("could not store connector {name}: {e}")))
    }

    /// Creates a connector and stores it; if storing fails the connector is removed again,
    /// so a failed request changes nothing.
    pub async fn create_connector_stored(
        &self,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let plugin = match Self::plugin_of(props) {
            Ok(plugin) => plugin,
            Err(e) => return count_startup(Err(e)),
        };
        self.create_connector_stored_with(plugin, props, target)
            .await
    }

    /// Like [`Worker::create_connector_stored`], with the plugin given (for connectors
    /// outside the built-in registry, e.g. in tests).
    pub async fn create_connector_stored_with(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let _change = self.changes.lock().await;
        let name = props.get("name").cloned().unwrap_or_default();
        if self.read_connectors().contains_key(&name) {
            return count_startup(Err(HerderError::Exists(name)));
        }
        let planned = match self.plan_off_thread(plugin, props).await {
            Ok(planned) => planned,
            Err(e) => return count_startup(Err(e)),
        };
        let entry = count_startup(self.launch(planned, target))?;
        if let Err(e) = self.persist(&name).await {
            let _ = self.forget(&name).await;
            return Err(e);
        }
        self.settle().await;
        Ok(entry)
    }

    /// [`Worker::plan`] on the blocking pool: it runs the connector's own `task_configs`,
    /// which may be slow (a connector asking its outside system how to split the work), and
    /// nothing slow may run on the REST or an actor thread.
    pub(super) async fn plan_off_thread(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
    ) -> Result<Planned, HerderError> {
        let worker = self.clone();
        let props = props.clone();
        tokio::task::spawn_blocking(move || worker.plan(plugin, &props))
            .await
            .map_err(|e| HerderError::Internal(format!("planning the connector failed: {e}")))?
    }

    fn policy(&self) -> RestartPolicy {
        let ms = |key: &str, default: u64| {
            Duration::from_millis(
                self.config
                    .parsed
                    .long(key)
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(default),
            )
        };
        RestartPolicy {
            max_attempts: self
                .config
                .parsed
                .long("task.restart.max.attempts")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(5),
            initial_backoff: ms("task.restart.backoff.initial.ms", 1000),
            max_backoff: ms("task.restart.backoff.max.ms", 60_000),
            healthy_after: Duration::from_secs(60),
            stop_grace: ms("task.shutdown.graceful.timeout.ms", 5000),
        }
    }

    /// Whether a source connector runs exactly-once, refusing `exactly.once.support=required`
    /// when it cannot.
    fn source_exactly_once(
        &self,
        plugin: &registry::Plugin,
        connector: &dyn sluice_proto::SourceConnector,
        parsed: &ParsedConfig,
        props: &BTreeMap<String, String>,
    ) -> Result<bool, HerderError> {
        let worker_eos =
            self.config.parsed.string("exactly.once.source.support") == Some("enabled");
        let required = parsed.string("exactly.once.support") == Some("required");
        if required && !worker_eos {
            return Err(key_error(
                "exactly.once.support",
                "required, but the worker's exactly.once.source.support is not enabled",
            ));
        }
        if required && connector.exactly_once_support(props) == ExactlyOnceSupport::Unsupported {
            return Err(key_error(
                "exactly.once.support",
                format!("required, but {} cannot be exactly-once", plugin.class),
            ));
        }
        Ok(worker_eos)
    }

    fn boundary(&self, parsed: &ParsedConfig) -> Boundary {
        match parsed.string("transaction.boundary") {
            Some("interval") => Boundary::Interval(Duration::from_millis(
                parsed
                    .long("transaction.boundary.interval.ms")
                    .or_else(|| self.config.parsed.long("offset.flush.interval.ms"))
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(60_000),
            )),
            _ => Boundary::Poll,
        }
    }

    fn converter(
        &self,
        parsed: &ParsedConfig,
        part: Part,
        default: Option<&str>,
    ) -> Result<Arc<dyn convert::Converter>, HerderError> {
        let key = match part {
            Part::Key => "key.converter",
            Part::Value => "value.converter",
        };
        let prefix = format!("{key}.");
        // The connector's converter and its settings win over the worker's.
        let (class, settings) = match parsed.string(key) {
            Some(class) => (class.to_owned(), parsed.with_prefix(&prefix)),
            None => match default {
                Some(class) => (class.to_owned(), BTreeMap::new()),
                None => (
                    self.config
                        .parsed
                        .string(key)
                        .unwrap_or(convert::JSON)
                        .to_owned(),
                    self.config.parsed.with_prefix(&prefix),
                ),
            },
        };
        convert::build(&class, part, &settings).map_err(|e| key_error(key, e))
    }

    /// Validates `props` and starts the connector's tasks.
    pub fn create_connector(
        &self,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        count_startup(
            Self::plugin_of(props).and_then(|plugin| self.start_connector(plugin, props, target)),
        )
    }

    /// Like [`Worker::create_connector`], with the plugin given rather than looked up
    /// (for connectors outside the built-in registry, e.g. in tests).
    pub fn create_connector_with(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        count_startup(self.start_connector(plugin, props, target))
    }

    fn start_connector(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let common = common_def()
            .parse(props)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        let name = common.string("name").unwrap_or_default().to_owned();
        if self.read_connectors().contains_key(&name) {
            return Err(HerderError::Exists(name));
        }
        let planned = self.plan(plugin, props)?;
        self.launch(planned, target)
    }

    /// Looks `props`' connector class up in the registry.
    pub(super) fn plugin_of(
        props: &BTreeMap<String, String>,
    ) -> Result<registry::Plugin, HerderError> {
        let common = common_def()
            .parse(props)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        let class = common.string("connector.class").unwrap_or_default();
        registry::lookup(class).ok_or_else(|| {
            let known: Vec<&str> = registry::plugins().iter().map(|p| p.class).collect();
            key_error(
                "connector.class",
                format!(
                    "unknown connector class {class:?} (known: {})",
                    known.join(", ")
                ),
            )
        })
    }

    /// Everything a connector needs to start, checked: its config, converters, transforms,
    /// exactly-once settings and the connector's own task configs. Starts and stores
    /// nothing, so a refused config changes nothing.
    fn plan(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
    ) -> Result<Planned, HerderError> {
        let common = common_def()
            .parse(props)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        let name = common.string("name").unwrap_or_default().to_owned();
        let connector = plugin.connector();
        let def: ConfigDef = common_def()
            .merge(&kind_def(&plugin))
            .merge(&connector.config_def());
        let parsed = def
            .parse(props)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        for key in parsed.unknown_keys() {
            tracing::warn!(connector = %name, key = %key, "unknown connector config key, ignored");
        }
        let subscription = if plugin.is_sink() {
            Some(sink_subscription(&parsed)?)
        } else {
            None
        };
        let entry_subscription = subscription.clone();
        let default_converter =
            matches!(plugin.kind, registry::Kind::KafkaSink).then_some(convert::BYTE_ARRAY);
        let key_converter = self.converter(&parsed, Part::Key, default_converter)?;
        let value_converter = self.converter(&parsed, Part::Value, default_converter)?;
        let max_tasks = u32::try_from(parsed.long("tasks.max").unwrap_or(1)).unwrap_or(1);
        let task_configs = connector
            .task_configs(props, max_tasks)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        let mut producer_props = self.config.kafka_client_props("producer.");
        producer_props.extend(parsed.with_prefix("producer.override."));
        let topics = Arc::new(Mutex::new(BTreeSet::new()));
        let errors = crate::task::errors::ErrorPolicy::from_config(&parsed);
        let transforms = Arc::new(
            TransformChain::from_config(props)
                .map_err(|e| HerderError::BadConfig(e.to_string()))?,
        );
        let masked_tasks: Vec<BTreeMap<String, String>> =
            task_configs.iter().map(|c| def.mask(c)).collect();
        let raw_tasks = task_configs.clone();
        let common = TaskCommon {
            key_converter,
            value_converter,
            producer_props,
            transforms,
            errors,
        };
        let exactly_once;
        let specs: Vec<TaskLauncher> = match (plugin.kind, subscription) {
            (registry::Kind::Source(ctor), _) => {
                let state_topics = Arc::new(self.state_topics());
                let source = ctor();
                exactly_once =
                    self.source_exactly_once(&plugin, source.as_ref(), &parsed, props)?;
                let boundary = self.boundary(&parsed);
                let factory: TaskFactory = Arc::new(move || ctor().task());
                task_configs
                    .into_iter()
                    .zip(0_u32..)
                    .map(|(config, task)| {
                        let spec = Arc::new(SourceTaskSpec {
                            connector: name.clone(),
                            task,
                            config,
                            factory: Arc::clone(&factory),
                            key_converter: Arc::clone(&common.key_converter),
                            value_converter: Arc::clone(&common.value_converter),
                            producer_props: common.producer_props.clone(),
                            transactional_id: exactly_once
                                .then(|| format!("{}-{}-{}", self.group_id, name, task)),
                            boundary,
                            offsets: self.offsets.clone(),
                            router: self.router.clone(),
                            kafka_timeout: Duration::from_secs(30),
                            topics: Arc::clone(&topics),
                            transforms: Arc::clone(&common.transforms),
                            errors: common.errors.clone(),
                            state_topics: Arc::clone(&state_topics),
                        });
                        source_launcher(spec)
                    })
                    .collect()
            }
            (kind, Some(subscription)) => {
                let output = match kind {
                    registry::Kind::Sink(ctor) => {
                        exactly_once = false;
                        sink::Output::Task(Arc::new(move || ctor().task()))
                    }
                    _ => {
                        exactly_once = true;
                        sink::Output::Kafka {
                            rename: parsed
                                .string(crate::replicator::RENAME)
                                .unwrap_or("${topic}.replica")
                                .to_owned(),
                            preserve_partitions: parsed
                                .boolean(crate::replicator::PRESERVE)
                                .unwrap_or(true),
                            transactional_id: String::new(),
                            router: self.router.clone(),
                            commit_interval: Duration::from_millis(
                                parsed
                                    .long(crate::replicator::COMMIT_INTERVAL)
                                    .and_then(|v| u64::try_from(v).ok())
                                    .unwrap_or(100),
                            ),
                        }
                    }
                };
                let mut consumer_props = self.config.kafka_client_props("consumer.");
                consumer_props.extend(parsed.with_prefix("consumer.override."));
                let max_batch = consumer_props
                    .remove("max.poll.records")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500);
                let commit_interval = Duration::from_millis(
                    self.config
                        .parsed
                        .long("offset.flush.interval.ms")
                        .and_then(|v| u64::try_from(v).ok())
                        .unwrap_or(60_000),
                );
                task_configs
                    .into_iter()
                    .zip(0_u32..)
                    .map(|(config, task)| {
                        let mut output = output.clone();
                        if let sink::Output::Kafka {
                            transactional_id, ..
                        } = &mut output
                        {
                            *transactional_id = format!("{}-{}-{}", self.group_id, name, task);
                        }
                        let spec = Arc::new(sink::SinkTaskSpec {
                            connector: name.clone(),
                            task,
                            config,
                            output,
                            subscription: subscription.clone(),
                            consumer_props: consumer_props.clone(),
                            producer_props: common.producer_props.clone(),
                            key_converter: Arc::clone(&common.key_converter),
                            value_converter: Arc::clone(&common.value_converter),
                            transforms: Arc::clone(&common.transforms),
                            errors: common.errors.clone(),
                            commit_interval,
                            kafka_timeout: Duration::from_secs(30),
                            max_batch,
                        });
                        sink_launcher(spec)
                    })
                    .collect()
            }
            (_, None) => return Err(HerderError::Internal("sink without subscription".into())),
        };
        Ok(Planned {
            name,
            class: plugin.class,
            kind: plugin.type_name(),
            config: props.clone(),
            masked_config: def.mask(props),
            masked_tasks,
            raw_tasks,
            specs,
            topics,
            subscription: entry_subscription,
            exactly_once,
        })
    }

    /// Starts a planned connector's supervisor and enters it in the connector table.
    pub(super) fn launch(
        &self,
        planned: Planned,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let Planned {
            name,
            class,
            kind,
            config,
            masked_config,
            masked_tasks,
            raw_tasks,
            specs,
            topics,
            subscription,
            exactly_once,
        } = planned;
        let tasks = u32::try_from(specs.len()).unwrap_or(u32::MAX);
        {
            // Checked and entered under one lock: of two concurrent creations of a name,
            // exactly one starts.
            let mut table = self
                .connectors
                .write()
                .map_err(|_| HerderError::Internal("connector table poisoned".into()))?;
            if table.contains_key(&name) {
                return Err(HerderError::Exists(name));
            }
            let supervisor = ConnectorSupervisor::new(
                name.clone(),
                specs,
                self.policy(),
                target,
                self.status.clone(),
            )
            .start();
            let entry = ConnectorEntry {
                supervisor,
                class,
                config,
                masked_config,
                task_configs: masked_tasks,
                raw_task_configs: raw_tasks,
                tasks,
                target,
                topics,
                kind,
                subscription,
            };
            table.insert(name.clone(), entry);
        }
        self.report_connector(&name, target);
        let entry = self.connector(&name)?;
        crate::telemetry::live().connector_up(&name, tasks);
        tracing::info!(connector = %name, class, kind, tasks, exactly_once, "connector created");
        self.count_connectors();
        Ok(entry)
    }

    /// The worker's state topics, each with the worker key that names it.
    fn state_topics(&self) -> BTreeMap<String, &'static str> {
        let mut topics = BTreeMap::new();
        topics.insert(self.offsets.topic.clone(), "offset.storage.topic");
        for key in ["config.storage.topic", "status.storage.topic"] {
            if let Some(topic) = self.config.parsed.string(key) {
                topics.insert(topic.to_owned(), key);
            }
        }
        topics
    }

    /// `sluice_connectors` and `sluice_tasks`.
    fn count_connectors(&self) {
        let table = self.read_connectors();
        metrics::gauge!("sluice_connectors").set(table.len() as f64);
        metrics::gauge!("sluice_tasks")
            .set(table.values().map(|e| f64::from(e.tasks)).sum::<f64>());
    }

    /// Answers `Ok` when the partition router and every connector's supervisor serve
    /// their mailboxes within `timeout` (all together), else says which did not.
    pub async fn health(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.router.send(crate::kafka::router::Ping)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the partition router is gone: {e}")),
            Err(_) => {
                return Err(format!(
                    "the partition router did not answer within {} ms",
                    timeout.as_millis()
                ))
            }
        }
        for (name, entry) in self.read_connectors() {
            match tokio::time::timeout_at(deadline, entry.supervisor.send(GetStatus)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(format!("the supervisor of connector {name} is gone: {e}"))
                }
                Err(_) => {
                    return Err(format!(
                        "the supervisor of connector {name} did not answer within {} ms",
                        timeout.as_millis()
                    ))
                }
            }
        }
        Ok(())
    }

    pub(super) fn read_connectors(&self) -> BTreeMap<String, ConnectorEntry> {
        self.connectors
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Connector names, sorted.
    pub fn connector_names(&self) -> Vec<String> {
        self.read_connectors().into_keys().collect()
    }

    /// One connector's entry.
    pub fn connector(&self, name: &str) -> Result<ConnectorEntry, HerderError> {
        self.read_connectors()
            .get(name)
            .cloned()
            .ok_or_else(|| HerderError::NotFound(name.to_owned()))
    }

    /// The tasks' statuses.
    pub async fn task_statuses(&self, name: &str) -> Result<Vec<TaskStatus>, HerderError> {
        let entry = self.connector(name)?;
        entry
            .supervisor
            .send(GetStatus)
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))
    }

    /// Restarts one task by hand.
    pub async fn restart_task(&self, name: &str, task: u32) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        let found = entry
            .supervisor
            .send(RestartTask(task))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        if found {
            Ok(())
        } else {
            Err(HerderError::TaskNotFound(name.to_owned(), task))
        }
    }

    pub(super) fn update_entry(
        &self,
        name: &str,
        f: impl FnOnce(&mut ConnectorEntry),
    ) -> Result<(), HerderError> {
        let mut table = self
            .connectors
            .write()
            .map_err(|_| HerderError::Internal("connector table poisoned".into()))?;
        let entry = table
            .get_mut(name)
            .ok_or_else(|| HerderError::NotFound(name.to_owned()))?;
        f(entry);
        Ok(())
    }

    /// Stops a connector's tasks (each commits what it has) and forgets it, in the store
    /// too. Its offsets stay.
    pub async fn delete_connector(&self, name: &str) -> Result<(), HerderError> {
        let _change = self.changes.lock().await;
        self.connector(name)?;
        if let Some(store) = &self.store {
            store.delete(name).await.map_err(|e| {
                HerderError::Unavailable(format!(
                    "could not delete connector {name} from the config topic: {e}"
                ))
            })?;
        }
        let tasks = self.connector(name)?.tasks;
        self.forget(name).await?;
        if let Some(status) = &self.status {
            status.delete(name, tasks).await;
        }
        self.settle().await;
        Ok(())
    }

    /// Stops and drops a connector, leaving the store alone.
    pub(super) async fn forget(&self, name: &str) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            entry.supervisor.send(StopConnector),
        )
        .await;
        self.connectors
            .write()
            .map_err(|_| HerderError::Internal("connector table poisoned".into()))?
            .remove(name);
        crate::telemetry::live().connector_down(name);
        self.count_connectors();
        tracing::info!(connector = %name, "connector deleted");
        Ok(())
    }

    /// Replaces a connector's config (restarting it), or creates it; `true` if created.
    /// The new config is checked in full (converters, transforms, exactly-once, the
    /// connector's task configs) before the running connector is touched, so a refused
    /// update changes nothing. A secret given as the mask (`[hidden]`, as `GET` shows it)
    /// keeps its stored value, so a GET-then-PUT round trip never replaces a secret.
    pub async fn put_config(
        &self,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<bool, HerderError> {
        let _change = self.changes.lock().await;
        let mut props = props.clone();
        match props.get("name") {
            Some(n) if n != name => {
                return Err(key_error(
                    "name",
                    format!("{n:?} does not match the connector in the path, {name:?}"),
                ))
            }
            _ => {
                props.insert("name".into(), name.to_owned());
            }
        }
        let existing = self.connector(name).ok();
        if let Some(existing) = &existing {
            keep_masked_secrets(&mut props, existing);
        }
        let planned = self
            .plan_off_thread(Self::plugin_of(&props)?, &props)
            .await?;
        let target = existing.as_ref().map_or(TargetState::Started, |e| e.target);
        if let Some(store) = &self.store {
            store
                .put(name, &planned.config, &planned.raw_tasks, target)
                .await
                .map_err(|e| {
                    HerderError::Unavailable(format!("could not store connector {name}: {e}"))
                })?;
        }
        if existing.is_some() {
            self.forget(name).await?;
        }
        count_startup(self.launch(planned, target))?;
        self.settle().await;
        Ok(existing.is_none())
    }

    /// Pauses, resumes or stops a connector, and stores the new target.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), HerderError> {
        let _change = self.changes.lock().await;
        let entry = self.connector(name)?;
        if let Some(store) = &self.store {
            store.put_target(name, target).await.map_err(|e| {
                HerderError::Unavailable(format!("could not store the state of {name}: {e}"))
            })?;
        }
        entry.supervisor.do_send(SetTarget(target));
        self.report_connector(name, target);
        self.update_entry(name, |e| e.target = target)?;
        self.settle().await;
        Ok(())
    }

    /// Restarts a connector's tasks: all of them, or only the failed ones.
    pub async fn restart_connector(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<u32>, HerderError> {
        let statuses = self.task_statuses(name).await?;
        let mut restarted = Vec::new();
        for t in statuses {
            if !only_failed || t.state == TaskState::Failed {
                self.restart_task(name, t.id).await?;
                restarted.push(t.id);
            }
        }
        Ok(restarted)
    }

    /// Topics the connector has written to since it started or the last reset.
    pub fn topics(&self, name: &str) -> Result<Vec<String>, HerderError> {
        let entry = self.connector(name)?;
        let topics = entry
            .topics
            .lock()
            .map_err(|_| HerderError::Internal("topic set poisoned".into()))?;
        Ok(topics.iter().cloned().collect())
    }

    /// Forgets the connector's active topics.
    pub fn reset_topics(&self, name: &str) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        entry
            .topics
            .lock()
            .map_err(|_| HerderError::Internal("topic set poisoned".into()))?
            .clear();
        Ok(())
    }

    /// The connector's committed offsets: a source's source offsets, or a sink's consumer
    /// group offsets in Kafka Connect's shape (`{"kafka_topic","kafka_partition"}` ->
    /// `{"kafka_offset"}`).
    pub async fn offsets(
        &self,
        name: &str,
    ) -> Result<BTreeMap<sluice_proto::SourcePartition, sluice_proto::SourceOffset>, HerderError>
    {
        let entry = self.connector(name)?;
        if let Some(subscription) = &entry.subscription {
            let offsets = sink::group_offsets(
                &self.config.kafka_client_props("consumer."),
                &sink::group_id(name),
                subscription,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
            return Ok(offsets
                .into_iter()
                .map(|(tp, o)| {
                    let mut p = serde_json::Map::new();
                    p.insert("kafka_topic".into(), tp.topic.into());
                    p.insert("kafka_partition".into(), tp.partition.into());
                    (
                        sluice_proto::SourcePartition::new(p),
                        sluice_proto::SourceOffset::single("kafka_offset", o),
                    )
                })
                .collect());
        }
        self.offsets
            .read(name, Duration::from_secs(30))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))
    }

    /// Alters a STOPPED sink's group offsets; all-`None` (a reset) deletes the group.
    async fn alter_sink_offsets(
        &self,
        name: &str,
        changes: Vec<(
            sluice_proto::SourcePartition,
            Option<sluice_proto::SourceOffset>,
        )>,
    ) -> Result<(), HerderError> {
        let props = self.config.kafka_client_props("consumer.");
        let group = sink::group_id(name);
        if changes.iter().all(|(_, o)| o.is_none()) {
            sink::delete_group(&props, &group, Duration::from_secs(30))
                .await
                .map_err(|e| HerderError::Internal(e.to_string()))?;
            tracing::info!(connector = %name, group = %group, "sink offsets reset (consumer group deleted)");
            return Ok(());
        }
        let mut offsets = BTreeMap::new();
        for (i, (p, o)) in changes.iter().enumerate() {
            let topic = p
                .as_map()
                .get("kafka_topic")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    key_error(
                        &format!("offsets[{i}].partition.kafka_topic"),
                        "must be a string",
                    )
                })?;
            let partition = p
                .as_map()
                .get("kafka_partition")
                .and_then(serde_json::Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    key_error(
                        &format!("offsets[{i}].partition.kafka_partition"),
                        "must be a non-negative integer",
                    )
                })?;
            let offset = o
                .as_ref()
                .ok_or_else(|| key_error(&format!("offsets[{i}].offset"), "null resets one partition, which Sluice does not support yet; DELETE the offsets to reset them all"))?
                .0
                .get("kafka_offset")
                .and_then(serde_json::Value::as_i64)
                .filter(|v| *v >= 0)
                .ok_or_else(|| key_error(&format!("offsets[{i}].offset.kafka_offset"), "must be a non-negative integer"))?;
            offsets.insert(
                sluice_proto::TopicPartition {
                    topic: topic.to_owned(),
                    partition,
                },
                offset,
            );
        }
        let count = offsets.len();
        sink::alter_group_offsets(&props, &group, offsets, Duration::from_secs(30))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        tracing::info!(connector = %name, group = %group, partitions = count, "sink offsets altered");
        Ok(())
    }

    /// Writes (or, with `None`, erases) offsets of a STOPPED connector (KIP-875).
    pub async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(
            sluice_proto::SourcePartition,
            Option<sluice_proto::SourceOffset>,
        )>,
    ) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        if entry.target != TargetState::Stopped {
            return Err(HerderError::WrongState(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. {name} is {:?}",
                entry.target
            )));
        }
        if entry.subscription.is_some() {
            return self.alter_sink_offsets(name, changes).await;
        }
        let records = changes
            .iter()
            .map(|(p, o)| self.offsets.record(name, p, o.as_ref()))
            .collect();
        let producer = crate::kafka::producer::TaskProducer::create(
            self.config.kafka_client_props("producer."),
            None,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| HerderError::Internal(e.to_string()))?;
        producer
            .send(records)
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        producer
            .commit()
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        tracing::info!(connector = %name, partitions = changes.len(), "source offsets altered");
        Ok(())
    }

    /// Stops every connector, each task committing what it has, within `timeout` (the
    /// connectors stop concurrently).
    pub async fn stop_all(&self, timeout: Duration) {
        let entries = self.read_connectors();
        let stops = entries.iter().map(|(name, entry)| {
            let name = name.clone();
            let supervisor = entry.supervisor.clone();
            async move {
                match tokio::time::timeout(timeout, supervisor.send(StopConnector)).await {
                    Ok(Ok(())) => tracing::info!(connector = %name, "connector stopped"),
                    Ok(Err(e)) => tracing::warn!(connector = %name, error = %e, "connector supervisor gone"),
                    Err(_) => tracing::warn!(connector = %name, ?timeout, "connector did not stop in time"),
                }
            }
        });
        // All at once: shutdown takes one grace period, not one per connector.
        let mut all = tokio::task::JoinSet::new();
        for stop in stops {
            all.spawn(stop);
        }
        while all.join_next().await.is_some() {}
    }
}
