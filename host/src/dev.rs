//! `weft dev`: the end-to-end demo on embedded defaults.

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::local::parse_line;
use weft::pipeline::Pipeline;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, Counters, KafkaOptions};

pub fn run(
    pipeline: Pipeline,
    data_dir: &Path,
    brokers: Option<String>,
    input: &Path,
) -> anyhow::Result<()> {
    let (_broker, brokers) = match brokers {
        Some(b) => (None, b),
        None => {
            eprintln!(
                "starting a local broker (tansu, data in {})",
                data_dir.display()
            );
            let b = LocalBroker::start(data_dir)?;
            let addr = b.address();
            eprintln!("broker listening on {addr}");
            (Some(b), addr)
        }
    };
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let records: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let it = parse_line("input", i as i64 + 1, l.as_bytes());
            (it.key, it.origin.value.clone())
        })
        .collect();
    let m = pipeline.manifest.clone();
    let index = pipeline.sink_index.clone();
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    rt.block_on(async {
        let mut topics = vec![
            (m.source_topic.clone(), 3),
            (m.dead_letter_topic.clone(), 3),
        ];
        if let Some(t) = &m.sink_topic {
            topics.push((t.clone(), 3));
        }
        kafka::ensure_topics(&brokers, &topics).await?;
        let n = records.len();
        let t0 = Instant::now();
        kafka::produce_values(&brokers, &m.source_topic, records).await?;
        eprintln!("produced {n} records to {} in {:.2} s", m.source_topic, t0.elapsed().as_secs_f64());
        let counters = Arc::new(Counters::default());
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let opts = KafkaOptions {
            brokers: brokers.clone(),
            group: None,
            idle_exit: Some(Duration::from_secs(3)),
        };
        let t0 = Instant::now();
        let task = tokio::spawn(kafka::run(pipeline, opts, counters.clone(), stop_rx));
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} records {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !task.is_finished() {
            use std::sync::atomic::Ordering::Relaxed;
            bar.set_position(counters.consumed.load(Relaxed));
            bar.set_message(format!(
                "-> {} produced, {} dead-lettered",
                counters.produced.load(Relaxed),
                counters.dead_letters.load(Relaxed)
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
        task.await.context("pipeline task")??;
        use std::sync::atomic::Ordering::Relaxed;
        eprintln!(
            "{}: {} consumed -> {} produced, {} indexed, {} dead-lettered to {} ({:.2} s incl. 3 s idle wait)",
            m.name,
            counters.consumed.load(Relaxed),
            counters.produced.load(Relaxed),
            counters.indexed_docs.load(Relaxed),
            counters.dead_letters.load(Relaxed),
            m.dead_letter_topic,
            t0.elapsed().as_secs_f64()
        );
        if let (Some(ix), Some(name)) = (&index, &m.sink_index) {
            let s = ix.stats()?;
            println!(
                "index {}/{name}: {} documents, {} chunks, {} pending, {} in trees ({})",
                m.tenant,
                s.documents,
                s.chunks,
                s.pending,
                s.in_trees,
                ix.dir().display()
            );
        }
        if let Some(sink) = &m.sink_topic {
            let out = kafka::read_topic(&brokers, sink, Duration::from_secs(2)).await?;
            println!("{} records on {sink}; the first three:", out.len());
            for r in out.iter().take(3) {
                let v = r
                    .value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(v).chars().take(160).collect::<String>())
                    .unwrap_or_else(|| "null".into());
                println!(
                    "  [p{} @{}] {} => {v}...",
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())
                );
            }
        }
        anyhow::Ok(())
    })?;
    eprintln!("stopping the local broker");
    Ok(())
}
