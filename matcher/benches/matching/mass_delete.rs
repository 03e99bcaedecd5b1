//! How long does a mass delete take to match, and what is the longest a
//! SIGTERM waits (the batch in hand is finished)? With
//! `BENCH_MASS_DELETE=N` (default 0: skipped): the first N records of the
//! table deleted at once (as a wrong database path or a half-restored
//! backup would look, past a released brake), written by the loader's
//! store, then matched by the service's batches: the time, the slowest
//! batch and the persons retired. Last: it empties the table.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use proto::Envelope;
use sqlx::PgPool;

use crate::support::{write, Bench, Table};

pub async fn run(bench: &Bench, table: &Table, n: usize) {
    let gone = &table.records[..n.min(table.records.len())];
    let at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
    write(
        &table.store,
        gone.iter()
            .map(|t| Envelope::delete(t.source, t.source_id.clone(), 2, at)),
    )
    .await;
    let pool = &table.pool;
    // An engine of its own, as a restarted service has: its first batch
    // builds the index.
    let engine = matcher::service::engine(&bench.settings);
    let retired_before = retired(pool).await;
    let mut size = bench.batch_size();
    let (mut changes, mut slowest) = (0u64, Duration::ZERO);
    let started = Instant::now();
    loop {
        let batch = Instant::now();
        let applied = engine
            .process_batch_reading_ahead(pool, size.limit(), size.if_full())
            .await
            .unwrap()
            .expect("lock free");
        if applied.changes == 0 {
            break;
        }
        slowest = slowest.max(batch.elapsed());
        size.applied(&applied);
        changes += applied.changes;
    }
    let took = started.elapsed();
    println!(
        "mass delete of {} records on {} records: matched in {:.1} s ({:.0} changes/s), slowest batch {:.2} s, {} persons retired",
        changes,
        table.records.len(),
        took.as_secs_f64(),
        changes as f64 / took.as_secs_f64(),
        slowest.as_secs_f64(),
        retired(pool).await - retired_before
    );
}

async fn retired(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM persons WHERE retired_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}
