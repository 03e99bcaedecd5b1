//! Does the matcher keep up with the product's own path, and how soon
//! after a load is everything matched? With `BENCH_PIPELINE=N` (default 0:
//! skipped), at the table's size: N new records are published to a stream
//! of their own first (one message per record, as the qMS extractor sends
//! them); then the loader's service (in this process, its default
//! settings) drains the stream into PostgreSQL while the matcher binary
//! runs: the loader's rate, the matcher's lag at each quarter of the
//! loading (bounded or growing), how long after the loading the last
//! record was matched, and the CPU of loader, matcher, PostgreSQL and
//! nats-server.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use proto::Envelope;
use sqlx::PgPool;

use crate::support::{checkpoint, matcher_ready, new_records, pending, Bench, Table};

const CONSUMER: &str = "bench_pipeline";

/// Progress while the loader works: (seconds, records loaded, changes the
/// matcher has not consumed yet), every ~0.25 s.
type Samples = Vec<(f64, i64, i64)>;

pub async fn run(bench: &Bench, table: &Table, n: usize) {
    let records = new_records(41, n, "pl");
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let started = Instant::now();
    let stored = testkit::publish_all(
        &js,
        &stream,
        records
            .iter()
            .map(|t| Envelope::upsert(t.source, t.source_id.clone(), 1, at, t.record.clone())),
    )
    .await;
    assert_eq!(stored, n, "every record published once");
    println!(
        "pipeline: {n} records published in {:.1} s (one message each)",
        started.elapsed().as_secs_f64()
    );
    // The matcher binary, its index built and idle.
    let pool = &table.pool;
    let matcher = testkit::ChildProcess::spawn(
        env!("CARGO_BIN_EXE_matcher"),
        &[],
        &bench.binary_env(&table.db),
    );
    matcher_ready(pool, true).await;
    checkpoint(pool).await;
    let first_change = changes_drawn(pool).await;
    let before = testkit::cpu::processes();
    let started = Instant::now();
    let loader = loader::testing::RunningLoader::start(loader_settings(&table.db, &stream));
    let (samples, loaded) = sample_loading(pool, started, first_change, n).await;
    let lag_at_end = pending(pool).await;
    let js_stream = js.get_stream(&stream.name).await.unwrap();
    loop {
        match js_stream.consumer_info(CONSUMER).await {
            Ok(info) if info.ack_floor.stream_sequence >= n as u64 => break,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let acked = started.elapsed().as_secs_f64();
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let matched = started.elapsed().as_secs_f64();
    let (me, pid) = (std::process::id() as i32, matcher.pid());
    let cpu = testkit::cpu::seconds_between(
        &before,
        &testkit::cpu::processes(),
        testkit::cpu::services_and(&[(me, "loader"), (pid, "matcher")]),
    );
    loader.stop().await;
    report(
        n,
        &Times {
            loaded,
            acked,
            matched,
        },
        &samples,
        lag_at_end,
        &cpu,
    );
    let mut matcher = matcher;
    let status = matcher.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", matcher.logs());
    if let Err(error) = js.delete_stream(&stream.name).await {
        eprintln!("pipeline: deleting stream {}: {error}", stream.name);
    }
}

/// When, since the loader started: every record loaded, every message
/// acked, every record matched (seconds).
struct Times {
    loaded: f64,
    acked: f64,
    matched: f64,
}

fn report(
    n: usize,
    t: &Times,
    samples: &Samples,
    lag_at_end: i64,
    cpu: &std::collections::HashMap<&'static str, f64>,
) {
    let Times {
        loaded,
        acked,
        matched,
    } = *t;
    println!(
        "pipeline: the loader wrote {n} records from the bus in {loaded:.1} s ({:.0} records/s; every message acked after {acked:.1} s) while the matcher binary ran; \
         matcher lag (changes not yet matched) at each quarter of the loading {:?}, at most {}, {lag_at_end} when the loading ended; \
         all matched {:.1} s after the loading ended ({:.0} records/s over the whole run)",
        n as f64 / loaded,
        quarters(samples, loaded),
        samples.iter().map(|(_, _, lag)| *lag).max().unwrap_or(0),
        matched - loaded,
        n as f64 / matched,
    );
    let pct = |g: &str| cpu.get(g).copied().unwrap_or(0.0) / matched * 100.0;
    let per_k = |g: &str| cpu.get(g).copied().unwrap_or(0.0) * 1e3 / (n as f64 / 1e3);
    println!(
        "pipeline: CPU over {matched:.1} s, % of one core: loader {:.0}, matcher {:.0}, PostgreSQL {:.0}, nats-server {:.0}; \
         per 1,000 records: loader {:.0} ms, matcher {:.0} ms, PostgreSQL (both sides) {:.0} ms, nats-server {:.0} ms",
        pct("loader"),
        pct("matcher"),
        pct("postgres"),
        pct("nats"),
        per_k("loader"),
        per_k("matcher"),
        per_k("postgres"),
        per_k("nats"),
    );
}

/// The loader as its binary runs it, with its default batch size and
/// writers (the test settings' small batches would slow it down).
fn loader_settings(db: &DatabaseSettings, stream: &proto::bus::StreamSettings) -> loader::Settings {
    let mut settings = loader::testing::settings(db, &testkit::nats_url(), stream, CONSUMER);
    settings.loader.batch_size = loader::Settings::default().loader.batch_size;
    settings
}

/// Records loaded: change ids drawn by the loader's writes (the stream's
/// ack floor is no measure of progress: one late ack holds it back).
async fn changes_drawn(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('record_changes', 'change_id')), 0)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Samples the loading until `n` records are loaded; gives the samples and
/// the seconds it took.
async fn sample_loading(
    pool: &PgPool,
    started: Instant,
    first_change: i64,
    n: usize,
) -> (Samples, f64) {
    let mut samples = Samples::new();
    loop {
        let drawn = changes_drawn(pool).await - first_change;
        samples.push((started.elapsed().as_secs_f64(), drawn, pending(pool).await));
        if drawn >= n as i64 {
            return (samples, started.elapsed().as_secs_f64());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the loader did not load the stream in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The lag at each quarter of the loading.
fn quarters(samples: &Samples, loaded: f64) -> Vec<i64> {
    (1..=4)
        .map(|q| {
            let t = loaded * q as f64 / 4.0;
            samples
                .iter()
                .rev()
                .find(|(s, _, _)| *s <= t)
                .map_or(0, |(_, _, lag)| *lag)
        })
        .collect()
}
