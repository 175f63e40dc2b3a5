//! Planning a connector: its config validated in full (the common keys, converters,
//! transforms, error handling, exactly-once support, the connector's own keys and task
//! configs) and every task's spec built, before anything runs; a refused config starts
//! and stores nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::{ConfigDef, ErrorKind, ExactlyOnceSupport, ParsedConfig};

use super::HerderError;
use crate::config::connector::common_def;
use crate::config::connector::kind_def;
use crate::convert::{self, Part};
use crate::registry;
use crate::task::actor::{trace, TaskFailure, TaskLauncher};
use crate::task::sink;
use crate::task::source::{Boundary, SourceTaskSpec, TaskFactory};
use crate::task::supervisor::RestartPolicy;
use crate::transforms::TransformChain;

use super::worker::Worker;

/// A connector checked and ready to start: what [`Worker::plan`] hands [`Worker::launch`].
pub(super) struct Planned {
    pub(super) name: String,
    pub(super) class: &'static str,
    pub(super) kind: &'static str,
    pub(super) config: BTreeMap<String, String>,
    pub(super) masked_config: BTreeMap<String, String>,
    pub(super) masked_tasks: Vec<BTreeMap<String, String>>,
    pub(super) raw_tasks: Vec<BTreeMap<String, String>>,
    pub(super) specs: Vec<TaskLauncher>,
    pub(super) topics: Arc<Mutex<BTreeSet<String>>>,
    pub(super) subscription: Option<sink::Subscription>,
    pub(super) exactly_once: bool,
}

pub(super) fn key_error(key: &str, message: impl std::fmt::Display) -> HerderError {
    HerderError::BadConfig(format!("{key}: {message}"))
}

/// A config PUT to `/connectors/{name}/config`: its `name`, if given, must be the one in the
/// path; if not given, it is that one.
pub(super) fn name_from_path(
    props: &mut BTreeMap<String, String>,
    name: &str,
) -> Result<(), HerderError> {
    match props.get("name") {
        Some(n) if n != name => Err(key_error(
            "name",
            format!("{n:?} does not match the connector in the path, {name:?}"),
        )),
        _ => {
            props.insert("name".into(), name.to_owned());
            Ok(())
        }
    }
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
            let claim = spec.claim.clone();
            Box::pin(async move {
                crate::task::source::run_source_task(spec, stop, health)
                    .await
                    .map_err(|e| TaskFailure {
                        trace: trace(&e),
                        permanent: e.is_permanent(&claim),
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

    pub(super) fn policy(&self) -> RestartPolicy {
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
    pub(super) fn plan(
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
                            claim: self.claim.clone(),
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
                            claim: self.claim.clone(),
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
}
