//! The syslog source: listens on TCP (RFC 6587 octet counting or newline framing, detected
//! per frame), UDP, or RELP (rsyslog's reliable protocol: a message is acknowledged only
//! after the Kafka transaction holding it committed, and a resend after a crash is
//! recognised, so nothing is lost or written twice), parses RFC 5424 and RFC 3164 messages, and writes each as a record
//! with the fields Confluent's syslog connector writes (`date`, `facility`, `level`, `host`,
//! `hostname`, `remote_address`, `charset`, `message`) plus RFC 5424's. Its configuration
//! keys and class names are Confluent's, so the seed's REST calls work verbatim. Input that
//! does not parse is kept whole with a `parse_error`; nothing is dropped silently.

pub mod config;
mod hosts;
pub mod parse;
pub mod relp;
mod relp_state;
mod serve;
pub mod source;
pub mod tls;

pub use source::{Protocol, SyslogSource, SyslogSourceTask};

/// Class names of the TCP source.
pub const TCP_ALIASES: &[&str] = &[
    "io.confluent.kafka.connect.syslog.source.TCPSyslogSourceConnector",
    "TCPSyslogSourceConnector",
    "io.sluice.connect.syslog.TcpSyslogSourceConnector",
];

/// Class names of Confluent's generic syslog source: the listener comes from
/// `syslog.listener` (UDP unless set; TCP, TCPSSL, or Sluice's RELP).
pub const GENERIC_ALIASES: &[&str] = &[
    "io.confluent.connect.syslog.SyslogSourceConnector",
    "SyslogSourceConnector",
    "io.sluice.connect.syslog.SyslogSourceConnector",
];

/// Class names of the RELP source.
pub const RELP_ALIASES: &[&str] = &[
    "io.sluice.connect.syslog.RelpSyslogSourceConnector",
    "RelpSyslogSourceConnector",
    "RELPSyslogSourceConnector",
];

/// Class names of the UDP source.
pub const UDP_ALIASES: &[&str] = &[
    "io.confluent.kafka.connect.syslog.source.UDPSyslogSourceConnector",
    "UDPSyslogSourceConnector",
    "io.sluice.connect.syslog.UdpSyslogSourceConnector",
];
