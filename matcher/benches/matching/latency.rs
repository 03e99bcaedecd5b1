//! How long after the loader's commit does a record have its person when
//! the service is idle? The service (in this process, its settings with
//! the bench's scoring) builds its index; then 300 single records are
//! committed one at a time, 20 ms apart: commit → person assigned
//! (p50/p99/max).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::{load, matcher_ready, Bench, Table};

pub async fn run(bench: &Bench, table: &Table) {
    let stop = CancellationToken::new();
    let mut settings = bench.service_settings(&table.db);
    settings.matcher.poll_interval = Duration::from_secs(5);
    let task = tokio::spawn(matcher::run(settings, stop.clone()));
    let ready = matcher_ready(&table.pool, false).await;
    println!(
        "service ready (index built) after {:.1} s",
        ready.as_secs_f64()
    );
    let extra = synth::truth::TruthGenerator::new(99).records(300);
    let mut latencies = Vec::new();
    for (k, t) in extra.iter().enumerate() {
        let mut one = t.clone();
        one.source_id = format!("lat-{k}");
        load(&table.store, std::slice::from_ref(&one), 1).await;
        let started = Instant::now();
        while person_of(table, &one).await.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let in_table: i64 = sqlx::query_scalar("SELECT count(*) FROM source_records")
        .fetch_one(&table.pool)
        .await
        .unwrap();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "commit → person assigned, idle, {} records in the table: p50 {:?}, p99 {:?}, max {:?}",
        in_table,
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

async fn person_of(table: &Table, record: &synth::truth::TruthRecord) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
    )
    .bind(record.source)
    .bind(&record.source_id)
    .fetch_optional(&table.pool)
    .await
    .unwrap()
}
