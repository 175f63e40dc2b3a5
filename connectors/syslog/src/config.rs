//! The syslog source's configuration keys, as Confluent's syslog source names them.

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Destination topic.
pub const TOPIC: &str = "kafka.topic";
/// Port to listen on.
pub const PORT: &str = "syslog.port";
/// Address to listen on.
pub const LISTEN: &str = "syslog.listen.address";
/// Look up the peer's host name.
pub const REVERSE_DNS: &str = "syslog.reverse.dns.remote.ip";
/// The largest message kept whole (Sluice's key).
pub const MAX_MESSAGE: &str = "syslog.max.message.bytes";
/// Most records one poll returns.
pub const BATCH: &str = "batch.size";
/// Which listener (Confluent's generic syslog class): TCP, UDP, TCPSSL, or Sluice's RELP.
pub const LISTENER: &str = "syslog.listener";
/// TLS: the server certificate chain, PEM.
pub const SSL_CERT_CHAIN: &str = "syslog.ssl.cert.chain.path";
/// TLS: the server's private key, PEM (PKCS#8 or traditional, optionally encrypted).
pub const SSL_KEY: &str = "syslog.ssl.key.path";
/// TLS: the private key's password, if it is encrypted.
pub const SSL_KEY_PASSWORD: &str = "syslog.ssl.key.password";
/// TLS: generate a self-signed certificate instead of reading one.
pub const SSL_SELF_SIGNED: &str = "syslog.ssl.self.signed.certificate.enable";
/// TLS: Confluent's choice of Java TLS implementation; accepted, OpenSSL is always used.
pub const SSL_PROVIDER: &str = "syslog.ssl.provider";
/// TLS: require client certificates signed by these CAs, PEM (Sluice's key).
pub const SSL_CLIENT_CA: &str = "syslog.ssl.client.ca.path";
/// TCP, TLS and RELP: the most connections served at once (Sluice's key).
pub const MAX_CONNECTIONS: &str = "syslog.max.connections";
/// RELP: how many recent messages per peer a resend is recognised against (Sluice's key).
pub const RELP_WINDOW: &str = "syslog.relp.dedupe.window";
/// RELP: how many peers' recent messages are kept (Sluice's key).
pub const RELP_MAX_PEERS: &str = "syslog.relp.dedupe.max.peers";

/// The keys.
pub fn source_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The topic the messages are written to."),
        )
        .define(
            ConfigKey::new(PORT, ConfigType::Int)
                .importance(Importance::High)
                .validator(Validator::at_least(1.0))
                .doc("The port to listen on."),
        )
        .define(
            ConfigKey::new(LISTEN, ConfigType::String)
                .default_value("0.0.0.0")
                .importance(Importance::Medium)
                .doc("The address to listen on."),
        )
        .define(
            ConfigKey::new(REVERSE_DNS, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Resolve the peer's address to a name for the hostname field (loopback and /etc/hosts only: the name is looked up without a DNS client; /etc/hosts is read at start and again every minute, never per message)."),
        )
        .define(
            ConfigKey::new(MAX_MESSAGE, ConfigType::Int)
                .default_value("65536")
                .importance(Importance::Low)
                .validator(Validator::at_least(64.0))
                .doc("Messages longer than this are cut to this many bytes, logged and counted."),
        )
        .define(
            ConfigKey::new(MAX_CONNECTIONS, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("TCP, TCPSSL and RELP: the most connections served at once. Past it a new connection is closed as soon as it is accepted (logged, counted in sluice_syslog_connections_refused_total) until one of the open ones ends. Not used by UDP."),
        )
        .define(
            ConfigKey::new(BATCH, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("The most messages one poll returns."),
        )
        .define(
            ConfigKey::new(LISTENER, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .validator(Validator::OneOf(&["", "TCP", "UDP", "TCPSSL", "RELP"]))
                .doc("The listener: TCP, UDP, TCPSSL (TCP with TLS) or RELP. With Confluent's generic class io.confluent.connect.syslog.SyslogSourceConnector it defaults to UDP, as there; the TCP class accepts TCPSSL; other classes fix their own."),
        )
        .define(
            ConfigKey::new(SSL_CERT_CHAIN, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("TCPSSL: the server's certificate chain, PEM, leaf first."),
        )
        .define(
            ConfigKey::new(SSL_KEY, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("TCPSSL: the server's private key, PEM (PKCS#8 or traditional; encrypted if syslog.ssl.key.password is set)."),
        )
        .define(
            ConfigKey::new(SSL_KEY_PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("TCPSSL: the password of an encrypted private key."),
        )
        .define(
            ConfigKey::new(SSL_SELF_SIGNED, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Medium)
                .doc("TCPSSL: generate a self-signed certificate at start instead of reading one (for trials: clients cannot verify it)."),
        )
        .define(
            ConfigKey::new(SSL_PROVIDER, ConfigType::String)
                .default_value("JDK")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["JDK", "OPENSSL", "OPENSSL_REFCNT"]))
                .doc("Accepted for compatibility with Confluent's connector; Sluice always uses OpenSSL."),
        )
        .define(
            ConfigKey::new(SSL_CLIENT_CA, ConfigType::String)
                .default_value("")
                .importance(Importance::Medium)
                .doc("TCPSSL: when set, clients must present a certificate signed by one of these CAs (PEM), as RFC 5425 deployments often require."),
        )
        .define(
            ConfigKey::new(RELP_WINDOW, ConfigType::Int)
                .default_value("512")
                .importance(Importance::Low)
                .validator(Validator::at_least(0.0))
                .doc("RELP only: fingerprints of this many recent messages per peer are committed with the offsets, so a message the client resends after a crash (it had no acknowledgement yet) is recognised and not written twice. Keep it at least the sum of the peer's omrelp window sizes (128 each by default); 0 turns recognition off (resends are then written again)."),
        )
        .define(
            ConfigKey::new(RELP_MAX_PEERS, ConfigType::Int)
                .default_value("10000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("RELP only: the most peers (by IP address) whose recent-message fingerprints are kept for resend recognition. Peers silent for a day are forgotten anyway; past this many the least recently seen are forgotten first. A forgotten peer's resends are written again, so keep it above the number of peers that send within a day."),
        )
}
