//! The file source: reads complete lines from a byte position, remembers the position
//! after each line as the record's source offset, and waits briefly when it is at the end.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, ExactlyOnceSupport, Props, Schema, SchemaType,
    SourceConnector, SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
    Value,
};
use tokio::io::{AsyncBufReadExt as _, AsyncSeekExt as _, BufReader};

use crate::config::{self, BATCH_SIZE, FILE, TOPIC};

/// Offset key holding the byte position, as Kafka Connect's file source names it.
pub const POSITION: &str = "position";
/// Partition key holding the file name, as Kafka Connect's file source names it.
pub const FILENAME: &str = "filename";

/// How long a poll at end of file waits for more lines before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// The connector: one task per file.
#[derive(Debug, Default)]
pub struct FileSource;

impl Connector for FileSource {
    fn config_def(&self) -> ConfigDef {
        config::source_def()
    }

    fn task_configs(&self, config: &Props, _max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        // One file is one stream: a second task would only duplicate it.
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for FileSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(FileSourceTask::default())
    }

    fn exactly_once_support(&self, _config: &Props) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Supported
    }
}

/// Reads one file.
#[derive(Debug, Default)]
pub struct FileSourceTask {
    state: Option<Open>,
}

#[derive(Debug)]
struct Open {
    path: String,
    topic: String,
    batch_size: usize,
    reader: BufReader<tokio::fs::File>,
    /// Byte position after the last complete line returned.
    position: u64,
    /// Bytes of a line whose newline has not been written yet.
    partial: Vec<u8>,
    partition: SourcePartition,
    schema: Arc<Schema>,
}

impl Open {
    async fn read_batch(&mut self) -> Result<Vec<SourceRecord>, ConnectorError> {
        let mut records = Vec::new();
        while records.len() < self.batch_size {
            let read = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .await
                .map_err(|e| {
                    ConnectorError::retriable(format!(
                        "reading {} at byte {}: {e}",
                        self.path, self.position
                    ))
                    .with_source(e)
                })?;
            if read == 0 || self.partial.last() != Some(&b'\n') {
                // End of file, possibly mid-line: keep the partial line for the next poll.
                break;
            }
            let line_start = self.position;
            self.position += self.partial.len() as u64;
            let mut line = std::mem::take(&mut self.partial);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let text = String::from_utf8(line).map_err(|e| {
                ConnectorError::data(format!(
                    "{}: the line at byte {line_start} is not UTF-8 (invalid byte at {})",
                    self.path,
                    line_start + e.utf8_error().valid_up_to() as u64
                ))
            })?;
            let mut record = SourceRecord::new(
                self.partition.clone(),
                SourceOffset::single(POSITION, self.position),
                self.topic.clone(),
                Value::String(text),
            );
            record.value_schema = Some(Arc::clone(&self.schema));
            records.push(record);
        }
        Ok(records)
    }
}

