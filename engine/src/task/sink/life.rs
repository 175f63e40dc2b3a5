//! One life of a sink task in its async loop: batches converted and transformed, bad
//! records tolerated or failed, puts retried, the output written (a connector task, or
//! Kafka in a transaction with the consumer offsets), and offsets committed.

use super::*;
use crate::kafka::commit::{Side, Transaction};

/// The running writer of a task life.
pub(super) enum Writer {
    Task(Box<dyn SinkTask>),
    Kafka {
        producer: TaskProducer,
        group: Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>,
        txn: Transaction,
    },
}

/// One task life's state in the async loop.
pub(super) struct Life<'a> {
    pub(super) spec: &'a SinkTaskSpec,
    pub(super) labels: Labels,
    /// Where retries of a failed put are reported while they last.
    pub(super) health: TaskHealth,
    pub(super) writer: Writer,
    pub(super) commands: std_mpsc::Sender<Command>,
    pub(super) generation: u64,
    pub(super) assigned: BTreeSet<TopicPartition>,
    /// Next offset per partition, of everything delivered (written, filtered or sent to
    /// the dead-letter queue).
    pub(super) consumed: Offsets,
    /// What was committed, per partition.
    pub(super) commits: CommitBook,
    pub(super) dlq: Option<TaskProducer>,
}

/// A converted batch: the records to write, with their input, and the dead letters.
pub(super) type Prepared = (Vec<(Raw, Envelope)>, Vec<OutRecord>);

pub(super) fn stage_error(stage: &'static str, r: &Raw, message: String) -> SinkError {
    SinkError::Record {
        stage,
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        message,
    }
}

/// A tolerated bad record: counted, logged if asked, and its original bytes go to the
/// dead-letter queue (if set) with Kafka Connect's error context headers.
pub(super) fn tolerate(
    spec: &SinkTaskSpec,
    labels: &Labels,
    r: &Raw,
    stage: &str,
    error: &dyn std::fmt::Display,
) -> Option<OutRecord> {
    use crate::task::dead_letter::{self, Failure, Origin};
    dead_letter::tolerated(&spec.errors, labels, stage, error, r);
    let kind = if stage == "TASK_PUT" {
        "ConnectorError"
    } else {
        "SinkRecordError"
    };
    let failure = Failure {
        stage,
        kind,
        failing: None,
        message: error.to_string(),
    };
    let origin = Origin::Consumed {
        topic: &r.topic,
        partition: r.partition,
        offset: r.offset,
    };
    let body = (r.key.clone(), r.value.clone(), r.timestamp);
    dead_letter::build(
        &spec.errors,
        labels,
        failure,
        origin,
        body,
        r.headers.clone(),
    )
    .map(dead_letter::DeadLetter::into_record)
}

