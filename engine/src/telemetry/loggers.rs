//! Log levels that change at runtime, behind Kafka Connect's `/admin/loggers` (KIP-495):
//! a logger is a `tracing` target (a module path such as `sluice_engine::task::sink`, or a
//! prefix of one), `root` is the default level. Setting a logger also sets the loggers
//! below it that had their own level, as log4j does in Kafka Connect; setting `root` sets
//! them all. Changes last until the process exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter};

/// The root logger's name.
const ROOT: &str = "root";

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; colour only on a terminal.
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// A logger's level as `/admin/loggers` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggerLevel {
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` or `OFF`.
    pub level: String,
    /// When it was last set through the API, in ms since the epoch; `null` if never.
    pub last_modified: Option<u64>,
}

/// A level change that was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoggersError {
    /// Not a log4j level name.
    #[error(
        "invalid log level {0:?}: expected one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF"
    )]
    BadLevel(String),
    /// Not a target name.
    #[error("invalid logger name {0:?}: expected a module path such as sluice_engine::task::sink, or root")]
    BadName(String),
    /// The filter could not be applied.
    #[error("could not apply the new levels: {0}")]
    Apply(String),
}

type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

struct State {
    root: LoggerLevel,
    named: BTreeMap<String, LoggerLevel>,
    /// Directives of the start-up filter that are not plain `target=level` (span or field
    /// filters): kept as they are.
    extra: Vec<String>,
}

/// The process's log levels.
pub struct Loggers {
    state: Mutex<State>,
    apply: Apply,
}

impl std::fmt::Debug for Loggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loggers").finish_non_exhaustive()
    }
}

/// A log4j level name as the `tracing` level it maps to (FATAL is ERROR).
fn canonical(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_uppercase().as_str() {
        "TRACE" => "TRACE",
        "DEBUG" => "DEBUG",
        "INFO" => "INFO",
        "WARN" | "WARNING" => "WARN",
        "ERROR" | "FATAL" => "ERROR",
        "OFF" => "OFF",
        _ => return None,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
}

/// `child` is `parent` or below it (`a::b` under `a`).
fn is_under(child: &str, parent: &str) -> bool {
    child == parent
        || child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Loggers {
    /// Levels from the start-up filter `initial` (`RUST_LOG` syntax), applied through
    /// `apply` (which receives a whole new filter).
    pub fn new(initial: &str, apply: Apply) -> Self {
        let mut state = State {
            root: LoggerLevel {
                level: "INFO".into(),
                last_modified: None,
            },
            named: BTreeMap::new(),
            extra: Vec::new(),
        };
        for directive in initial.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                None => match canonical(directive) {
                    Some(level) => state.root.level = level.to_owned(),
                    None => state.extra.push(directive.to_owned()),
                },
                Some((target, level)) if valid_name(target) => match canonical(level) {
                    Some(level) => {
                        state.named.insert(
                            target.to_owned(),
                            LoggerLevel {
                                level: level.to_owned(),
                                last_modified: None,
                            },
                        );
                    }
                    None => state.extra.push(directive.to_owned()),
                },
                Some(_) => state.extra.push(directive.to_owned()),
            }
        }
        Loggers {
            state: Mutex::new(state),
            apply,
        }
    }

    /// Installs the process's subscriber: stderr in `format`, levels from `RUST_LOG`
    /// (default `info`), changeable through the returned [`Loggers`].
    pub fn install(format: LogFormat) -> Arc<Loggers> {
        let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
        let (layer, handle) = reload::Layer::new(filter);
        let registry = tracing_subscriber::registry().with(layer);
        // Colour only on a terminal: log files and journald get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let installed = match format {
            LogFormat::Text => registry
                .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
                .try_init(),
            LogFormat::Json => registry
                .with(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(std::io::stderr),
                )
                .try_init(),
        };
        if let Err(e) = installed {
            eprintln!("logging was already set up ({e}); /admin/loggers changes may not apply");
        }
        Arc::new(Loggers::new(
            &initial,
            Box::new(move |directives| {
                let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every logger with its own level, and `root`, sorted by name.
    pub fn all(&self) -> BTreeMap<String, LoggerLevel> {
        let state = self.lock();
        let mut all = state.named.clone();
        all.insert(ROOT.to_owned(), state.root.clone());
        all
    }

    /// A logger's effective level: its own, else its nearest ancestor's, else root's.
    pub fn get(&self, name: &str) -> Result<LoggerLevel, LoggersError> {
        if name == ROOT {
            return Ok(self.lock().root.clone());
        }
        if !valid_name(name) {
            return Err(LoggersError::BadName(name.to_owned()));
        }
        let state = self.lock();
        if let Some(own) = state.named.get(name) {
            return Ok(own.clone());
        }
        let inherited = state
            .named
            .iter()
            .filter(|(parent, _)| is_under(name, parent))
            .max_by_key(|(parent, _)| parent.len())
            .map_or(&state.root, |(_, level)| level);
        Ok(LoggerLevel {
            level: inherited.level.clone(),
            last_modified: None,
        })
    }

    /// Sets `name` and every logger below it to `level`; returns the loggers changed.
    pub fn set(&self, name: &str, level: &str) -> Result<Vec<String>, LoggersError> {
        let level = canonical(level).ok_or_else(|| LoggersError::BadLevel(level.to_owned()))?;
        if name != ROOT && !valid_name(name) {
            return Err(LoggersError::BadName(name.to_owned()));
        }
        let mut state = self.lock();
        let stamp = LoggerLevel {
            level: level.to_owned(),
            last_modified: Some(now_ms()),
        };
        let mut next = state.named.clone();
        let mut root = state.root.clone();
        let mut changed = Vec::new();
        if name == ROOT {
            root = stamp.clone();
            changed.push(ROOT.to_owned());
        } else {
            next.insert(name.to_owned(), stamp.clone());
        }
        for (logger, value) in &mut next {
            if name == ROOT || is_under(logger, name) {
                *value = stamp.clone();
                changed.push(logger.clone());
            }
        }
        let directives = directives(&root, &next, &state.extra);
        (self.apply)(&directives).map_err(LoggersError::Apply)?;
        tracing::info!(
            logger = name,
            level,
            changed = changed.len(),
            "log level changed"
        );
        state.root = root;
        state.named = next;
        changed.sort();
        Ok(changed)
    }
}

/// The `EnvFilter` directives for these levels.
fn directives(
    root: &LoggerLevel,
    named: &BTreeMap<String, LoggerLevel>,
    extra: &[String],
) -> String {
    let mut out = vec![root.level.to_ascii_lowercase()];
    out.extend(
        named
            .iter()
            .map(|(target, l)| format!("{target}={}", l.level.to_ascii_lowercase())),
    );
    out.extend(extra.iter().cloned());
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loggers(initial: &str) -> (Loggers, Arc<Mutex<Vec<String>>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&applied);
        let loggers = Loggers::new(
            initial,
            Box::new(move |d| {
                sink.lock().map_err(|e| e.to_string())?.push(d.to_owned());
                Ok(())
            }),
        );
        (loggers, applied)
    }

    #[test]
    fn start_up_levels_are_listed() {
        let (l, _) = loggers("warn,sluice_engine::task::sink=debug,rdkafka[span]=trace");
        let all = l.all();
        assert_eq!(all["root"].level, "WARN");
        assert_eq!(all["sluice_engine::task::sink"].level, "DEBUG");
        assert_eq!(all["sluice_engine::task::sink"].last_modified, None);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn setting_a_logger_sets_those_below_it_and_applies_one_filter() {
        let (l, applied) = loggers("info,sluice_engine::task::sink=warn,sluice_proto=error");
        let changed = l.set("sluice_engine", "debug").unwrap();
        assert_eq!(changed, ["sluice_engine", "sluice_engine::task::sink"]);
        assert_eq!(l.get("sluice_engine::task::sink").unwrap().level, "DEBUG");
        assert_eq!(l.get("sluice_proto").unwrap().level, "ERROR");
        assert!(l.get("sluice_engine").unwrap().last_modified.is_some());
        // Inherited from the nearest ancestor with a level.
        assert_eq!(
            l.get("sluice_engine::herder::worker").unwrap().level,
            "DEBUG"
        );
        assert_eq!(l.get("other").unwrap().level, "INFO");
        assert_eq!(
            applied.lock().unwrap().last().unwrap(),
            "info,sluice_engine=debug,sluice_engine::task::sink=debug,sluice_proto=error"
        );
        let all = l.set("root", "FATAL").unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(l.get("sluice_proto").unwrap().level, "ERROR");
        assert_eq!(l.get("root").unwrap().level, "ERROR");
    }

    #[test]
    fn bad_levels_and_names_change_nothing() {
        let (l, applied) = loggers("info");
        assert_eq!(
            l.set("sluice_engine", "LOUD"),
            Err(LoggersError::BadLevel("LOUD".into()))
        );
        assert!(matches!(
            l.set("a,b=trace", "DEBUG"),
            Err(LoggersError::BadName(_))
        ));
        assert!(applied.lock().unwrap().is_empty());
        assert_eq!(l.all().len(), 1);
    }

    #[test]
    fn a_filter_that_does_not_apply_changes_nothing() {
        let l = Loggers::new("info", Box::new(|_| Err("no".into())));
        assert!(matches!(l.set("x", "DEBUG"), Err(LoggersError::Apply(_))));
        assert_eq!(l.get("x").unwrap().level, "INFO");
    }
}
