//! REST contract tests, in-process (no socket) against a real worker on the real broker:
//! Kafka Connect's paths, bodies, status codes and error shape, bad inputs included, and
//! the OpenAPI document checked against the routes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::Actor as _;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use anyhow::Result;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use sluice_engine::config::worker::{Mode, WorkerConfig};
use sluice_engine::herder::worker::Worker;
use sluice_engine::herder::Standalone;
use sluice_engine::kafka::router::PartitionRouter;
use sluice_engine::rest::{self, RestState, ServerInfo};
use sluice_engine::storage::offsets::{ensure_compacted_topic, OffsetStore};
use sluice_engine::telemetry::Loggers;
use sluice_testkit::{stack, unique_name, Stack};

// The recorder installs once per process; a test cannot run without it.
#[allow(clippy::expect_used)]
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| sluice_engine::telemetry::install_metrics().expect("recorder"))
        .clone()
}

async fn worker(stack: &Stack) -> Result<Worker> {
    let offsets_topic = unique_name("rest-offsets");
    let props: BTreeMap<String, String> = [
        ("bootstrap.servers", stack.kafka_bootstrap.as_str()),
        ("group.id", &unique_name("rest")),
        ("offset.storage.topic", &offsets_topic),
        ("exactly.once.source.support", "enabled"),
        ("producer.broker.address.family", "v4"),
        ("consumer.broker.address.family", "v4"),
        ("admin.broker.address.family", "v4"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let config = Arc::new(WorkerConfig::parse(&props, Mode::Standalone)?);
    ensure_compacted_topic(&config.kafka_client_props("admin."), &offsets_topic, 1, 1).await?;
    let offsets = OffsetStore::new(offsets_topic, 1, config.kafka_client_props("consumer."));
    let router = PartitionRouter::new(config.kafka_client_props("producer.")).start();
    Ok(Worker::new(config, router, offsets))
}

fn state(worker: Option<Worker>) -> RestState {
    let herder = Standalone::new(Arc::new(Loggers::new("info", Box::new(|_| Ok(())))));
    if let Some(worker) = worker {
        herder.ready(worker);
    }
    let handle = metrics();
    RestState::new(
        ServerInfo::new("test-cluster".into()),
        Arc::new(move || sluice_engine::telemetry::render(&handle)),
        Arc::new(herder),
    )
}

/// Sends a request to the in-process app and returns (status, JSON body or text or null).
macro_rules! call {
    ($app:expr, $method:ident, $uri:expr) => {{
        respond(
            test::call_service(&$app, test::TestRequest::$method().uri($uri).to_request()).await,
        )
        .await
    }};
    ($app:expr, $method:ident, $uri:expr, $body:expr) => {{
        let request = test::TestRequest::$method()
            .uri($uri)
            .insert_header(("Content-Type", "application/json"))
            .set_payload($body.to_string())
            .to_request();
        respond(test::call_service(&$app, request).await).await
    }};
}

async fn respond(response: actix_web::dev::ServiceResponse) -> (StatusCode, Value) {
    let status = response.status();
    let body = test::read_body(response).await;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    (status, json)
}

fn assert_error(status: StatusCode, body: &Value, code: u16, fragment: &str) {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(fragment),
        "{message:?} should mention {fragment:?}"
    );
}

#[actix_web::test]
async fn openapi_document_and_routes_agree() -> Result<()> {
    let doc: Value = serde_json::from_str(include_str!("../openapi.json"))?;
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for method in ops
            .as_object()
            .into_iter()
            .flatten()
            .map(|(m, _)| m.to_uppercase())
        {
            documented.insert((method, path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = rest::routes()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented, served, "openapi.json and the routes differ");

    // Every route is mounted: none falls through to the unmatched 404 or answers 405.
    let app = test::init_service(App::new().configure(rest::configure(state(None)))).await;
    for (method, path) in &served {
        let uri = path
            .replace("{connector}", "nope")
            .replace("{task}", "0")
            .replace("{plugin}", "FileStreamSource")
            .replace("{logger}", "root");
        let request = match method.as_str() {
            "GET" => test::TestRequest::get(),
            "POST" => test::TestRequest::post(),
            "PUT" => test::TestRequest::put(),
            "PATCH" => test::TestRequest::patch(),
            "DELETE" => test::TestRequest::delete(),
            other => panic!("method {other}"),
        }
        .uri(&uri)
        .set_payload("{}")
        .to_request();
        let response = test::call_service(&app, request).await;
        let status = response.status();
        let body = String::from_utf8_lossy(&test::read_body(response).await).into_owned();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(
            !body.contains("HTTP 404 Not Found"),
            "{method} {uri} is not routed: {body}"
        );
    }
    Ok(())
}

/// Polls a status URI until task 0 is in `want` (or 30 s pass) and returns the last body.
macro_rules! wait_status {
    ($app:expr, $uri:expr, $want:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = call!($app, get, $uri);
            if body["tasks"][0]["state"] == $want || Instant::now() > deadline {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

#[actix_web::test]
async fn connector_lifecycle_over_rest_with_bad_inputs_refused() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let app =
        test::init_service(App::new().configure(rest::configure(state(Some(worker.clone())))))
            .await;
    let dir = common::TempDir::new("rest")?;
    let input = dir.write("input.txt", "one\ntwo\nthree\n")?;
    let topic = stack.create_topic("rest", 1).await?;
    let file = input.display().to_string();
    let good = json!({
        "name": "src",
        "config": {
            "connector.class": "FileStreamSource",
            "tasks.max": 1,
            "file": file,
            "topic": topic,
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "producer.override.ssl.key.password": "s3cret"
        }
    });

    // Bad inputs: 4xx naming the field, nothing created.
    let (s, b) = call!(app, post, "/connectors", "{\"name\": ");
    assert_error(s, &b, 400, "not valid JSON");
    let (s, b) = call!(app, post, "/connectors", json!({"config": {}}));
    assert_error(s, &b, 400, "name");
    let mut bad = good.clone();
    bad["config"]["connector.class"] = json!("com.example.Nope");
    let (s, b) = call!(app, post, "/connectors", bad);
    assert_error(s, &b, 400, "connector.class");
    let mut bad = good.clone();
    bad["config"].as_object_mut().map(|c| c.remove("file"));
    let (s, b) = call!(app, post, "/connectors", bad);
    assert_error(s, &b, 400, "file");
    let mut bad = good.clone();
    bad["config"]["tasks.max"] = json!(0);
    let (s, b) = call!(app, post, "/connectors", bad);
    assert_error(s, &b, 400, "tasks.max");
    let mut bad = good.clone();
    bad["name"] = json!("a/b");
    let (s, b) = call!(app, post, "/connectors", bad);
    assert_error(s, &b, 400, "name");
    let (s, b) = call!(
        app,
        post,
        "/connectors",
        json!({"name": "x", "config": {}, "initial_state": "SLEEPING"})
    );
    assert_error(s, &b, 400, "initial_state");
    let (s, b) = call!(app, get, "/connectors");
    assert_eq!((s, b), (StatusCode::OK, json!([])));

    // Create.
    let (s, b) = call!(app, post, "/connectors", good);
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "src");
    assert_eq!(b["type"], "source");
    assert_eq!(b["tasks"], json!([{"connector": "src", "task": 0}]));
    assert_eq!(
        b["config"]["producer.override.ssl.key.password"], "[hidden]",
        "secrets are masked"
    );
    let (s, b) = call!(app, post, "/connectors", good);
    assert_error(s, &b, 409, "already exists");

    // Read.
    let (_, b) = call!(app, get, "/connectors");
    assert_eq!(b, json!(["src"]));
    let (_, b) = call!(app, get, "/connectors?expand=status&expand=info");
    assert_eq!(b["src"]["info"]["name"], "src");
    assert_eq!(b["src"]["status"]["connector"]["state"], "RUNNING");
    let (s, b) = call!(app, get, "/connectors?expand=everything");
    assert_error(s, &b, 400, "expand");
    let (_, b) = call!(app, get, "/connectors/src/config");
    assert_eq!(b["file"], json!(file));
    assert_eq!(b["producer.override.ssl.key.password"], "[hidden]");
    let b = wait_status!(app, "/connectors/src/status", "RUNNING");
    assert_eq!(b["tasks"][0]["state"], "RUNNING", "{b}");
    let (_, b) = call!(app, get, "/connectors/src/tasks");
    assert_eq!(b[0]["id"], json!({"connector": "src", "task": 0}));
    assert_eq!(
        b[0]["config"]["producer.override.ssl.key.password"],
        "[hidden]"
    );
    let (s, _) = call!(app, get, "/connectors/src/tasks/0/status");
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call!(app, get, "/connectors/src/tasks/9/status");
    assert_error(s, &b, 404, "Task 9");
    let (s, b) = call!(app, get, "/connectors/nope");
    assert_error(s, &b, 404, "Connector nope not found");

    // Records flow; offsets and topics show it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut offsets = Value::Null;
    while Instant::now() < deadline {
        offsets = call!(app, get, "/connectors/src/offsets").1;
        if offsets["offsets"][0]["offset"]["position"] == json!(14) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status_now) = call!(app, get, "/connectors/src/status");
    assert_eq!(
        offsets["offsets"][0]["partition"],
        json!({"filename": file}),
        "{offsets} {status_now}"
    );
    assert_eq!(
        offsets["offsets"][0]["offset"],
        json!({"position": 14}),
        "{offsets}"
    );
    let (_, b) = call!(app, get, "/connectors/src/topics");
    assert_eq!(b, json!({"src": {"topics": [topic]}}));
    let (s, _) = call!(app, put, "/connectors/src/topics/reset");
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, b) = call!(app, get, "/connectors/src/topics");
    assert_eq!(b, json!({"src": {"topics": []}}));

    // Offsets can only change when STOPPED.
    let patch = json!({"offsets": [{"partition": {"filename": file}, "offset": {"position": 4}}]});
    let (s, b) = call!(app, patch, "/connectors/src/offsets", patch);
    assert_error(s, &b, 400, "STOPPED");

    // Pause, resume, stop.
    let (s, _) = call!(app, put, "/connectors/src/pause");
    assert_eq!(s, StatusCode::ACCEPTED);
    let b = wait_status!(app, "/connectors/src/status", "PAUSED");
    assert_eq!(b["connector"]["state"], "PAUSED");
    assert_eq!(b["tasks"][0]["state"], "PAUSED", "{b}");
    let (s, _) = call!(app, put, "/connectors/src/resume");
    assert_eq!(s, StatusCode::ACCEPTED);
    let b = wait_status!(app, "/connectors/src/status", "RUNNING");
    assert_eq!(b["connector"]["state"], "RUNNING");
    let (s, _) = call!(app, put, "/connectors/src/stop/");
    assert_eq!(s, StatusCode::ACCEPTED, "a trailing slash is tolerated");
    let (_, b) = call!(app, get, "/connectors/src/status");
    assert_eq!(b["connector"]["state"], "STOPPED");
    assert_eq!(b["tasks"], json!([]));

    let (s, b) = call!(
        app,
        patch,
        "/connectors/src/offsets",
        json!({"offsets": [{"partition": 3}]})
    );
    assert_error(s, &b, 400, "offsets[0].partition");
    let (s, b) = call!(app, patch, "/connectors/src/offsets", patch);
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = call!(app, get, "/connectors/src/offsets");
    assert_eq!(b["offsets"][0]["offset"], json!({"position": 4}), "{b}");
    let (s, _) = call!(app, delete, "/connectors/src/offsets");
    assert_eq!(s, StatusCode::OK);
    let (_, b) = call!(app, get, "/connectors/src/offsets");
    assert_eq!(b, json!({"offsets": []}));

    // Config changes: a bad one changes nothing; a good one applies.
    let (s, b) = call!(
        app,
        put,
        "/connectors/src/config",
        json!({"connector.class": "FileStreamSource", "topic": topic})
    );
    assert_error(s, &b, 400, "file");
    let (_, b) = call!(app, get, "/connectors/src/config");
    assert_eq!(b["file"], json!(file), "the bad PUT changed the config");
    let (s, b) = call!(
        app,
        patch,
        "/connectors/src/config",
        json!({"batch.size": "10"})
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["config"]["batch.size"], "10");
    let (_, b) = call!(app, get, "/connectors/src/status");
    assert_eq!(
        b["connector"]["state"], "STOPPED",
        "a config change keeps the target state"
    );

    // Restart and delete.
    let (s, b) = call!(app, post, "/connectors/src/restart?includeTasks=maybe");
    assert_error(s, &b, 400, "includeTasks");
    let (s, _) = call!(app, post, "/connectors/src/restart");
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call!(app, delete, "/connectors/src");
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = call!(app, get, "/connectors/src");
    assert_error(s, &b, 404, "not found");
    let (s, b) = call!(app, delete, "/connectors/src");
    assert_error(s, &b, 404, "not found");
    Ok(())
}

#[actix_web::test]
async fn plugins_are_listed_described_and_validate_configs() -> Result<()> {
    let app = test::init_service(App::new().configure(rest::configure(state(None)))).await;
    let (s, b) = call!(app, get, "/connector-plugins");
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b[0]["class"],
        "org.apache.kafka.connect.file.FileStreamSourceConnector"
    );
    assert_eq!(b[0]["type"], "source");
    let (_, b) = call!(app, get, "/connector-plugins?connectorsOnly=false");
    assert!(
        b.as_array()
            .is_some_and(|a| a.iter().any(|p| p["type"] == "converter")),
        "{b}"
    );
    let (_, b) = call!(app, get, "/connector-plugins/FileStreamSource/config");
    let names: Vec<&str> = b
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["file", "topic", "batch.size"]);
    let (s, b) = call!(app, get, "/connector-plugins/Nope/config");
    assert_error(s, &b, 404, "Unknown plugin");

    let (s, b) = call!(
        app,
        put,
        "/connector-plugins/FileStreamSource/config/validate",
        json!({"connector.class": "FileStreamSource", "name": "x", "file": "/tmp/x", "tasks.max": "0"})
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["error_count"], 2, "tasks.max and topic: {b}");
    let errors: BTreeMap<String, Value> = b["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["value"]["name"].as_str().unwrap_or_default().to_owned(),
                c["value"]["errors"].clone(),
            )
        })
        .collect();
    assert!(errors["topic"].to_string().contains("topic"), "{errors:?}");
    assert!(
        errors["tasks.max"].to_string().contains("at least 1"),
        "{errors:?}"
    );
    assert_eq!(errors["file"], json!([]));
    let (s, b) = call!(
        app,
        put,
        "/connector-plugins/FileStreamSource/config/validate",
        json!({"connector.class": "Other"})
    );
    assert_error(s, &b, 400, "connector.class");
    Ok(())
}

