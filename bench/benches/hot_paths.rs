//! Criterion micro-benchmarks of the per-record hot paths: the JSON converter (a syslog
//! message with its schema, both directions), Kafka's murmur2 partitioner, and syslog
//! framing and parsing (RFC 5424 and RFC 3164). `cargo bench -p sluice-bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_connector_syslog::parse::{parse, Frame, Framer};
use sluice_connector_syslog::source::value_schema;
use sluice_engine::convert::{Converter, JsonConverter, Part};
use sluice_engine::kafka::partitioner::{murmur2, partition_for_key};
use sluice_proto::Value;

const RFC5424: &str = "<134>1 2026-11-25T10:00:00.000Z bench-host bench-app 4242 MSG [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] benchmark message number 000000000042 with some padding text";
const RFC3164: &str =
    "<4>Nov 25 10:00:00 vagrant-ubuntu-trusty-64 kernel: [16583.344413] Hardware name: innotek GmbH VirtualBox";

fn message_value() -> Value {
    let text = |s: &str| Value::String(s.to_owned());
    Value::Struct(vec![
        ("date".into(), Value::Int64(1_795_600_000_000)),
        ("facility".into(), Value::Int32(16)),
        ("level".into(), Value::Int32(6)),
        ("host".into(), text("bench-host")),
        ("hostname".into(), text("localhost")),
        ("remote_address".into(), text("localhost/127.0.0.1:51631")),
        ("charset".into(), text("UTF-8")),
        (
            "message".into(),
            text("benchmark message number 000000000042 with some padding text"),
        ),
        ("version".into(), Value::Int32(1)),
        ("app_name".into(), text("bench-app")),
        ("process_id".into(), text("4242")),
        ("message_id".into(), text("MSG")),
        ("structured_data".into(), Value::Null),
        ("parse_error".into(), Value::Null),
    ])
}

fn json_converter(c: &mut Criterion) {
    let schema = std::sync::Arc::new(value_schema());
    let value = message_value();
    let mut group = c.benchmark_group("json_converter");
    group.throughput(Throughput::Elements(1));
    for schemas in [true, false] {
        let converter = JsonConverter::new(Part::Value, schemas);
        let bytes = converter
            .to_kafka("syslog-tcp", Some(&schema), &value)
            .ok()
            .flatten()
            .unwrap_or_default();
        let name = if schemas { "envelope" } else { "schemaless" };
        group.bench_function(format!("to_kafka/{name}"), |b| {
            b.iter(|| {
                converter.to_kafka(black_box("syslog-tcp"), Some(&schema), black_box(&value))
            });
        });
        group.bench_function(format!("to_connect/{name}"), |b| {
            b.iter(|| converter.to_connect(black_box("syslog-tcp"), Some(black_box(&bytes))));
        });
    }
    group.finish();
}

fn partitioner(c: &mut Criterion) {
    let key = b"customer-000000042";
    let mut group = c.benchmark_group("partitioner");
    group.throughput(Throughput::Elements(1));
    group.bench_function("murmur2/18B", |b| b.iter(|| murmur2(black_box(key))));
    group.bench_function("partition_for_key/18B/12", |b| {
        b.iter(|| partition_for_key(black_box(key), black_box(12)));
    });
    group.finish();
}

/// When the benchmark's messages are received (2026-01-01T00:00:00Z, ms since the epoch).
const RECEIVED: i64 = 1_767_225_600_000;

fn syslog(c: &mut Criterion) {
    let mut group = c.benchmark_group("syslog");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse/rfc5424", |b| {
        b.iter(|| parse(black_box(RFC5424), RECEIVED));
    });
    group.bench_function("parse/rfc3164", |b| {
        b.iter(|| parse(black_box(RFC3164), RECEIVED));
    });
    // 1,000 newline-framed and octet-counted messages through the framer.
    let mut stream = Vec::new();
    for n in 0..1000 {
        if n % 2 == 0 {
            stream.extend_from_slice(RFC5424.as_bytes());
            stream.push(b'\n');
        } else {
            stream.extend_from_slice(format!("{} {RFC5424}", RFC5424.len()).as_bytes());
        }
    }
    group.throughput(Throughput::Elements(1000));
    group.bench_function("frame/1000", |b| {
        b.iter(|| {
            let mut framer = Framer::default();
            framer.push(black_box(&stream));
            let mut frames = 0;
            while let Some(frame) = framer.next_frame(8192) {
                let (Frame::Message(m) | Frame::Truncated(m)) = frame;
                frames += m.len();
            }
            frames
        });
    });
    group.finish();
}

criterion_group!(benches, json_converter, partitioner, syslog);
criterion_main!(benches);
