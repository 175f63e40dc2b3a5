//! The Elasticsearch sink's configuration keys, as Confluent's Elasticsearch sink names them.

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Comma-separated node URLs.
pub const URL: &str = "connection.url";
/// Basic auth user.
pub const USER: &str = "connection.username";
/// Basic auth password.
pub const PASSWORD: &str = "connection.password";
/// Mapping type: accepted, ignored (servers since 7 have none).
pub const TYPE_NAME: &str = "type.name";
/// `_id` = topic+partition+offset instead of the record key.
pub const KEY_IGNORE: &str = "key.ignore";
/// Index the value without its Connect schema.
pub const SCHEMA_IGNORE: &str = "schema.ignore";
/// Retries of a bulk request that failed in transport or with 429/5xx (or of its failed
/// items), within one put.
pub const MAX_RETRIES: &str = "max.retries";
/// Retry `n` waits a random time below `retry.backoff.ms << n`.
pub const RETRY_BACKOFF: &str = "retry.backoff.ms";
/// Bound for each HTTP request.
pub const READ_TIMEOUT: &str = "read.timeout.ms";
/// `ignore`, `delete` or `fail` on a null value.
pub const NULL_VALUES: &str = "behavior.on.null.values";
/// `ignore`, `warn` or `fail` on a document the server rejects.
pub const MALFORMED: &str = "behavior.on.malformed.documents";
/// `insert` or `upsert`.
pub const WRITE_METHOD: &str = "write.method";

/// Most records in one bulk request.
pub const BATCH_SIZE: &str = "batch.size";
/// Accepted for Confluent configs: a put is written when it arrives (see the README).
pub const LINGER: &str = "linger.ms";
/// Bulk requests of one put sent at the same time.
pub const IN_FLIGHT: &str = "max.in.flight.requests";
/// How long a put may take, retries included, before it fails (retriably).
pub const FLUSH_TIMEOUT: &str = "flush.timeout.ms";
/// PLAINTEXT or SSL; https URLs decide, this is checked against them.
pub const SECURITY_PROTOCOL: &str = "elastic.security.protocol";
/// CA certificates the cluster's certificate must chain to.
pub const TRUSTSTORE: &str = "elastic.https.ssl.truststore.location";
/// The truststore's format: only PEM (Kafka's PEM store type, KIP-651).
pub const TRUSTSTORE_TYPE: &str = "elastic.https.ssl.truststore.type";
/// `https` checks the host name against the certificate; empty does not.
pub const ENDPOINT_IDENTIFICATION: &str = "elastic.https.ssl.endpoint.identification.algorithm";

/// The keys.
pub fn sink_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new(URL, ConfigType::List)
                .importance(Importance::High)
                .doc("The URLs of the Elasticsearch or OpenSearch nodes."),
        )
        .define(ConfigKey::new(USER, ConfigType::String).optional().importance(Importance::Medium))
        .define(ConfigKey::new(PASSWORD, ConfigType::Password).optional().importance(Importance::Medium))
        .define(
            ConfigKey::new(TYPE_NAME, ConfigType::String)
                .optional()
                .importance(Importance::Low)
                .doc("Accepted for old configs; mapping types no longer exist, so it is ignored with a warning."),
        )
        .define(ConfigKey::new(KEY_IGNORE, ConfigType::Boolean).default_value("false").importance(Importance::High)
            .doc("true: the document id is topic+partition+offset; false: the record key, versioned by offset."))
        .define(ConfigKey::new(SCHEMA_IGNORE, ConfigType::Boolean).default_value("false").importance(Importance::Low))
        .define(ConfigKey::new(MAX_RETRIES, ConfigType::Int).default_value("5").importance(Importance::Low).validator(Validator::at_least(0.0))
            .doc("Retries of a bulk request that failed in transport or with 429/5xx (or of its failed items) within one put; then the put fails retriably and the runtime retries it (errors.retry.*)."))
        .define(ConfigKey::new(RETRY_BACKOFF, ConfigType::Long).default_value("100").importance(Importance::Low).validator(Validator::at_least(0.0))
            .doc("Retry n waits a random time below retry.backoff.ms << n (Confluent's schedule): with the defaults, under 3.2 s each and 6.2 s in all."))
        .define(ConfigKey::new(READ_TIMEOUT, ConfigType::Int).default_value("15000").importance(Importance::Low).validator(Validator::at_least(1.0)))
        .define(ConfigKey::new(BATCH_SIZE, ConfigType::Int).default_value("2000").importance(Importance::Low).validator(Validator::at_least(1.0))
            .doc("The most records in one bulk request; a larger put is split."))
        .define(ConfigKey::new(LINGER, ConfigType::Long).default_value("1").importance(Importance::Low).validator(Validator::at_least(0.0))
            .doc("Accepted for Confluent configs and not used: a put is written as it arrives, its size set by what the consumer has fetched."))
        .define(ConfigKey::new(IN_FLIGHT, ConfigType::Int).default_value("5").importance(Importance::Low).validator(Validator::at_least(1.0))
            .doc("Bulk requests of one put sent concurrently (1 with write.method=upsert, whose updates carry no version and must stay in order)."))
        .define(ConfigKey::new(FLUSH_TIMEOUT, ConfigType::Long).default_value("180000").importance(Importance::Low).validator(Validator::at_least(1.0))
            .doc("How long writing one put may take, retries included; past it the put fails retriably and is put again (ids make the rewrite idempotent)."))
        .define(ConfigKey::new(SECURITY_PROTOCOL, ConfigType::String).default_value("PLAINTEXT").importance(Importance::Medium)
            .validator(Validator::OneOf(&["PLAINTEXT", "SSL"]))
            .doc("SSL requires https URLs in connection.url."))
        .define(ConfigKey::new(TRUSTSTORE, ConfigType::String).default_value("").importance(Importance::Medium)
            .doc("PEM file of the CA certificates the cluster's certificate must chain to; empty: the system's roots."))
        .define(ConfigKey::new(TRUSTSTORE_TYPE, ConfigType::String).default_value("JKS").importance(Importance::Low)
            .validator(Validator::OneOf(&["JKS", "PKCS12", "PEM"]))
            .doc("Only PEM is read; set it with a truststore location."))
        .define(ConfigKey::new(ENDPOINT_IDENTIFICATION, ConfigType::String).default_value("https").importance(Importance::Low)
            .doc("https: the cluster's host name must match its certificate; empty: not checked (the chain still is)."))
        .define(
            ConfigKey::new(NULL_VALUES, ConfigType::String)
                .default_value("fail")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["ignore", "delete", "fail"])),
        )
        .define(
            ConfigKey::new(MALFORMED, ConfigType::String)
                .default_value("fail")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["ignore", "warn", "fail"])),
        )
        .define(
            ConfigKey::new(WRITE_METHOD, ConfigType::String)
                .default_value("insert")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["insert", "upsert"])),
        )
}
