//! A patient index to measure against: truth-generator persons (about 1.5
//! records each) loaded through the loader's store into a fresh database and
//! placed by one full re-match of the matcher's engine. Shared by the
//! identity service's and the steward console's benchmarks.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use loader::store::Store;
use proto::Envelope;
use sqlx::PgPool;
use synth::truth::{TruthGenerator, TruthRecord};

/// A fresh, migrated database holding `persons` generated persons (seed
/// `seed`), matched, analyzed and checkpointed; its records as generated. Prints the
/// load and match times.
pub async fn matched(persons: u64, seed: u64) -> (DatabaseSettings, PgPool, Vec<TruthRecord>) {
    let db = crate::fresh_database().await;
    let pool = crate::pool(&db).await;
    etl_runtime::database::MIGRATOR
        .run(&pool)
        .await
        .expect("migrations");
    let started = Instant::now();
    let records = TruthGenerator::new(seed).records(persons);
    load(&Store::new(pool.clone(), "BENCH"), &records).await;
    println!(
        "{} records loaded in {:.1} s",
        records.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let engine = matcher::service::engine(&matcher::Settings::default());
    engine.rematch_all(&pool).await.expect("re-match");
    println!("matched in {:.1} s", started.elapsed().as_secs_f64());
    // Then a checkpoint: the load's gigabytes of WAL would otherwise be
    // flushed while the benchmark measures, and every commit of it (an
    // access-log line) would wait behind those writes.
    for sql in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    (db, pool, records)
}

/// Writes `records` as the loader writes what it consumes.
pub async fn load(store: &Store, records: &[TruthRecord]) {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    for (n, chunk) in records.chunks(5000).enumerate() {
        let envelopes: Vec<Envelope> = chunk
            .iter()
            .map(|t| {
                let mut r = t.record.clone();
                loader::validity::recompute(&mut r);
                Envelope::upsert(t.source, t.source_id.clone(), 1, at, r)
            })
            .collect();
        store
            .write_envelopes(&envelopes, (n * 5000) as u64 + 1)
            .await
            .expect("records written");
    }
}
