//! The replication session: the slot and the publication, and the stream of decoded
//! pgoutput messages from a given position.
//!
//! The wire protocol (startup, authentication, TLS, CopyBoth framing, standby status
//! updates) is `pgwire-replication`'s: it never confirms a position by itself, keeps
//! answering keepalives while the consumer is busy, and hands over the pgoutput payloads
//! as bytes, which [`crate::pgoutput`] decodes. The position confirmed to the server is
//! only ever one this connector has made durable (stored in Kafka with the records), so
//! the slot never lets go of WAL the connector could still need after a crash.

use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};

use crate::pgoutput::{self, DecodeError, Lsn, Message};

/// What went wrong with the replication session.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("PostgreSQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("replication connection: {0}")]
    Wire(#[from] pgwire_replication::PgWireError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Setup(String),
}

/// Where and as whom to connect, and which slot and publication to use.
#[derive(Debug, Clone)]
pub struct Session {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub slot: String,
    pub publication: String,
}

impl Session {
    /// The session a connector's config describes.
    pub fn of(config: &crate::config::PostgresConfig) -> Session {
        Session {
            host: config.hostname.clone(),
            port: config.port,
            user: config.user.clone(),
            password: config.password.clone(),
            database: config.dbname.clone(),
            slot: config.slot.clone(),
            publication: config.publication.clone(),
        }
    }

    /// A libpq-style connection string for the SQL connection.
    pub fn conninfo(&self) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host={} port={} user={} password={} dbname={}",
            quote(&self.host),
            self.port,
            quote(&self.user),
            quote(&self.password),
            quote(&self.database)
        )
    }
}

impl Session {
    /// The replication connection's settings (plain TCP: TLS to PostgreSQL is not built).
    fn wire_config(&self) -> ReplicationConfig {
        ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.database.clone(),
            self.slot.clone(),
            self.publication.as_str(),
        )
        .with_port(self.port)
        .with_tls(TlsConfig::disabled())
        // A confirmed position reaches the server within a second (the crate's default is
        // 10 s): the server answers a status behind its WAL end with a keepalive, whose
        // position is then committed and confirmed in turn, so a quiet slot follows the
        // server's WAL closely instead of in 10-20 s steps.
        .with_status_interval(std::time::Duration::from_secs(1))
    }
}

/// An SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The slot's state, if it exists: its `confirmed_flush_lsn` and whether a session holds
/// it now.
pub async fn slot_state(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<(Option<Lsn>, bool)>, ReplicationError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, active, plugin FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let plugin: Option<String> = row.get(2);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(ReplicationError::Setup(format!(
            "slot.name: slot {slot} uses plugin {}, not pgoutput",
            plugin.unwrap_or_default()
        )));
    }
    let confirmed: Option<String> = row.get(0);
    let confirmed = confirmed
        .map(|l| l.parse::<Lsn>().map_err(ReplicationError::Setup))
        .transpose()?;
    Ok(Some((confirmed, row.get(1))))
}

/// Whether the slot exists and PostgreSQL has removed WAL it still needed (`wal_status`
/// `lost`, past `max_slot_wal_keep_size`): its changes after the confirmed position are gone.
pub async fn slot_lost(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<bool, ReplicationError> {
    let row = client
        .query_opt(
            "SELECT wal_status = 'lost' FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false))
}

/// Creates the slot (pgoutput) unless it exists; returns the position it starts at when
/// created.
pub async fn ensure_slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<Lsn>, ReplicationError> {
    if slot_state(client, slot).await?.is_some() {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await?;
    let lsn: String = row.get(0);
    Ok(Some(lsn.parse().map_err(ReplicationError::Setup)?))
}

/// Drops the slot (`slot.drop.on.stop`), if it exists and no session holds it.
pub async fn drop_slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<(), ReplicationError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database() AND NOT active",
            &[&slot],
        )
        .await?;
    Ok(())
}

/// One thing the stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A decoded pgoutput message.
    Data(Message),
    /// A row change (Insert, Update, Delete, Truncate) with the LSN of its WAL record.
    Change { message: Message, lsn: Lsn },
    /// A keepalive with the server's WAL end. Between transactions it is a position that
    /// can be confirmed once everything before it is durable (so an idle slot lets go of
    /// WAL); inside a transaction it says nothing about that transaction.
    Idle { wal_end: Lsn },
}

