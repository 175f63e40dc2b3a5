//! The file sink: appends each record's value as a line (`FileStreamSink`'s `file`,
//! `topics`). `pre_commit` fsyncs before reporting offsets, so the runtime only
//! commits what is on disk. A crash between a write and the commit replays those records:
//! the file sink is at-least-once, as Kafka Connect's is.

use std::collections::BTreeMap;

use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, Props, SinkConnector, SinkRecord, SinkTask,
    TopicPartition, Value,
};
use std::io::Write as _;
use std::sync::Arc;

use crate::config::{self, FILE};

/// The connector: like Kafka Connect's, `tasks.max` tasks append to the same file (whole
/// batches at a time, so lines never interleave).
#[derive(Debug, Default)]
pub struct FileSink;

impl Connector for FileSink {
    fn config_def(&self) -> ConfigDef {
        config::sink_def()
    }

    fn task_configs(&self, config: &Props, max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok((0..max_tasks.max(1)).map(|_| config.clone()).collect())
    }
}

impl SinkConnector for FileSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(FileSinkTask::default())
    }
}

/// Appends lines to one file.
#[derive(Debug, Default)]
pub struct FileSinkTask {
    path: String,
    file: Option<Arc<std::fs::File>>,
}

/// A record value as the line Kafka Connect's file sink writes: Java's `toString` of the
/// value (`{k=v, ...}` for maps, `[a, b]` for arrays, `Struct{f=v,...}` for structs); bytes
/// are written as UTF-8 text.
fn line(record: &SinkRecord) -> Result<String, ConnectorError> {
    match &record.value {
        Value::Bytes(b) => String::from_utf8(b.clone()).map_err(|e| {
            ConnectorError::data(format!(
                "{}[{}]@{}: bytes value is not UTF-8 at byte {}",
                record.topic,
                record.partition,
                record.offset,
                e.utf8_error().valid_up_to()
            ))
        }),
        other => Ok(java_string(other)),
    }
}

fn java_string(value: &Value) -> String {
    let join = |items: Vec<String>, sep: &str| items.join(sep);
    match value {
        Value::Null => "null".to_owned(),
        Value::String(s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Int8(n) => n.to_string(),
        Value::Int16(n) => n.to_string(),
        Value::Int32(n) => n.to_string(),
        Value::Int64(n) => n.to_string(),
        Value::Float32(n) => format!("{n:?}"),
        Value::Float64(n) => format!("{n:?}"),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Array(items) => format!("[{}]", join(items.iter().map(java_string).collect(), ", ")),
        Value::Map(entries) => format!(
            "{{{}}}",
            join(
                entries
                    .iter()
                    .map(|(k, v)| format!("{}={}", java_string(k), java_string(v)))
                    .collect(),
                ", "
            )
        ),
        Value::Struct(fields) => format!(
            "Struct{{{}}}",
            join(
                fields
                    .iter()
                    .filter(|(_, v)| *v != Value::Null)
                    .map(|(k, v)| format!("{k}={}", java_string(v)))
                    .collect(),
                ","
            )
        ),
    }
}

/// Runs a file call off the async threads.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

impl SinkTask for FileSinkTask {
    fn start<'a>(&'a mut self, config: &'a Props) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let parsed = config::sink_def()
                .parse(config)
                .map_err(|e| ConnectorError::config(e.to_string()))?;
            self.path = parsed.string(FILE).unwrap_or_default().to_owned();
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| {
                    ConnectorError::retriable(format!("opening {} (file): {e}", self.path))
                        .with_source(e)
                })?;
            self.file = Some(Arc::new(file.into_std().await));
            Ok(())
        })
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            // Every line is rendered before anything is written, so a bad record fails the
            // batch with nothing written (the runtime's contract for data errors), and the
            // batch goes out in one append: tasks sharing the file never split a line.
            let mut text = String::new();
            for r in &records {
                text.push_str(&line(r)?);
                text.push('\n');
            }
            let path = self.path.clone();
            let file = self
                .file
                .clone()
                .ok_or_else(|| ConnectorError::internal("file sink used before start"))?;
            // One write(2) on an O_APPEND file: appended whole, never interleaved.
            blocking(move || (&*file).write_all(text.as_bytes()))
                .await
                .map_err(|e| ConnectorError::retriable(format!("writing {path}: {e}")))
        })
    }

    fn pre_commit<'a>(
        &'a mut self,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        Box::pin(async move {
            if let Some(file) = self.file.clone() {
                // Durable before the offsets are: a power cut must not lose committed lines.
                blocking(move || file.sync_data()).await.map_err(|e| {
                    ConnectorError::retriable(format!("syncing {}: {e}", self.path))
                })?;
            }
            Ok(offsets.clone())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Nothing is buffered: closing is dropping.
            self.file = None;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::TimestampType;

    fn record(offset: i64, value: Value) -> SinkRecord {
        SinkRecord {
            topic: "lines".into(),
            partition: 0,
            offset,
            key_schema: None,
            key: Value::Null,
            value_schema: None,
            value,
            timestamp: None,
            timestamp_type: TimestampType::NoTimestamp,
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn appends_lines_and_reports_offsets_after_sync() {
        let path =
            std::env::temp_dir().join(format!("sluice-file-sink-{}.txt", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let config = BTreeMap::from([
            (FILE.to_owned(), path.display().to_string()),
            ("topics".to_owned(), "lines".to_owned()),
        ]);
        let mut task = FileSinkTask::default();
        task.start(&config).await.unwrap();
        task.put(vec![
            record(0, Value::String("one".into())),
            record(1, Value::Int64(2)),
        ])
        .await
        .unwrap();
        let offsets = BTreeMap::from([(
            TopicPartition {
                topic: "lines".into(),
                partition: 0,
            },
            2,
        )]);
        assert_eq!(task.pre_commit(&offsets).await.unwrap(), offsets);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n2\n");

        let e = task
            .put(vec![record(2, Value::Bytes(vec![b'o', 0xff]))])
            .await
            .unwrap_err();
        assert!(e.message.contains("lines[0]@2"), "{e}");
        task.stop().await;
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn values_print_as_java_would() {
        let map = Value::Map(vec![
            (Value::String("a".into()), Value::Int64(1)),
            (
                Value::String("b".into()),
                Value::Array(vec![Value::Float64(1.0), Value::Null]),
            ),
        ]);
        assert_eq!(java_string(&map), "{a=1, b=[1.0, null]}");
        let s = Value::Struct(vec![
            ("id".into(), Value::Int32(7)),
            ("gone".into(), Value::Null),
            ("name".into(), Value::String("x".into())),
        ]);
        assert_eq!(java_string(&s), "Struct{id=7,name=x}");
    }

    #[test]
    fn config_requires_a_file() {
        // `topics` is checked by the runtime, for every sink alike.
        let e = config::sink_def().parse(&BTreeMap::new()).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["file"]);
    }
}
