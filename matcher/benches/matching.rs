//! The matcher's benchmark (release build, real PostgreSQL):
//!
//! 1. quality: `BENCH_QUALITY_PERSONS` (default 67,000 ≈ 100,000 records)
//!    truth-generator persons, loaded through the loader's store and matched
//!    incrementally as one backlog (the service's growing batch sizes); the
//!    evaluation report; a full re-match of the same set (moves nothing);
//! 2. speed: a full re-match of `BENCH_RECORDS` (default 1,000,000) records,
//!    twice (first run, then nothing changed);
//! 3. incremental throughput at that table size: a backlog of
//!    `BENCH_BACKLOG` (default 50,000) new records matched by the service's
//!    batches (records/s);
//! 4. latency: with the service idle, single records committed one at a
//!    time; time from the loader's commit to the person assigned (p50/p99).
//!
//! Phase timings (`phase` log lines) are printed for the re-matches and for
//! batches of 5,000 records or more; `RUST_LOG=matcher=debug` shows them
//! for every batch.
//!
//! `cargo bench -p matcher --bench matching`

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use loader::store::{LoadRow, Store};
use proto::Envelope;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn batch_size(settings: &matcher::Settings) -> matcher::service::BatchSize {
    matcher::service::BatchSize::new(settings.matcher.batch_size, settings.matcher.max_batch_size)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn load(store: &Store, records: &[synth::truth::TruthRecord], version: i64) {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    for chunk in records.chunks(2000) {
        let envelopes: Vec<Envelope> = chunk
            .iter()
            .map(|t| Envelope::upsert(t.source, t.source_id.clone(), version, at, t.record.clone()))
            .collect();
        let rows: Vec<LoadRow> = envelopes
            .iter()
            .enumerate()
            .map(|(n, e)| LoadRow {
                envelope: e,
                stream_seq: n as u64,
                traceparent: None,
            })
            .collect();
        store.write(&rows, &[]).await.expect("write");
    }
}

async fn database() -> (etl_runtime::database::DatabaseSettings, PgPool, Store) {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    matcher::MIGRATOR.run(&pool).await.unwrap();
    let store = Store::new(pool.clone(), "BENCH");
    (db, pool, store)
}

#[tokio::main]
async fn main() {
    let settings = matcher::Settings::default();
    etl_runtime::telemetry::init(&settings.log);
    let engine = matcher::service::engine(&settings);

    // 1. Quality, incrementally.
    let persons = env_u64("BENCH_QUALITY_PERSONS", 67_000);
    if persons > 0 {
        let (_db, pool, store) = database().await;
        let records = synth::truth::TruthGenerator::new(2026).records(persons);
        load(&store, &records, 1).await;
        let started = Instant::now();
        matcher::service::drain(&engine, &pool, batch_size(&settings))
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
        let applied = engine.rematch_all(&pool).await.unwrap();
        println!(
            "full re-match of the same set: {:.1} s, {} records moved (0 = equal to the incremental result)",
            started.elapsed().as_secs_f64(),
            applied.moved
        );
    }

    // 2. Full re-match of a million records.
    let n = env_u64("BENCH_RECORDS", 1_000_000);
    if n > 0 {
        let (db, pool, store) = database().await;
        let records = synth::truth::TruthGenerator::new(7).records(n * 2 / 3);
        let records = &records[..(n as usize).min(records.len())];
        let started = Instant::now();
        load(&store, records, 1).await;
        println!(
            "loaded {} records in {:.1} s",
            records.len(),
            started.elapsed().as_secs_f64()
        );
        sqlx::query("DELETE FROM record_changes")
            .execute(&pool)
            .await
            .unwrap();
        let started = Instant::now();
        let applied = engine.rematch_all(&pool).await.unwrap();
        println!(
            "full re-match of {} records (first run, everything written): {:.1} s; {} persons, {} review items",
            applied.records,
            started.elapsed().as_secs_f64(),
            applied.persons_created,
            applied.reviews_opened
        );
        let started = Instant::now();
        let applied = engine.rematch_all(&pool).await.unwrap();
        println!(
            "full re-match of {} records (again, nothing changed): {:.1} s, {} moved",
            applied.records,
            started.elapsed().as_secs_f64(),
            applied.moved
        );

        // 3. A backlog of new records at this table size.
        let backlog = env_u64("BENCH_BACKLOG", 50_000);
        if backlog > 0 {
            let mut extra = synth::truth::TruthGenerator::new(8).records(backlog * 2 / 3 + 1);
            extra.truncate(backlog as usize);
            for t in &mut extra {
                t.source_id = format!("bl-{}", t.source_id);
            }
            load(&store, &extra, 1).await;
            let started = Instant::now();
            let applied = matcher::service::drain(&engine, &pool, batch_size(&settings))
                .await
                .unwrap()
                .unwrap();
            let took = started.elapsed();
            println!(
                "incremental backlog of {} new records on {} records: {:.1} s ({:.0} records/s), {} persons created",
                applied.changes,
                n,
                took.as_secs_f64(),
                applied.changes as f64 / took.as_secs_f64(),
                applied.persons_created
            );
        }

        // 4. Latency while idle, at this table size.
        let stop = CancellationToken::new();
        let mut s = matcher::Settings {
            database: db.clone(),
            ..Default::default()
        };
        s.matcher.poll_interval = Duration::from_secs(5);
        let task = tokio::spawn(matcher::run(s, stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let extra = synth::truth::TruthGenerator::new(99).records(300);
        let mut latencies = Vec::new();
        for (k, t) in extra.iter().enumerate() {
            let id = format!("lat-{k}");
            let mut one = t.clone();
            one.source_id = id.clone();
            let started = Instant::now();
            load(&store, std::slice::from_ref(&one), 1).await;
            let committed = started.elapsed();
            let started = Instant::now();
            loop {
                let p: Option<i64> = sqlx::query_scalar(
                    "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
                )
                .bind(one.source)
                .bind(&id)
                .fetch_optional(&pool)
                .await
                .unwrap();
                if p.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = committed;
            latencies.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.sort();
        let in_table: i64 = sqlx::query_scalar("SELECT count(*) FROM source_records")
            .fetch_one(&pool)
            .await
            .unwrap();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
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
}