impl SourceTask for FileSourceTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let parsed = config::source_def()
                .parse(config)
                .map_err(|e| ConnectorError::config(e.to_string()))?;
            let path = parsed.string(FILE).unwrap_or_default().to_owned();
            let topic = parsed.string(TOPIC).unwrap_or_default().to_owned();
            let batch_size =
                usize::try_from(parsed.long(BATCH_SIZE).unwrap_or(2000)).unwrap_or(2000);
            let partition = SourcePartition::single(FILENAME, path.clone());
            let position = match context.offset(&partition) {
                None => 0,
                Some(offset) => offset
                    .get(POSITION)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        ConnectorError::data(format!(
                            "committed offset for {path} has no numeric \"{POSITION}\": {:?}",
                            offset.0
                        ))
                    })?,
            };
            let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
                ConnectorError::retriable(format!("opening {path} (file): {e}")).with_source(e)
            })?;
            let length = file
                .metadata()
                .await
                .map_err(|e| ConnectorError::retriable(format!("stat {path}: {e}")))?
                .len();
            if position > length {
                return Err(ConnectorError::data(format!(
                    "{path} is {length} bytes long but the committed position is {position}: was it truncated or replaced?"
                )));
            }
            file.seek(std::io::SeekFrom::Start(position))
                .await
                .map_err(|e| {
                    ConnectorError::retriable(format!("seeking {path} to {position}: {e}"))
                })?;
            tracing::info!(
                connector = %context.connector,
                task = context.task,
                file = %path,
                position,
                "file source resuming"
            );
            self.state = Some(Open {
                path,
                topic,
                batch_size,
                reader: BufReader::with_capacity(256 * 1024, file),
                position,
                partial: Vec::new(),
                partition,
                schema: Arc::new(Schema::of(SchemaType::String)),
            });
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            let Some(open) = self.state.as_mut() else {
                return Err(ConnectorError::internal("file source polled before start"));
            };
            let records = open.read_batch().await?;
            if records.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
            }
            Ok(records)
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        self.state = None;
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write as _;

    fn temp_file(name: &str, body: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("sluice-file-source-{}-{name}", std::process::id()));
        std::fs::write(&path, body).unwrap();
        path
    }

    fn props(path: &std::path::Path, batch: &str) -> Props {
        BTreeMap::from([
            (FILE.to_owned(), path.display().to_string()),
            (TOPIC.to_owned(), "lines".to_owned()),
            (BATCH_SIZE.to_owned(), batch.to_owned()),
        ])
    }

    fn texts(records: &[SourceRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.value {
                Value::String(s) => s.clone(),
                other => panic!("not a string: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn reads_lines_in_batches_and_holds_back_a_partial_line() {
        let path = temp_file("batches", b"one\ntwo\r\nthree\nfou");
        let mut task = FileSourceTask::default();
        task.start(&props(&path, "2"), SourceTaskContext::default())
            .await
            .unwrap();
        let first = task.poll().await.unwrap();
        assert_eq!(texts(&first), ["one", "two"]);
        assert_eq!(first[1].source_offset, SourceOffset::single(POSITION, 9));
        assert_eq!(
            first[0].source_partition,
            SourcePartition::single(FILENAME, path.display().to_string())
        );
        assert_eq!(texts(&task.poll().await.unwrap()), ["three"]);
        assert!(task.poll().await.unwrap().is_empty());

        // The writer finishes the line: now it is returned, whole.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"r\nfive\n").unwrap();
        let rest = task.poll().await.unwrap();
        assert_eq!(texts(&rest), ["four", "five"]);
        assert_eq!(rest[1].source_offset, SourceOffset::single(POSITION, 25));
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn resumes_after_the_committed_position() {
        let path = temp_file("resume", b"a\nb\nc\n");
        let partition = SourcePartition::single(FILENAME, path.display().to_string());
        let mut context = SourceTaskContext::default();
        context
            .committed
            .insert(partition, SourceOffset::single(POSITION, 2));
        let mut task = FileSourceTask::default();
        task.start(&props(&path, "10"), context).await.unwrap();
        assert_eq!(texts(&task.poll().await.unwrap()), ["b", "c"]);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn bad_input_fails_visibly_with_its_position() {
        let path = temp_file("utf8", b"ok\nbad \xff here\n");
        let mut task = FileSourceTask::default();
        task.start(&props(&path, "10"), SourceTaskContext::default())
            .await
            .unwrap();
        let e = task.poll().await.unwrap_err();
        assert!(e.message.contains("line at byte 3"), "{e}");
        assert!(e.message.contains("invalid byte at 7"), "{e}");

        let mut context = SourceTaskContext::default();
        context.committed.insert(
            SourcePartition::single(FILENAME, path.display().to_string()),
            SourceOffset::single(POSITION, 10_000),
        );
        let e = FileSourceTask::default()
            .start(&props(&path, "10"), context)
            .await
            .unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");

        let e = FileSourceTask::default()
            .start(
                &BTreeMap::from([(FILE.to_owned(), "/x".to_owned())]),
                SourceTaskContext::default(),
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("topic"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