/// A refused config update changes nothing (the running connector stays, with its old
/// config and state), and a GET-then-PUT round trip keeps every secret.
#[actix_web::test]
async fn refused_updates_change_nothing_and_secrets_survive_a_round_trip() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let app =
        test::init_service(App::new().configure(rest::configure(state(Some(worker.clone())))))
            .await;
    let dir = common::TempDir::new("rest-update")?;
    let input = dir.write("input.txt", "one\n")?;
    let topic = stack.create_topic("rest-update", 1).await?;
    let config = json!({
        "connector.class": "FileStreamSource",
        "file": input.display().to_string(),
        "topic": topic,
        "producer.override.ssl.key.password": "s3cret"
    });
    let (s, b) = call!(
        app,
        post,
        "/connectors",
        json!({"name": "upd", "config": config})
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let b = wait_status!(app, "/connectors/upd/status", "RUNNING");
    assert_eq!(b["tasks"][0]["state"], "RUNNING", "{b}");

    // Each of these passes the connector's own checks and fails later ones.
    for (key, value, fault) in [
        ("value.converter", "com.nope.Converter", "value.converter"),
        ("key.converter", "com.nope.Converter", "key.converter"),
    ] {
        let mut bad = config.clone();
        bad[key] = json!(value);
        let (s, b) = call!(app, put, "/connectors/upd/config", bad);
        assert_error(s, &b, 400, fault);
        let (s, b) = call!(app, get, "/connectors");
        assert_eq!(
            (s, b.clone()),
            (StatusCode::OK, json!(["upd"])),
            "a refused PUT ({key}) removed the connector"
        );
        let (_, b) = call!(app, get, "/connectors/upd/config");
        assert_eq!(
            b["topic"],
            json!(topic),
            "a refused PUT ({key}) changed the config"
        );
        let (_, b) = call!(app, get, "/connectors/upd/status");
        assert_eq!(b["connector"]["state"], "RUNNING", "{b}");
    }

    // GET then PUT of what GET gave: the secret stays what it was.
    let (_, shown) = call!(app, get, "/connectors/upd/config");
    assert_eq!(shown["producer.override.ssl.key.password"], "[hidden]");
    let (s, b) = call!(app, put, "/connectors/upd/config", shown);
    assert_eq!(s, StatusCode::OK, "{b}");
    let stored = worker.connector("upd")?;
    assert_eq!(
        stored
            .config
            .get("producer.override.ssl.key.password")
            .map(String::as_str),
        Some("s3cret"),
        "a GET-then-PUT replaced the secret with the mask"
    );
    assert_eq!(
        stored.raw_task_configs[0]
            .get("producer.override.ssl.key.password")
            .map(String::as_str),
        Some("s3cret"),
        "the task config holds the mask"
    );
    // The same through PATCH, and a new secret still replaces the old one.
    let (s, b) = call!(
        app,
        patch,
        "/connectors/upd/config",
        json!({"producer.override.ssl.key.password": "[hidden]", "batch.size": "7"})
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        worker.connector("upd")?.config["producer.override.ssl.key.password"],
        "s3cret"
    );
    let (s, b) = call!(
        app,
        patch,
        "/connectors/upd/config",
        json!({"producer.override.ssl.key.password": "n3w"})
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        worker.connector("upd")?.config["producer.override.ssl.key.password"],
        "n3w"
    );
    let (s, _) = call!(app, delete, "/connectors/upd");
    assert_eq!(s, StatusCode::NO_CONTENT);
    Ok(())
}

