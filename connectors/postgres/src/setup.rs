//! What a PostgreSQL task looks up and sets up before it reads: the captured tables' keys
//! and the enum types, the publication, the slot freed of a stale session of its own, the
//! check for changes lost since the committed offset, and the snapshot's sessions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_proto::ConnectorError;

use crate::config::PostgresConfig;
use crate::pgoutput::Lsn;
use crate::preflight;
use crate::replication;

/// The primary key's column names of relation `oid` (none without a primary key).
pub(crate) async fn primary_key(
    sql: &tokio_postgres::Client,
    oid: u32,
) -> Result<Vec<String>, ConnectorError> {
    let rows = sql
        .query(
            "SELECT a.attname::text FROM pg_index i \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
              WHERE i.indrelid = $1 AND i.indisprimary",
            &[&oid],
        )
        .await
        .map_err(|e| crate::retriable("reading a table's primary key", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every enum type of the database, with its labels in order.
pub(crate) async fn load_enums(
    sql: &tokio_postgres::Client,
) -> Result<HashMap<u32, String>, ConnectorError> {
    let rows = sql
        .query(
            "SELECT enumtypid, string_agg(enumlabel, ',' ORDER BY enumsortorder) \
             FROM pg_enum GROUP BY enumtypid",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("reading the enum types (pg_enum)", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
        .collect())
}

/// The OIDs of the extension types Sluice maps (hstore, ltree, citext), where the
/// database has them.
pub(crate) async fn load_extensions(
    sql: &tokio_postgres::Client,
) -> Result<crate::types::Extensions, ConnectorError> {
    let rows = sql
        .query(
            "SELECT typname::text, min(oid::int8) FROM pg_type \
              WHERE typname IN ('hstore', 'ltree', 'citext') AND typtype = 'b' GROUP BY 1",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("reading the extension types (pg_type)", e))?;
    let mut out = crate::types::Extensions::NONE;
    for row in rows {
        let oid = u32::try_from(row.get::<_, i64>(1)).ok();
        match row.get::<_, String>(0).as_str() {
            "hstore" => out.hstore = oid,
            "ltree" => out.ltree = oid,
            "citext" => out.citext = oid,
            _ => {}
        }
    }
    Ok(out)
}

/// Makes sure the publication exists as `publication.autocreate.mode` says: `all_tables`
/// and `no_tables` create it if missing; `filtered` creates it for the captured tables (and
/// the signal table), or sets an existing one's tables to those, at every start, so only
/// the captured tables are published (a table left out never has its UPDATE and DELETE
/// refused for want of a replica identity).
pub(crate) async fn ensure_publication(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<(), ConnectorError> {
    let exists = sql
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await
        .map_err(|e| crate::retriable("reading pg_publication", e))?
        .is_some();
    let name = replication::quote_ident(&config.publication);
    let mode = config.publication_autocreate.as_str();
    if exists && mode != "filtered" {
        return Ok(());
    }
    let statement = match mode {
        "all_tables" => {
            preflight::check_all_tables_publication(sql).await?;
            format!("CREATE PUBLICATION {name} FOR ALL TABLES")
        }
        "no_tables" => format!("CREATE PUBLICATION {name}"),
        "filtered" => {
            let tables = filtered_tables(sql, config).await?;
            match (exists, tables.is_empty()) {
                (false, true) => format!("CREATE PUBLICATION {name}"),
                (false, false) => {
                    format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
                }
                (true, false) => {
                    format!("ALTER PUBLICATION {name} SET TABLE {}", tables.join(", "))
                }
                (true, true) => {
                    tracing::warn!(publication = %config.publication, "publication.autocreate.mode=filtered: no table is captured; the publication's tables are left as they are");
                    return Ok(());
                }
            }
        }
        _ => {
            return Err(ConnectorError::config(format!(
                "publication.name: publication {} does not exist and publication.autocreate.mode={} does not create it",
                config.publication, config.publication_autocreate
            )))
        }
    };
    sql.batch_execute(&statement).await.map_err(|e| {
        let what = format!(
            "publication.autocreate.mode={mode}: {statement} (publication {})",
            config.publication
        );
        match e.as_db_error() {
            // Not the owner, or a publication FOR ALL TABLES that cannot list tables.
            Some(db) if db.code().code().starts_with("42") || db.code().code() == "55000" => {
                ConnectorError::config(format!("{what}: {}", db.message()))
            }
            _ => crate::retriable(&what, e),
        }
    })?;
    tracing::info!(publication = %config.publication, statement = %statement, "publication set up");
    Ok(())
}

/// The tables a `filtered` publication holds: the captured ones and the signal table, as
/// quoted `"schema"."table"` names.
async fn filtered_tables(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<Vec<String>, ConnectorError> {
    let mut tables: Vec<String> = crate::snapshot::captured(sql, config)
        .await?
        .iter()
        .map(|(schema, table)| {
            format!(
                "{}.{}",
                replication::quote_ident(schema),
                replication::quote_ident(table)
            )
        })
        .collect();
    if let Some((schema, table)) = &config.signal_table {
        let signal = format!(
            "{}.{}",
            replication::quote_ident(schema),
            replication::quote_ident(table)
        );
        if !tables.contains(&signal) {
            tables.push(signal);
        }
    }
    Ok(tables)
}

/// Ends a session that still holds the slot (a previous life of this task, already
/// fenced in Kafka by the engine before this one started), then waits for the slot.
pub(crate) async fn free_slot(
    sql: &tokio_postgres::Client,
    slot: &str,
    label: &str,
) -> Result<(), ConnectorError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match replication::slot_state(sql, slot).await? {
            Some((_, true)) => {
                tracing::warn!(task = %label, slot, "replication slot held by another session; ending it (a previous life of this task)");
                sql.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active AND active_pid <> pg_backend_pid()",
                    &[&slot],
                )
                .await
                .map_err(|e| crate::retriable("ending the slot's other session", e))?;
            }
            _ => return Ok(()),
        }
        if Instant::now() > deadline {
            return Err(ConnectorError::retriable(format!(
                "replication slot {slot} is still active after 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why changes after the committed offset `stored` can no longer be read from the slot, if
/// they cannot: the slot is gone, or it confirmed past the offset.
pub(crate) async fn lost_changes(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
    stored: Option<Lsn>,
) -> Result<Option<String>, ConnectorError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    if replication::slot_lost(sql, &config.slot).await? {
        return Ok(Some(format!(
            "slot {} lost WAL it still needed (wal_status lost: max_slot_wal_keep_size); offsets committed up to {stored}",
            config.slot
        )));
    }
    Ok(match replication::slot_state(sql, &config.slot).await? {
        None => Some(format!(
            "slot {} does not exist (offsets committed up to {stored})",
            config.slot
        )),
        Some((Some(confirmed), _)) if confirmed > stored => Some(format!(
            "slot {} confirmed {confirmed}, past the committed offset {stored}",
            config.slot
        )),
        _ => None,
    })
}

/// `count` sessions for the snapshot, each inside the exported
/// snapshot's transaction when there is one: all import it before the exporting session
/// starts streaming, which ends the export.
pub(crate) async fn snapshot_sessions(
    config: &PostgresConfig,
    count: usize,
    exported: Option<&str>,
    label: &str,
) -> Result<Vec<tokio_postgres::Client>, ConnectorError> {
    let mut readers = Vec::with_capacity(count);
    for _ in 0..count {
        let sql = preflight::connect(config, label, "snapshot reader")
            .await
            .map_err(|e| preflight::connect_error(config, &e))?;
        if let Some(exported) = exported {
            sql.batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                exported.replace('\'', "''")
            ))
            .await
            .map_err(|e| crate::retriable("importing the exported snapshot", e))?;
        }
        readers.push(sql);
    }
    Ok(readers)
}
