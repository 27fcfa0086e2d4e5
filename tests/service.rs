//! The service layer driven in-process, as another host or a test would:
//! typed results instead of the binary's stderr.

mod support;

use std::path::Path;
use std::time::Duration;
use weft::service::run::{run_kafka, KafkaRun};
use weft::service::scenario::Scenario;
use weft::service::ServiceError;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, KafkaOptions};

/// A chunking pipeline named `name` from `tenant.docs` to `tenant.<name>`.
fn chunker(dir: &Path, name: &str) -> std::path::PathBuf {
    support::write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\ntenant = \"svc\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n\
             [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\n\
             [sink]\ntopic = \"{name}-out\"\n",
            support::plugin("text-chunker").display()
        ),
    )
}

#[test]
fn two_pipelines_on_one_source_topic_run_side_by_side_and_report_typed_status() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let docs = support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"));
    let records: Vec<kafka::KeyValue> = docs
        .iter()
        .map(|d| {
            (
                d["id"].as_str().map(|s| s.as_bytes().to_vec()),
                Some(serde_json::to_vec(d).unwrap()),
            )
        })
        .collect();
    let h = support::host(dir.path());
    // Both read svc.docs: the topic set-up must name it once (a CreateTopics
    // request naming a topic twice fails with BadMessage).
    let pipelines = h
        .pipelines(&[chunker(dir.path(), "a"), chunker(dir.path(), "b")])
        .expect("pipelines");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka::ensure_topics(&brokers, &[("svc.docs".into(), 2)]))
        .unwrap();
    rt.block_on(kafka::produce_values(&brokers, "svc.docs", records))
        .unwrap();
    let run = KafkaRun {
        options: KafkaOptions {
            instance_id: None,
            assign: Default::default(),
            brokers: brokers.clone(),
            group: None,
            idle_exit: Some(Duration::from_secs(3)),
            state_dir: None,
        },
        partitions: 2,
        progress_every: None,
        stop_on_signals: false,
        grace: Duration::from_secs(30),
    };
    let status = run_kafka(pipelines, &run, |_| {}).expect("run");
    assert_eq!(status.len(), 2);
    for s in &status {
        assert_eq!(s.consumed, docs.len() as u64, "{s:?}");
        assert_eq!(s.dead_letters, 0, "{s:?}");
        assert!(
            s.produced >= docs.len() as u64,
            "every document has a chunk: {s:?}"
        );
        assert!(s.batches >= 1, "{s:?}");
    }
    assert_eq!(status[0].pipeline, "a");
    assert_eq!(status[1].pipeline, "b");
}

#[test]
fn a_scenario_naming_an_unknown_pipeline_is_refused_before_anything_starts() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    chunker(dir.path(), "a");
    let sc = support::write(
        dir.path(),
        "scenario.toml",
        "name = \"s\"\npipelines = [\"a.toml\"]\n[[step]]\nproduce = \"docs.jsonl\"\ninto = \"nope\"\n",
    );
    let scenario = Scenario::load(dir.path()).expect("it parses");
    assert_eq!(scenario.file, sc);
    let h = support::host(dir.path());
    let err = weft::service::scenario::run(
        &h,
        &scenario,
        Some("127.0.0.1:1".into()),
        dir.path(),
        &mut |_| {},
    )
    .expect_err("unknown pipeline");
    let msg = err.to_string();
    assert!(matches!(err, ServiceError::Input(_)), "{msg}");
    assert!(
        msg.contains("scenario.toml") && msg.contains("`nope`"),
        "{msg}"
    );
    // A step with both `produce` and `ask` is refused at load, naming the step.
    support::write(
        dir.path(),
        "scenario.toml",
        "name = \"s\"\npipelines = [\"a.toml\"]\n[[step]]\nproduce = \"d\"\nask = \"q\"\ninto = \"a\"\n",
    );
    let err = Scenario::load(dir.path()).expect_err("both");
    assert!(err.to_string().contains("step 1"), "{err}");
}