/// Names that no URL can reach afterwards are refused at creation.
#[actix_web::test]
async fn names_no_url_can_carry_are_refused() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let app =
        test::init_service(App::new().configure(rest::configure(state(Some(worker.clone())))))
            .await;
    let long = "n".repeat(100_000);
    for name in [".", "..", long.as_str()] {
        let body = json!({"name": name, "config": {
            "connector.class": "FileStreamSource", "file": "/etc/hostname", "topic": "t"}});
        let (s, b) = call!(app, post, "/connectors", body);
        assert_error(s, &b, 400, "name");
    }
    let (_, b) = call!(app, get, "/connectors");
    assert_eq!(b, json!([]));
    Ok(())
}

/// When Kafka does not take the write to the config topic, a request answers 503 naming
/// why (not 500), and nothing is created.
#[actix_web::test]
async fn a_config_write_kafka_does_not_take_answers_503_and_changes_nothing() -> Result<()> {
    let stack = stack()?;
    let admin: BTreeMap<String, String> = [
        ("bootstrap.servers", stack.kafka_bootstrap.as_str()),
        ("broker.address.family", "v4"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // The topic exists; its writer reaches no broker (as when the broker is paused).
    let unreachable: BTreeMap<String, String> = [
        ("bootstrap.servers", "127.0.0.1:1"),
        ("broker.address.family", "v4"),
        ("message.timeout.ms", "2000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let store = sluice_engine::storage::configs::ConfigStore::open(
        unique_name("rest-configs"),
        &admin,
        1,
        unreachable.clone(),
        unreachable,
    )
    .await?;
    let worker = worker(stack).await?.with_store(store);
    let app =
        test::init_service(App::new().configure(rest::configure(state(Some(worker.clone())))))
            .await;
    let topic = stack.create_topic("rest-503", 1).await?;
    let (s, b) = call!(
        app,
        post,
        "/connectors",
        json!({"name": "unstored", "config": {
            "connector.class": "FileStreamSource", "file": "/etc/hostname", "topic": topic}})
    );
    assert_error(s, &b, 503, "could not store connector unstored");
    let (_, b) = call!(app, get, "/connectors");
    assert_eq!(b, json!([]));
    Ok(())
}

/// `topic.tracking.enable=false` and `topic.tracking.allow.reset=false` answer as Kafka
/// Connect does: 403 with its messages, before anything is asked of the herder.
#[actix_web::test]
async fn disabled_topic_tracking_or_reset_answers_403() -> Result<()> {
    let off = state(None).with_topic_tracking(false, true);
    let app = test::init_service(App::new().configure(rest::configure(off))).await;
    let (s, b) = call!(app, get, "/connectors/src/topics");
    assert_error(s, &b, 403, "Topic tracking is disabled.");
    let (s, b) = call!(app, put, "/connectors/src/topics/reset");
    assert_error(s, &b, 403, "Topic tracking is disabled.");

    let no_reset = state(None).with_topic_tracking(true, false);
    let app = test::init_service(App::new().configure(rest::configure(no_reset))).await;
    let (s, b) = call!(app, put, "/connectors/src/topics/reset");
    assert_error(s, &b, 403, "Topic tracking reset is disabled.");
    // Reads are allowed (this worker is still starting: 503, not 403).
    let (s, _) = call!(app, get, "/connectors/src/topics");
    assert_eq!(s.as_u16(), 503);
    Ok(())
}
