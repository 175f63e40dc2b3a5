//! Logs and metrics set-up. Metrics are served natively in Prometheus format by the REST
//! listener (`GET /metrics`), with no second HTTP server and no JMX exporter; every metric
//! is listed in `engine/METRICS.md` ([`catalog`]). Logs go to stderr as text or JSON
//! (`log.format`), and their levels change at runtime through `/admin/loggers`
//! ([`Loggers`]).

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub mod catalog;
mod live;
mod loggers;

pub use live::{live, Live};
pub use loggers::{LogFormat, LoggerLevel, Loggers, LoggersError};

/// Buckets for request-scale latencies, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for batch and transaction sizes, in records.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 50_000.0,
];

/// Installs the global Prometheus recorder and returns the handle that renders it.
/// `_seconds` histograms get [`LATENCY_BUCKETS`], `_records` ones [`SIZE_BUCKETS`]: real
/// histograms, which aggregate across workers (summaries do not).
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_records".to_owned()), SIZE_BUCKETS)?
        .install_recorder()?;
    catalog::describe_all();
    Ok(handle)
}

/// What `GET /metrics` serves: the recorder's output without the series of connectors,
/// tasks and partitions no longer here.
pub fn render(handle: &PrometheusHandle) -> String {
    live().filter(&handle.render())
}