impl Life<'_> {
    /// Converts and transforms one record; `None` when a transform dropped it.
    pub(super) fn envelope(&self, r: &Raw) -> Result<Option<Envelope>, SinkError> {
        let spec = self.spec;
        let (key_schema, key) = spec
            .key_converter
            .to_connect(&r.topic, r.key.as_deref())
            .map_err(|e| stage_error("KEY_CONVERTER", r, e.to_string()))?;
        let (value_schema, value) = spec
            .value_converter
            .to_connect(&r.topic, r.value.as_deref())
            .map_err(|e| stage_error("VALUE_CONVERTER", r, e.to_string()))?;
        let envelope = Envelope {
            topic: r.topic.clone(),
            partition: Some(r.partition),
            offset: Some(r.offset),
            key_schema,
            key,
            value_schema,
            value,
            timestamp: r.timestamp,
            headers: r
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        if spec.transforms.is_empty() {
            return Ok(Some(envelope));
        }
        spec.transforms
            .apply(envelope)
            .map_err(|e| stage_error("TRANSFORMATION", r, e.to_string()))
    }

    /// Converts a batch; bad records are tolerated or fail the task.
    pub(super) fn prepare(&self, records: &[Raw]) -> Result<Prepared, SinkError> {
        let mut good = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for r in records {
            match self.envelope(r) {
                Ok(Some(e)) => good.push((r.clone(), e)),
                Ok(None) => {
                    metrics::counter!("sluice_sink_records_filtered_total", &self.labels.pairs())
                        .increment(1);
                }
                Err(e @ SinkError::Record { stage, .. }) if self.spec.errors.tolerate_all => {
                    dead.extend(tolerate(self.spec, &self.labels, r, stage, &e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, dead))
    }

    pub(super) async fn deliver(&mut self, records: Vec<Raw>) -> Result<(), SinkError> {
        let read = records.len() as u64;
        metrics::counter!("sluice_sink_records_read_total", &self.labels.pairs()).increment(read);
        let (good, dead) = self.prepare(&records)?;
        let sent = good.len() as u64;
        let started = Instant::now();
        match &mut self.writer {
            Writer::Task(task) => {
                let (raws, batch): (Vec<Raw>, Vec<SinkRecord>) = good
                    .into_iter()
                    .map(|(raw, e)| {
                        let record = SinkRecord {
                            topic: e.topic,
                            partition: e.partition.unwrap_or(raw.partition),
                            offset: raw.offset,
                            key_schema: e.key_schema,
                            key: e.key,
                            value_schema: e.value_schema,
                            value: e.value,
                            timestamp: e.timestamp,
                            timestamp_type: raw.timestamp_type,
                            headers: e.headers,
                        };
                        (raw, record)
                    })
                    .unzip();
                let mut dead = dead;
                match put_with_retry(
                    self.spec,
                    task.as_mut(),
                    batch.clone(),
                    &self.labels,
                    &self.health,
                )
                .await
                {
                    Ok(()) => {}
                    // Nothing of the batch was written (the put contract): find the bad
                    // records by putting them one at a time.
                    Err(SinkError::Connector(e))
                        if e.kind == ErrorKind::Data && self.spec.errors.tolerate_all =>
                    {
                        tracing::warn!(connector = %self.spec.connector, task = self.spec.task, records = batch.len(), error = %e, "put refused a record; isolating the bad ones");
                        for (raw, record) in raws.iter().zip(batch) {
                            match put_with_retry(
                                self.spec,
                                task.as_mut(),
                                vec![record],
                                &self.labels,
                                &self.health,
                            )
                            .await
                            {
                                Ok(()) => {}
                                Err(SinkError::Connector(e)) if e.kind == ErrorKind::Data => {
                                    dead.extend(tolerate(
                                        self.spec,
                                        &self.labels,
                                        raw,
                                        "TASK_PUT",
                                        &e,
                                    ));
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
                if !dead.is_empty() {
                    if let Some(dlq) = &self.dlq {
                        // Durable before the bad records' offsets can be committed.
                        let letters = dead.len() as u64;
                        let written = async {
                            dlq.send(dead).await?;
                            dlq.commit().await
                        }
                        .await;
                        if written.is_err() {
                            metrics::counter!(
                                "sluice_dlq_produce_failures_total",
                                &self.labels.pairs()
                            )
                            .increment(letters);
                        }
                        written?;
                    }
                }
            }
            Writer::Kafka { producer, txn, .. } => {
                let Output::Kafka {
                    rename,
                    preserve_partitions,
                    router,
                    ..
                } = &self.spec.output
                else {
                    return Ok(());
                };
                let mut out = Vec::with_capacity(good.len());
                for (raw, e) in good {
                    out.push(self.spec.to_kafka(raw, e, rename, *preserve_partitions)?);
                }
                let routed = router.send(Route(out)).await??;
                txn.begin(producer).await?;
                producer.send(routed).await?;
                if !dead.is_empty() {
                    // Same transaction: the dead letters are exactly-once too.
                    producer.send(dead).await?;
                }
                txn.add(read);
            }
        }
        for r in &records {
            self.consumed.insert(r.tp(), r.offset + 1);
        }
        metrics::histogram!("sluice_sink_put_batch_seconds", &self.labels.pairs())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("sluice_sink_records_sent_total", &self.labels.pairs()).increment(sent);
        Ok(())
    }

    /// Commits what is durable: asks the sink (`pre_commit`) and has the poller commit
    /// the answer; for the Kafka output, commits the open transaction with the offsets.
    /// Returns the offsets to commit through the group (empty for the Kafka output).
    /// All partitions are flushed together: a transaction's offsets must cover every record
    /// in it, and the eager protocol revokes everything at once anyway.
    ///
    /// `all` (a revoke or a stop) returns every durable offset, not only those not asked
    /// for yet: a commit asked for earlier may still be queued, and the poller drops it
    /// once the assignment changes.
    pub(super) async fn flush(&mut self, all: bool) -> Result<Offsets, SinkError> {
        let pending = self.commits.pending(&self.consumed);
        match &mut self.writer {
            Writer::Task(task) => {
                let consumed = self.consumed.clone();
                let durable = task.pre_commit(&consumed).await?;
                Ok(self
                    .commits
                    .request(durable, &self.assigned, &consumed, all))
            }
            Writer::Kafka {
                producer,
                group,
                txn,
            } => {
                if !txn.is_open() {
                    return Ok(Offsets::new());
                }
                let Some(group) = group.as_ref() else {
                    return Err(SinkError::Consumer(
                        "no consumer group metadata to commit offsets with".into(),
                    ));
                };
                let started = Instant::now();
                producer
                    .send_offsets(pending.clone(), Arc::clone(group))
                    .await?;
                producer.commit().await?;
                let (records, open_for) = txn.committed(Side::Sink, &self.labels, started);
                tracing::debug!(connector = %self.spec.connector, task = self.spec.task, records, open_ms = open_for.as_millis() as u64, "transaction committed with consumer offsets");
                self.commits.confirm(&pending);
                Ok(Offsets::new())
            }
        }
    }

    /// Periodic commit: flush, then hand the offsets to the poller.
    pub(super) async fn commit(&mut self, all: bool) -> Result<(), SinkError> {
        let offsets = self.flush(all).await?;
        if !offsets.is_empty() {
            let _ = self
                .commands
                .send(Command::Commit(self.generation, offsets));
        }
        Ok(())
    }

    pub(super) async fn handle(&mut self, event: Event) -> Result<(), SinkError> {
        match event {
            Event::Batch {
                generation,
                records,
            } => {
                let stale = generation != self.generation;
                let foreign = records.iter().any(|r| !self.assigned.contains(&r.tp()));
                if stale || foreign {
                    // Polled under an earlier assignment: not committed, so it is read
                    // again by whoever owns the partition now.
                    metrics::counter!(
                        "sluice_sink_records_dropped_stale_total",
                        &self.labels.pairs()
                    )
                    .increment(records.len() as u64);
                    return Ok(());
                }
                self.deliver(records).await
            }
            Event::Assigned {
                generation,
                partitions,
                reply,
            } => {
                self.generation = generation;
                let starts = match &mut self.writer {
                    Writer::Task(task) => task.open(&partitions).await?,
                    Writer::Kafka { .. } => {
                        Self::ensure_outputs(self.spec, &partitions).await?;
                        Offsets::new()
                    }
                };
                self.assigned.extend(partitions.iter().cloned());
                metrics::gauge!("sluice_sink_partition_count", &self.labels.pairs())
                    .set(self.assigned.len() as f64);
                let _ = reply.send(starts);
                Ok(())
            }
            Event::Group(group) => {
                if let Writer::Kafka { group: g, .. } = &mut self.writer {
                    *g = Some(Arc::new(group));
                }
                Ok(())
            }
            Event::Revoked {
                generation,
                partitions,
                reply,
            } => {
                self.generation = generation;
                let durable = self.flush(true).await;
                if let Writer::Task(task) = &mut self.writer {
                    task.close(&partitions).await?;
                }
                for tp in &partitions {
                    self.assigned.remove(tp);
                    self.consumed.remove(tp);
                    self.commits.forget(tp);
                }
                metrics::gauge!("sluice_sink_partition_count", &self.labels.pairs())
                    .set(self.assigned.len() as f64);
                let _ = reply.send(durable.as_ref().cloned().unwrap_or_default());
                durable.map(|_| ())
            }
            Event::Fatal(message) => Err(SinkError::Consumer(message)),
        }
    }

    /// Creates missing output topics with their input's partition count, so partitions can
    /// be preserved.
    pub(super) async fn ensure_outputs(
        spec: &SinkTaskSpec,
        partitions: &[TopicPartition],
    ) -> Result<(), SinkError> {
        let Output::Kafka { rename, .. } = &spec.output else {
            return Ok(());
        };
        let topics: BTreeSet<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        for topic in topics {
            let count = crate::storage::offsets::partition_count(
                &spec.consumer_props,
                topic,
                spec.kafka_timeout,
            )
            .await?;
            let target = rename.replace("${topic}", topic);
            crate::storage::offsets::ensure_topic(&spec.producer_props, &target, count, -1, false)
                .await?;
        }
        Ok(())
    }
}

/// Puts a batch; retriable failures are retried with backoff, while the poller keeps the
/// member in the group and pauses the partitions: within `errors.retry.timeout` when it is
/// set, else for as long as they last (Kafka Connect's `RetriableException` semantics).
/// Meanwhile `health` says the task is retrying; the first put that succeeds clears it.
pub(super) async fn put_with_retry(
    spec: &SinkTaskSpec,
    task: &mut dyn SinkTask,
    batch: Vec<SinkRecord>,
    labels: &Labels,
    health: &TaskHealth,
) -> Result<(), SinkError> {
    let mut attempt = 0;
    let mut first_failure: Option<Instant> = None;
    let bounded = spec.errors.retry_timeout != Some(Duration::ZERO);
    loop {
        match task.put(batch.clone()).await {
            Ok(()) => {
                health.recovered();
                return Ok(());
            }
            Err(e)
                if e.retriable
                    && (!bounded
                        || spec.errors.may_retry(
                            first_failure.get_or_insert_with(Instant::now).elapsed(),
                        )) =>
            {
                attempt += 1;
                let wait = spec.errors.retry_delay(attempt);
                metrics::counter!("sluice_task_retries_total", &labels.pairs()).increment(1);
                tracing::warn!(connector = %spec.connector, task = spec.task, attempt, backoff_ms = wait.as_millis() as u64, error = %e, "retriable put failure; retrying the batch");
                health.retrying(&e, attempt, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
