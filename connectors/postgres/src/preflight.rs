//! What is checked before streaming, so a setup that cannot work fails the task with the
//! setting at fault rather than retrying forever or breaking the database's users: the
//! connection's credentials, `wal_level`, the user's REPLICATION attribute, and tables a
//! publication would make refuse UPDATE and DELETE (no primary key, REPLICA IDENTITY
//! DEFAULT: PostgreSQL rejects their updates and deletes once they are published).

use sluice_proto::ConnectorError;

use crate::config::{PostgresConfig, SIGNAL_DATA_COLLECTION};

/// SQLSTATEs that no retry will fix: wrong password or role, no such database, no right
/// to connect.
const FATAL_STATES: &[&str] = &["28P01", "28000", "3D000", "42501"];

/// A SQL session as `config` says, its connection driven in the background (an end other
/// than the session's own drop is logged with `label` and `role`); the error as the
/// driver gives it, for [`connect_error`] or a key of its own.
pub async fn connect(
    config: &PostgresConfig,
    label: &str,
    role: &'static str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let session = crate::replication::Session::of(config);
    let (sql, connection) =
        tokio_postgres::connect(&session.conninfo(), tokio_postgres::NoTls).await?;
    let label = label.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(task = %label, connection = role, error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(sql)
}

/// A connection error as the task's error: the setting at fault when retrying cannot help.
pub fn connect_error(config: &PostgresConfig, e: &tokio_postgres::Error) -> ConnectorError {
    let state = e.as_db_error().map(|d| d.code().code().to_owned());
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned());
    let what = format!(
        "connecting to PostgreSQL at {}:{} as {} (database.hostname, database.port, database.user, database.password, database.dbname): {message}",
        config.hostname, config.port, config.user
    );
    if state.as_deref().is_some_and(|s| FATAL_STATES.contains(&s)) {
        ConnectorError::config(what)
    } else {
        ConnectorError::retriable(what)
    }
}

