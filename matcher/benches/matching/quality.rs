//! How good are the persons, matched as the service matches a backlog, and
//! does a full re-match agree? `BENCH_QUALITY_PERSONS` (default 67,000 ≈
//! 100,000 records) truth-generator persons, loaded through the loader's
//! store, (with the model: trained on them first, as after an initial
//! load) matched incrementally as one backlog with the service's growing
//! batch sizes; the evaluation report; a full re-match of the same set
//! (it moves nothing when the two paths agree).

use std::time::Instant;

use crate::support::{database, load, Bench};
use crate::training::train;

pub async fn run(bench: &Bench, persons: u64) {
    let (_db, pool, store) = database().await;
    let records = synth::truth::TruthGenerator::new(2026).records(persons);
    load(&store, &records, 1).await;
    if bench.model() {
        train(&pool, records.len()).await;
    }
    let started = Instant::now();
    matcher::service::drain(&bench.engine, &pool, bench.batch_size())
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    let truth: Vec<matcher::evaluate::TruthRow> = records
        .iter()
        .map(|t| matcher::evaluate::TruthRow {
            source: t.source.into(),
            source_id: t.source_id.clone(),
            person: t.person.clone(),
            group: t.group.clone(),
        })
        .collect();
    let report = matcher::evaluate::evaluate(&pool, &truth).await.unwrap();
    println!(
        "quality: {} records of {} persons matched incrementally (one backlog) in {:.1} s ({:.0} records/s)",
        records.len(),
        persons,
        took.as_secs_f64(),
        records.len() as f64 / took.as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let started = Instant::now();
    let applied = bench.engine.rematch_all(&pool).await.unwrap();
    println!(
        "full re-match of the same set: {:.1} s, {} records moved (0 = equal to the incremental result)",
        started.elapsed().as_secs_f64(),
        applied.moved
    );
}
