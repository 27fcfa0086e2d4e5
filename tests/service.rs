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

/// A pipeline whose broker never answers must not hold up another
/// pipeline on the same runtime. Each loop asks its broker for lag and
/// commits with blocking client calls (up to 2 s each when the broker is
/// silent); on an async worker they stalled every other loop scheduled
/// there (`weft serve` has one worker per core: the tenancy bench's crash
/// case measured a 10 s stall of the neighbour). One worker here, so any
/// blocking call on it shows as latency of the healthy pipeline.
#[test]
fn a_pipeline_waiting_on_a_silent_broker_does_not_stall_another_on_the_same_runtime() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    // A "broker" that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let manifest = |name: &str| {
        support::write(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\ntenant = \"svc\"\n[source]\ntopic = \"{name}-in\"\n[batch]\nlinger_ms = 5\n\
                 [[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = \"{}\"\n[sink]\ntopic = \"{name}-out\"\n",
                support::plugin("noop-transform").display()
            ),
        )
    };
    let h = support::host(dir.path());
    let mut ps = h
        .pipelines(&[manifest("healthy"), manifest("stuck")])
        .expect("pipelines");
    let stuck = ps.pop().unwrap();
    let healthy = ps.pop().unwrap();
    let clients = tokio::runtime::Runtime::new().unwrap();
    clients
        .block_on(kafka::ensure_topics(
            &brokers,
            &[("svc.healthy-in".into(), 1), ("svc.healthy-out".into(), 1)],
        ))
        .unwrap();
    let mut arrivals = {
        let _in = clients.enter();
        kafka::follow_topic(&brokers, "svc.healthy-out").unwrap()
    };
    let opts = |b: &str| KafkaOptions {
        instance_id: None,
        assign: Default::default(),
        brokers: b.to_string(),
        group: None,
        idle_exit: None,
        state_dir: None,
    };
    let hosting = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counters = || {
        std::sync::Arc::new(kafka::Counters::with_metrics(
            weft::metrics::PipelineMetrics::detached(),
        ))
    };
    let a = hosting.spawn(kafka::run(
        stuck,
        opts(&silent_addr),
        counters(),
        stop_rx.clone(),
    ));
    let b = hosting.spawn(kafka::run(healthy, opts(&brokers), counters(), stop_rx));
    // The healthy pipeline's first record waits for its group join; after
    // that, one record every 100 ms for 8 s, each timed to its output.
    let send = |i: usize| {
        clients
            .block_on(kafka::produce_values(
                &brokers,
                "svc.healthy-in",
                vec![(Some(format!("k{i}").into_bytes()), Some(b"{}".to_vec()))],
            ))
            .unwrap()
    };
    send(0);
    clients.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
            .await
            .expect("the healthy pipeline's first output")
    });
    let mut worst = Duration::ZERO;
    for i in 1..=80 {
        let t0 = std::time::Instant::now();
        send(i);
        clients.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), arrivals.recv())
                .await
                .expect("an output")
        });
        worst = worst.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed()));
    }
    stop_tx.send(true).unwrap();
    hosting.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), b).await;
        let _ = tokio::time::timeout(Duration::from_secs(30), a).await;
    });
    eprintln!("worst produce -> output: {worst:?}");
    // A blocking metadata call to the silent broker takes 2 s.
    assert!(
        worst < Duration::from_millis(1500),
        "the healthy pipeline waited {worst:?} for an output"
    );
}