/// `wal_level` and the user's right to replicate.
pub async fn check_server(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<(), ConnectorError> {
    let row = sql
        .query_one(
            "SELECT current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("reading wal_level", e))?;
    let wal_level: String = row.get(0);
    if wal_level != "logical" {
        return Err(ConnectorError::config(format!(
            "database.hostname: the server's wal_level is {wal_level}; logical decoding needs wal_level=logical (postgresql.conf, then a restart)"
        )));
    }
    let may_replicate: Option<bool> = row.get(1);
    if may_replicate != Some(true) {
        return Err(ConnectorError::config(format!(
            "database.user: {} has neither the REPLICATION attribute nor superuser (ALTER ROLE {} REPLICATION)",
            config.user, config.user
        )));
    }
    Ok(())
}

/// Tables without a primary key whose replica identity is DEFAULT, among those `include`
/// lets through, as `schema.table`.
pub async fn tables_without_identity(
    sql: &tokio_postgres::Client,
    include: impl Fn(&str, &str) -> bool,
) -> Result<Vec<String>, ConnectorError> {
    let rows = sql
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND c.relreplident = 'd' \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg_toast%' \
                AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("listing tables without a primary key", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, t)| include(s, t))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect())
}

/// Before creating a publication FOR ALL TABLES: refuses when some table would start
/// refusing UPDATE and DELETE because of it.
pub async fn check_all_tables_publication(
    sql: &tokio_postgres::Client,
) -> Result<(), ConnectorError> {
    let blocked = tables_without_identity(sql, |_, _| true).await?;
    if blocked.is_empty() {
        return Ok(());
    }
    Err(ConnectorError::config(format!(
        "publication.autocreate.mode: a publication FOR ALL TABLES would make PostgreSQL refuse UPDATE and DELETE on tables without a primary key: {}; give them one, or REPLICA IDENTITY FULL, or create the publication for the captured tables yourself and set publication.autocreate.mode=disabled",
        blocked.join(", ")
    )))
}

/// The signal table (`signal.data.collection`), if set, exists with at least the three
/// columns id, type and data, and is in the publication (its rows reach the task only
/// through the stream).
pub async fn check_signal_table(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<(), ConnectorError> {
    let Some((schema, table)) = &config.signal_table else {
        return Ok(());
    };
    let name = format!("{schema}.{table}");
    let columns: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            &[schema, table],
        )
        .await
        .map_err(|e| crate::retriable("reading the signal table's columns", e))?
        .get(0);
    if columns == 0 {
        return Err(ConnectorError::config(format!(
            "{}: table {name} does not exist (create it with id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data VARCHAR(2048))",
            SIGNAL_DATA_COLLECTION
        )));
    }
    if columns < 3 {
        return Err(ConnectorError::config(format!(
            "{}: table {name} has {columns} column(s); a signal table has three: id, type, data",
            SIGNAL_DATA_COLLECTION
        )));
    }
    let published = sql
        .query_opt(
            "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&config.publication, schema, table],
        )
        .await
        .map_err(|e| crate::retriable("reading pg_publication_tables", e))?
        .is_some();
    if !published {
        return Err(ConnectorError::config(format!(
            "{}: table {name} is not in publication {} (ALTER PUBLICATION {} ADD TABLE {name}): its signals would never reach the task",
            SIGNAL_DATA_COLLECTION, config.publication, config.publication
        )));
    }
    Ok(())
}

/// A check's error as (the key it names, the message): every message here starts with its
/// key (`database.user: ...`); one that does not is put under `database.hostname`.
fn keyed(e: &ConnectorError) -> (String, String) {
    match e.message.split_once(": ") {
        Some((key, _)) if !key.contains(' ') => (key.to_owned(), e.message.clone()),
        _ => ("database.hostname".to_owned(), e.message.clone()),
    }
}

/// Everything a task's start would refuse, checked against the server at validate: the
/// connection (under the key its failure names), `wal_level`, the user's rights, captured
/// tables PostgreSQL would refuse UPDATE and DELETE on once published, the publication and
/// the signal table. Each problem as (key, message).
pub async fn problems(config: &PostgresConfig) -> Vec<(String, String)> {
    let sql = match connect(config, &config.topic_prefix, "validate").await {
        Ok(sql) => sql,
        Err(e) => {
            let key = match e.as_db_error().map(|d| d.code().code()) {
                Some("28P01") => "database.password",
                Some("28000") => "database.user",
                Some("3D000") => "database.dbname",
                _ => "database.hostname",
            };
            return vec![(key.to_owned(), connect_error(config, &e).message)];
        }
    };
    let mut out = Vec::new();
    if let Err(e) = check_server(&sql, config).await {
        out.push(keyed(&e));
    }
    match tables_without_identity(&sql, |s, t| config.captures(s, t)).await {
        Ok(tables) if !tables.is_empty() => out.push((
            "table.include.list".to_owned(),
            format!(
                "table.include.list: captured tables without a primary key and with REPLICA IDENTITY DEFAULT: {}; PostgreSQL refuses their UPDATE and DELETE once they are published: give them a primary key or REPLICA IDENTITY FULL, or leave them out",
                tables.join(", ")
            ),
        )),
        Ok(_) => {}
        Err(e) => out.push(keyed(&e)),
    }
    let publication = sql
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await;
    match publication {
        Ok(Some(_)) => {
            if let Err(e) = check_signal_table(&sql, config).await {
                out.push(keyed(&e));
            }
        }
        Ok(None) => match config.publication_autocreate.as_str() {
            "all_tables" => {
                if let Err(e) = check_all_tables_publication(&sql).await {
                    out.push(keyed(&e));
                }
            }
            "no_tables" | "filtered" => {}
            _ => out.push((
                "publication.name".to_owned(),
                format!(
                    "publication.name: publication {} does not exist and publication.autocreate.mode={} does not create it",
                    config.publication, config.publication_autocreate
                ),
            )),
        },
        Err(e) => out.push(keyed(&crate::retriable("reading pg_publication", e))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_error_goes_under_the_key_it_names() {
        let e = ConnectorError::config("database.user: bob has neither ...");
        assert_eq!(keyed(&e).0, "database.user");
        let e = ConnectorError::retriable("reading wal_level: db error: boom");
        assert_eq!(keyed(&e).0, "database.hostname");
    }
}
