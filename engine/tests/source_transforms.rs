//! Single message transforms on the source path, against the real broker: records are
//! reshaped, re-routed, tagged and filtered before conversion, and filtered records'
//! offsets still commit (a restart does not read them again).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Numbers, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name, Isolation};

#[tokio::test(flavor = "multi_thread")]
async fn transforms_reshape_route_tag_and_filter_source_records() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "smt-in", 10, 100).await?;
    let routed = stack.create_topic("smt-out", 1).await?;
    let connector = numbers.dir.write(
        "transforms.properties",
        &format!(
            "{}transforms=hoist,route,tag,dropTen\n\
             transforms.hoist.type=org.apache.kafka.connect.transforms.HoistField$Value\n\
             transforms.hoist.field=line\n\
             transforms.route.type=org.apache.kafka.connect.transforms.RegexRouter\n\
             transforms.route.regex=.*\n\
             transforms.route.replacement={routed}\n\
             transforms.tag.type=org.apache.kafka.connect.transforms.InsertHeader\n\
             transforms.tag.header=source\n\
             transforms.tag.value.literal=file\n\
             transforms.dropTen.type=org.apache.kafka.connect.transforms.Filter\n\
             transforms.dropTen.predicate=never\n\
             transforms.dropTen.negate=true\n\
             predicates=never\n\
             predicates.never.type=org.apache.kafka.connect.transforms.predicates.TopicNameMatches\n\
             predicates.never.pattern=no-such-topic\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter.schemas.enable=false\n",
            std::fs::read_to_string(&numbers.connector)?
                .replace("value.converter=org.apache.kafka.connect.storage.StringConverter\n", "")
        ),
    )?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "w.properties",
        port,
        &unique_name("smt"),
        &unique_name("smt-offsets"),
        "",
    )?;
    let mut w =
        WorkerProcess::standalone(&worker, &[&connector], port, numbers.dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    // dropTen's predicate never matches and is negated: the filter drops everything, so
    // nothing reaches the routed topic, yet the offsets advance past all ten lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let offsets = loop {
        let (_, body) = w.get_json("/connectors/numbers/offsets")?;
        if body["offsets"][0]["offset"]["position"] == serde_json::json!(21)
            || std::time::Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        offsets["offsets"][0]["offset"]["position"],
        serde_json::json!(21),
        "{offsets}"
    );
    assert!(stack
        .read_topic(&routed, Isolation::ReadCommitted, Duration::from_secs(10))?
        .is_empty());
    w.terminate(Duration::from_secs(30))?;

    // Without the filter: reshaped, routed and tagged.
    let connector2 = numbers.dir.write(
        "transforms2.properties",
        &std::fs::read_to_string(&connector)?
            .replace("name=numbers", "name=numbers2")
            .replace(
                "transforms=hoist,route,tag,dropTen",
                "transforms=hoist,route,tag",
            ),
    )?;
    let mut w =
        WorkerProcess::standalone(&worker, &[&connector2], port, numbers.dir.0.join("w2.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while records.len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        records = stack.read_topic(&routed, Isolation::ReadCommitted, Duration::from_secs(10))?;
    }
    w.terminate(Duration::from_secs(30))?;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("{{\"line\":\"{i}\"}}")).collect();
    assert_eq!(values, expected);
    for r in &records {
        assert_eq!(
            r.headers,
            vec![("source".to_owned(), Some(b"file".to_vec()))]
        );
    }
    Ok(())
}