/// A running replication stream.
pub struct Stream {
    client: ReplicationClient,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl Stream {
    /// Starts streaming the slot's changes after `from` (a transaction's end LSN stored
    /// with the records; the server skips transactions whose commit starts before it),
    /// confirming nothing past `from` until told.
    pub async fn start(session: &Session, from: Lsn) -> Result<Stream, ReplicationError> {
        let mut config = session.wire_config();
        config.start_lsn = pgwire_replication::Lsn::from_u64(from.0);
        config.ack_lsn = Some(pgwire_replication::Lsn::from_u64(from.0));
        let client = ReplicationClient::connect(config).await?;
        Ok(Stream { client })
    }

    /// A session that creates `session`'s slot with an exported snapshot and waits: the
    /// snapshot's name (to read the tables as of the slot's consistent point, with
    /// `SET TRANSACTION SNAPSHOT`) stays valid until [`Stream::begin`] starts streaming
    /// from that point.
    pub async fn create_exported(
        session: &Session,
    ) -> Result<(Stream, Lsn, String), ReplicationError> {
        let mut client = ReplicationClient::connect_gated(session.wire_config()).await?;
        let rows = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                quote_ident(&session.slot)
            ))
            .await?;
        let row = rows.first().ok_or_else(|| {
            ReplicationError::Setup("CREATE_REPLICATION_SLOT answered no row".into())
        })?;
        let text = |i: usize| {
            row.get(i)
                .and_then(|v| v.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| {
                    ReplicationError::Setup(format!(
                        "CREATE_REPLICATION_SLOT answered no column {i}"
                    ))
                })
        };
        let point: Lsn = text(1)?.parse().map_err(ReplicationError::Setup)?;
        let name = text(2)?;
        Ok((Stream { client }, point, name))
    }

    /// Starts streaming on a session made by [`Stream::create_exported`] (from the slot's
    /// consistent point; the exported snapshot ends here).
    pub async fn begin(&mut self) -> Result<(), ReplicationError> {
        self.client.start().await?;
        Ok(())
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Result<Option<Event>, ReplicationError> {
        loop {
            let Some(event) = self.client.recv().await? else {
                return Ok(None);
            };
            let lsn = |l: pgwire_replication::Lsn| Lsn(l.as_u64());
            let out = match event {
                ReplicationEvent::KeepAlive { wal_end, .. } => Event::Idle {
                    wal_end: lsn(wal_end),
                },
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => Event::Data(Message::Begin {
                    final_lsn: lsn(final_lsn),
                    commit_time: commit_time_micros,
                    xid,
                }),
                ReplicationEvent::Commit {
                    lsn: commit,
                    end_lsn,
                    commit_time_micros,
                } => Event::Data(Message::Commit {
                    commit_lsn: lsn(commit),
                    end_lsn: lsn(end_lsn),
                    commit_time: commit_time_micros,
                }),
                ReplicationEvent::Message {
                    transactional,
                    lsn: at,
                    prefix,
                    content,
                } => Event::Data(Message::Logical {
                    transactional,
                    lsn: lsn(at),
                    prefix,
                    content: content.to_vec(),
                }),
                ReplicationEvent::XLogData {
                    data, wal_start, ..
                } => match pgoutput::decode(&data)? {
                    message @ (Message::Insert { .. }
                    | Message::Update { .. }
                    | Message::Delete { .. }
                    | Message::Truncate { .. }) => Event::Change {
                        message,
                        lsn: lsn(wal_start),
                    },
                    other => Event::Data(other),
                },
                ReplicationEvent::StoppedAt { .. } => continue,
            };
            return Ok(Some(out));
        }
    }

    /// Everything up to `lsn` is durable: the server may release the WAL before it.
    pub fn confirm(&self, lsn: Lsn) {
        self.client
            .update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
    }

    /// Ends the session (its last confirmed position is sent first).
    pub async fn stop(mut self) -> Result<(), ReplicationError> {
        self.client.shutdown().await?;
        Ok(())
    }
}
