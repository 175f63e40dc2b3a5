//! Peer names for the `hostname` field (`syslog.reverse.dns.remote.ip`): loopback is
//! `localhost` (what the seed's documents show), other addresses are named by /etc/hosts or
//! keep their address.
//!
//! The table is read off the async threads (`tokio::fs` runs on the blocking pool) when
//! the task starts and re-read periodically, so a lookup, done per connection and per UDP
//! datagram on an async task, is a map lookup and never file I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// Address -> first name, as in the hosts file.
type Table = HashMap<IpAddr, String>;

/// Names peers; cheap to clone (one table shared by every connection of a task).
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerNames {
    /// `None`: names are not looked up (the address is the name).
    table: Option<Arc<RwLock<Arc<Table>>>>,
}

/// The first name of each address, as a resolver reads the file: `#` starts a comment,
/// the first line naming an address wins.
fn parse_hosts(text: &str) -> Table {
    let mut table = Table::new();
    for line in text.lines() {
        let mut words = line
            .split('#')
            .next()
            .unwrap_or_default()
            .split_whitespace();
        let (Some(address), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if let Ok(ip) = address.parse::<IpAddr>() {
            table.entry(ip).or_insert_with(|| name.to_owned());
        }
    }
    table
}

/// Reads the file on the blocking pool; counts and logs a failure (the names then stay
/// as they were, or are the addresses).
async fn read(path: &Path, connector: &str) -> Option<Table> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Some(parse_hosts(&text)),
        Err(e) => {
            metrics::counter!("sluice_syslog_hosts_file_errors_total", "connector" => connector.to_owned())
                .increment(1);
            tracing::warn!(connector, path = %path.display(), error = %e, "reading the hosts file for syslog.reverse.dns.remote.ip failed: peers keep their last known name or their address");
            None
        }
    }
}

impl PeerNames {
    /// No lookups: every peer is named by its address.
    pub(crate) fn disabled() -> Self {
        PeerNames::default()
    }

    /// Reads `path` now and every `refresh` after, until the last clone is dropped.
    pub(crate) async fn load(path: PathBuf, refresh: Duration, connector: String) -> Self {
        let table = read(&path, &connector).await.unwrap_or_default();
        let shared = Arc::new(RwLock::new(Arc::new(table)));
        tokio::spawn(refresh_loop(
            Arc::downgrade(&shared),
            path,
            refresh,
            connector,
        ));
        PeerNames {
            table: Some(shared),
        }
    }

    /// The peer's name; no I/O.
    pub(crate) fn name(&self, peer: &SocketAddr) -> String {
        let ip = peer.ip();
        let Some(table) = &self.table else {
            return ip.to_string();
        };
        if ip.is_loopback() {
            return "localhost".into();
        }
        // A poisoned lock only means a refresh panicked mid-swap: the table is still whole.
        let table = Arc::clone(
            &table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        table.get(&ip).cloned().unwrap_or_else(|| ip.to_string())
    }
}

/// Re-reads the file so edits to it are seen without a restart; ends with the task (when
/// no connection or listener holds the names any more).
async fn refresh_loop(
    table: Weak<RwLock<Arc<Table>>>,
    path: PathBuf,
    refresh: Duration,
    connector: String,
) {
    loop {
        tokio::time::sleep(refresh).await;
        if table.strong_count() == 0 {
            return;
        }
        let Some(fresh) = read(&path, &connector).await else {
            continue;
        };
        let Some(shared) = table.upgrade() else {
            return;
        };
        let mut current = shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(fresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_hosts(test: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-syslog-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("hosts");
        std::fs::write(&path, text).expect("hosts written");
        path
    }

    /// A lookup runs on the connection's async task: it must not read the file (a blocking
    /// call), only a table read beforehand off the async threads.
    #[tokio::test]
    async fn names_come_from_a_table_read_once_not_from_the_file_per_lookup() {
        let path = temp_hosts("once", "# comment\n192.0.2.7 alpha alpha.example # x\n");
        let names = PeerNames::load(path.clone(), Duration::from_secs(3600), "t".into()).await;
        let peer: SocketAddr = ([192, 0, 2, 7], 514).into();
        assert_eq!(names.name(&peer), "alpha");
        std::fs::remove_file(&path).expect("hosts removed");
        assert_eq!(names.name(&peer), "alpha", "the file was read again");
        assert_eq!(names.name(&([127, 0, 0, 1], 9).into()), "localhost");
        assert_eq!(names.name(&([192, 0, 2, 8], 9).into()), "192.0.2.8");
        let off = PeerNames::disabled();
        assert_eq!(off.name(&peer), "192.0.2.7");
    }

    #[tokio::test]
    async fn the_table_is_read_again_after_the_refresh_period() {
        let path = temp_hosts("refresh", "192.0.2.7 alpha\n");
        let names = PeerNames::load(path.clone(), Duration::from_millis(20), "t".into()).await;
        let peer: SocketAddr = ([192, 0, 2, 7], 514).into();
        assert_eq!(names.name(&peer), "alpha");
        std::fs::write(&path, "192.0.2.7 beta\n192.0.2.7 gamma\n").expect("hosts rewritten");
        let mut name = names.name(&peer);
        for _ in 0..100 {
            if name == "beta" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            name = names.name(&peer);
        }
        assert_eq!(name, "beta");
    }
}
