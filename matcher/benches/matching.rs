//! The matcher's benchmark (release build, real PostgreSQL):
//!
//! 1. quality: `BENCH_QUALITY_PERSONS` (default 67,000 ≈ 100,000 records)
//!    truth-generator persons, loaded through the loader's store and matched
//!    incrementally as one backlog (the service's growing batch sizes); the
//!    evaluation report; a full re-match of the same set (moves nothing);
//! 2. speed: a full re-match of `BENCH_RECORDS` (default 1,000,000) records,
//!    twice (first run, then nothing changed);
//! 3. the blocking index built from those records (what an instance does
//!    when it becomes the active one): time, entries, estimated size and
//!    the growth of this process's resident memory;
//! 4. incremental throughput at that table size: a backlog of
//!    `BENCH_BACKLOG` (default 50,000) new records matched by the service's
//!    batches (records/s), six times (a new set of records each time,
//!    after a VACUUM): without and with the read-ahead of the next batch's
//!    records, alternated;
//! 5. latency: with the service idle, single records committed one at a
//!    time; time from the loader's commit to the person assigned (p50/p99).
//!
//! 6. with `BENCH_CONCURRENT=N` (default 0: skipped): the loader's write
//!    path (its `Store`, batches of 2,000) writing N new records alone,
//!    then the matcher binary (a process of its own) draining them; then N
//!    more written while that matcher runs: both rates, the matcher's lag
//!    (changes pending) when the writing ends, and the matcher's resident
//!    memory (current and peak). With `BENCH_PACED=R1,R2,…` also: the
//!    writer paced at R records/s for `BENCH_PACED_SECONDS` (default 20)
//!    while the matcher runs: its lag at each quarter (bounded or
//!    growing), and the CPU of writer, matcher and PostgreSQL ([`paced`]).
//!    At the end, how many of the matcher's large batches took their pairs
//!    prepared while the batch before wrote (from its log).
//!
//! 7. with `BENCH_FLOOR=N` (default 20,000; 0 skips it): the loader's
//!    write path for N new records against the least the matcher must
//!    write for them (persons, memberships with their reasons, pairs at the table's
//!    ratios; no matching work; rolled back): see [`floor`].
//!
//! 8. with `BENCH_PIPELINE=N` (default 0: skipped): the product's own path
//!    at this table size. N new records are published to a stream of their
//!    own first (one message per record, as the qMS extractor sends them);
//!    then the loader's service (in this process, its default settings)
//!    drains the stream into PostgreSQL while the matcher binary runs: the
//!    loader's rate, the matcher's lag at each quarter of the loading
//!    (bounded or growing), how long after the loading the last record was
//!    matched, and the CPU of loader, matcher, PostgreSQL and nats-server
//!    ([`pipeline`]).
//!
//! 9. with `BENCH_MASS_DELETE=N` (default 0: skipped): N of those records
//!    deleted at once, matched by the service's batches: the time, the
//!    slowest batch (the most SIGTERM waits for) and the persons retired
//!    ([`mass_delete`]).
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
    etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
    let store = Store::new(pool.clone(), "BENCH");
    (db, pool, store)
}

/// This process's resident memory (Linux), MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The matcher binary's allocator (`src/main.rs`), so that the in-process
/// sections measure what the service runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

        // 3. The blocking index.
        let rss = rss_mib();
        let started = Instant::now();
        engine.prepare_index(&pool).await.unwrap();
        let (recs, keys, bytes) = engine.index_size().await;
        println!(
            "blocking index built from {} records: {:.1} s; {} records, {} distinct keys, ~{} MiB estimated; resident memory {} -> {} MiB",
            n,
            started.elapsed().as_secs_f64(),
            recs,
            keys,
            bytes >> 20,
            rss,
            rss_mib()
        );

        // 4. A backlog of new records at this table size: twice, the
        // same size, without and with reading the next batch ahead.
        let backlog = env_u64("BENCH_BACKLOG", 50_000);
        // After the re-match's million-row writes, the first reads of
        // those pages set their hint bits (writes): vacuumed first, so that
        // no run pays for that. Then alternated, three times each: the
        // table grows with each run.
        sqlx::query("VACUUM (ANALYZE) person_memberships, persons, match_pairs, match_audit_events, source_records")
            .execute(&pool)
            .await
            .unwrap();
        let with = engine.read_ahead_from;
        for (label, seed, read_ahead_from) in [
            ("without read-ahead", 8, usize::MAX),
            ("with read-ahead", 9, with),
            ("with read-ahead", 10, with),
            ("without read-ahead", 11, usize::MAX),
            ("without read-ahead", 12, usize::MAX),
            ("with read-ahead", 13, with),
        ] {
            if backlog == 0 {
                break;
            }
            let mut extra = synth::truth::TruthGenerator::new(seed).records(backlog * 2 / 3 + 1);
            extra.truncate(backlog as usize);
            for t in &mut extra {
                t.source_id = format!("bl{seed}-{}", t.source_id);
            }
            let before = Cpu::now();
            load(&store, &extra, 1).await;
            let written = before.spent();
            checkpoint(&pool).await;
            let mut engine = engine.clone();
            engine.read_ahead_from = read_ahead_from;
            let used = engine.read_ahead_used();
            let before = Cpu::now();
            let started = Instant::now();
            let applied = matcher::service::drain(&engine, &pool, batch_size(&settings))
                .await
                .unwrap()
                .unwrap();
            let took = started.elapsed();
            let matched = before.spent();
            println!(
                "incremental backlog of {} new records on {} records, {label}: {:.1} s ({:.0} records/s), {} persons created, {} records read ahead; \
                 CPU per 1,000 records: written by the loader's write path {}, matched {} = {:.2}×",
                applied.changes,
                n,
                took.as_secs_f64(),
                applied.changes as f64 / took.as_secs_f64(),
                applied.persons_created,
                engine.read_ahead_used() - used,
                written.per_thousand(backlog as usize),
                matched.per_thousand(applied.changes as usize),
                matched.total() / written.total()
            );
        }

        // 5. Latency while idle, at this table size (the service builds its
        // own index first: wait until it is ready).
        let stop = CancellationToken::new();
        let mut s = matcher::Settings {
            database: db.clone(),
            ..Default::default()
        };
        s.matcher.poll_interval = Duration::from_secs(5);
        let task = tokio::spawn(matcher::run(s, stop.clone()));
        let started = Instant::now();
        let held = |lock: i64| advisory_lock_held(&pool, lock);
        // Ready: the service is the active instance and no longer holds the
        // matcher lock (its index build is over).
        while started.elapsed() < Duration::from_secs(2)
            || !held(matcher::service::LEADER_LOCK).await
            || held(matcher::engine::MATCH_LOCK).await
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "service ready (index built) after {:.1} s",
            started.elapsed().as_secs_f64()
        );
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

        // 6. The loader and the matcher at the same time.
        let concurrent = env_u64("BENCH_CONCURRENT", 0) as usize;
        if concurrent > 0 {
            concurrently(&db, &pool, &store, concurrent).await;
        }

        // 8. The loader draining the bus while the matcher runs (before 7,
        // which leaves its records unmatched).
        let pipeline_n = env_u64("BENCH_PIPELINE", 0) as usize;
        if pipeline_n > 0 {
            pipeline(&db, &pool, pipeline_n).await;
        }

        // 7. What the loader writes for new records against the least the
        // matcher must write for them.
        let floor_n = env_u64("BENCH_FLOOR", 20_000) as usize;
        if floor_n > 0 {
            floor(&pool, &store, floor_n).await;
        }

        // 9. A mass delete (last: it empties the table).
        let deletes = env_u64("BENCH_MASS_DELETE", 0) as usize;
        if deletes > 0 {
            mass_delete(&pool, &store, records, deletes, batch_size(&settings)).await;
        }
    }
}

/// Section 9, with `BENCH_MASS_DELETE=N`: the first N records of section
/// 2's table deleted at once (as a wrong database path or a half-restored
/// backup would look, past a released brake), written by the loader's
/// store, then matched by the service's batches: the time, the slowest
/// batch (what SIGTERM waits for at most: the batch in hand is finished)
/// and the persons retired.
async fn mass_delete(
    pool: &PgPool,
    store: &Store,
    records: &[synth::truth::TruthRecord],
    n: usize,
    size: matcher::service::BatchSize,
) {
    let gone = &records[..n.min(records.len())];
    let at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
    for chunk in gone.chunks(2000) {
        let envelopes: Vec<Envelope> = chunk
            .iter()
            .map(|t| Envelope::delete(t.source, t.source_id.clone(), 2, at))
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
    let engine = matcher::service::engine(&matcher::Settings::default());
    let retired_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM persons WHERE retired_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    let mut size = size;
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
        size.claimed(applied.changes);
        changes += applied.changes;
    }
    let took = started.elapsed();
    let retired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM persons WHERE retired_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    println!(
        "mass delete of {} records on {} records: matched in {:.1} s ({:.0} changes/s), slowest batch {:.2} s, {} persons retired",
        changes,
        records.len(),
        took.as_secs_f64(),
        changes as f64 / took.as_secs_f64(),
        slowest.as_secs_f64(),
        retired - retired_before
    );
}

/// Section 7: the loader's write path for `n` new records (its `Store`,
/// batches of 2,000, committed), then, in one transaction that is rolled
/// back, only the rows the matcher must write for those records — without
/// any matching work, as server-side statements (no client transfer), so
/// a lower bound: read the records; persons at the table's ratio of
/// persons to records; one membership per record, with its reason (it is
/// also the record's `assigned` row of the audit log); pairs at the
/// table's ratio of pairs to records; the change rows deleted. If that floor costs
/// PostgreSQL more than the loader's whole write, a matcher sharing the
/// machine with a loader running flat out cannot keep its pace, however
/// its matching is done.
async fn floor(pool: &PgPool, store: &Store, n: usize) {
    let mut records = synth::truth::TruthGenerator::new(77).records(n as u64 * 2 / 3 + 1);
    records.truncate(n);
    for (k, t) in records.iter_mut().enumerate() {
        t.source_id = format!("floor-{k}");
    }
    let (live, persons, pairs): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM source_records WHERE deleted_at IS NULL),
                (SELECT count(*) FROM persons WHERE retired_at IS NULL),
                (SELECT count(*) FROM match_pairs)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    checkpoint(pool).await;
    let before = Cpu::now();
    let started = Instant::now();
    load(store, &records, 1).await;
    let loader = started.elapsed();
    let loader_cpu = before.spent();
    let n_persons = (n as f64 * persons as f64 / live as f64).round() as i64;
    let n_pairs = (n as f64 * pairs as f64 / live as f64).round() as i64;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE floor_recs ON COMMIT DROP AS
         SELECT c.change_id, c.source, c.source_id, row_number() OVER (ORDER BY c.change_id) AS n
         FROM record_changes c WHERE c.source_id LIKE 'floor-%'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let steps: [(&str, String); 5] = [
        (
            "records read",
            "SELECT count(r.last_name) FROM floor_recs f
             JOIN source_records r ON r.source = f.source AND r.source_id = f.source_id"
                .into(),
        ),
        (
            "persons",
            format!(
                "CREATE TEMP TABLE floor_persons ON COMMIT DROP AS
                 WITH p AS (INSERT INTO persons (locked) SELECT false FROM generate_series(1, {n_persons})
                            RETURNING person_id)
                 SELECT person_id, row_number() OVER (ORDER BY person_id) AS n FROM p"
            ),
        ),
        (
            "memberships (each also its record's `assigned` row of the audit)",
            format!(
                "INSERT INTO person_memberships (source, source_id, person_id, actor, rule, new_person)
                 SELECT f.source, f.source_id, p.person_id, 'matcher', 'operator_or_alone', true FROM floor_recs f
                 JOIN floor_persons p ON p.n = (f.n - 1) % {n_persons} + 1"
            ),
        ),
        (
            "pairs",
            format!(
                "INSERT INTO match_pairs (a_source, a_source_id, b_source, b_source_id, decision, rule, score, evidence)
                 SELECT source, source_id, 'zz-floor', source_id, 'link', 'snils', 20,
                        '{{\"snils\": \"exact\", \"last_name\": \"exact\", \"birth_date\": \"exact\"}}'
                 FROM floor_recs WHERE n <= {n_pairs}"
            ),
        ),
        (
            "change rows deleted",
            "DELETE FROM record_changes WHERE change_id IN (SELECT change_id FROM floor_recs)".into(),
        ),
    ];
    let mut total = Duration::ZERO;
    let mut parts = Vec::new();
    let before = Cpu::now();
    for (what, sql) in steps {
        let started = Instant::now();
        // Numbers computed here, no input: safe to format into the SQL.
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
        let took = started.elapsed();
        total += took;
        parts.push(format!("{what} {} ms", took.as_millis()));
    }
    let floor_cpu = before.spent();
    tx.rollback().await.unwrap();
    println!(
        "floor: CPU per 1,000 records: the loader's write path {}, the matcher's least write {}",
        loader_cpu.per_thousand(n),
        floor_cpu.per_thousand(n)
    );
    println!(
        "floor: {n} new records on {live}: the loader's write {:.0} ms ({:.0} records/s); the matcher's least write for them \
         ({n_persons} persons, {n} memberships with their reasons, {n_pairs} pairs; no matching) {:.0} ms ({:.0} records/s) = {:.2}× the loader's: {}",
        loader.as_secs_f64() * 1e3,
        n as f64 / loader.as_secs_f64(),
        total.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64(),
        total.as_secs_f64() / loader.as_secs_f64(),
        parts.join(", ")
    );
    // The records stay, with their changes: the last section.
}

/// Section 6, with `BENCH_PACED=R1,R2,…`: the loader's write path writes
/// new records at R records/s for `BENCH_PACED_SECONDS` (default 20) while
/// the matcher binary runs: does the matcher's lag (changes pending) stay
/// bounded? Prints the lag at each quarter of the window, the time to
/// drain after it, and the CPU each side used (this process = the writer,
/// the matcher binary, PostgreSQL).
async fn paced(pool: &PgPool, store: &Store, matcher: &testkit::ChildProcess, rate: u64) {
    const CHUNK: usize = 500;
    let seconds = env_u64("BENCH_PACED_SECONDS", 20);
    let n = (rate * seconds) as usize;
    let mut records = synth::truth::TruthGenerator::new(rate).records(n as u64 * 2 / 3 + 1);
    records.truncate(n);
    for (k, t) in records.iter_mut().enumerate() {
        t.source_id = format!("pc{rate}-{k}");
    }
    checkpoint(pool).await;
    let before = testkit::cpu::processes();
    let started = Instant::now();
    let mut lags = Vec::new();
    let chunks = records.chunks(CHUNK).count();
    for (k, chunk) in records.chunks(CHUNK).enumerate() {
        let due = Duration::from_secs_f64((k * CHUNK) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        load(store, chunk, 1).await;
        if (k + 1) % (chunks / 4).max(1) == 0 || k + 1 == chunks {
            lags.push(pending(pool).await);
        }
    }
    let wrote = started.elapsed().as_secs_f64();
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    let (me, pid) = (std::process::id() as i32, matcher.pid());
    let cpu = testkit::cpu::seconds_between(
        &before,
        &testkit::cpu::processes(),
        testkit::cpu::services_and(&[(me, "writer"), (pid, "matcher")]),
    );
    let pct = |g: &str| cpu.get(g).copied().unwrap_or(0.0) / drained * 100.0;
    println!(
        "paced: {n} records written at {rate}/s (achieved {:.0}/s) while the matcher ran: lag at each quarter {lags:?} changes; \
         all matched {:.1} s after the writing ended; CPU over {drained:.1} s, % of one core: writer {:.0}, matcher {:.0}, PostgreSQL {:.0}",
        n as f64 / wrote,
        drained - wrote,
        pct("writer"),
        pct("matcher"),
        pct("postgres")
    );
}

/// Section 8: the loader's service drains `n` new records from the bus
/// while the matcher binary runs (the product as deployed, on one
/// machine). "Sustained at the loader's throughput" read literally: does
/// the matcher's lag stay bounded while the loader runs flat out?
async fn pipeline(db: &etl_runtime::database::DatabaseSettings, pool: &PgPool, n: usize) {
    let mut records = synth::truth::TruthGenerator::new(41).records(n as u64 * 2 / 3 + 1);
    records.truncate(n);
    for (k, t) in records.iter_mut().enumerate() {
        t.source_id = format!("pl-{k}");
    }
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
    let mut env = testkit::service_env(db, &stream);
    env.push(("RUST_LOG".into(), "matcher=info".into()));
    let matcher = testkit::ChildProcess::spawn(env!("CARGO_BIN_EXE_matcher"), &[], &env);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2)
        || !advisory_lock_held(pool, matcher::service::LEADER_LOCK).await
        || advisory_lock_held(pool, matcher::engine::MATCH_LOCK).await
        || pending(pool).await > 0
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checkpoint(pool).await;
    // The loader as its binary runs it, with its default batch size and
    // writers (the test settings' small batches would slow it down).
    const CONSUMER: &str = "bench_pipeline";
    let mut settings = loader::testing::settings(db, &testkit::nats_url(), &stream, CONSUMER);
    let defaults = loader::Settings::default();
    settings.loader.batch_size = defaults.loader.batch_size;
    // Records loaded: change ids drawn by the loader's writes (the stream's
    // ack floor is no measure of progress: one late ack holds it back).
    let changes_drawn = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('record_changes', 'change_id')), 0)",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let first_change = changes_drawn().await;
    let before = testkit::cpu::processes();
    let started = Instant::now();
    let loader = loader::testing::RunningLoader::start(settings);
    let js_stream = js.get_stream(&stream.name).await.unwrap();
    // (seconds, records loaded, changes the matcher has not consumed yet),
    // every ~0.25 s while the loader works.
    let mut samples: Vec<(f64, i64, i64)> = Vec::new();
    let loaded = loop {
        let drawn = changes_drawn().await - first_change;
        samples.push((started.elapsed().as_secs_f64(), drawn, pending(pool).await));
        if drawn >= n as i64 {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the loader did not load the stream in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let lag_at_end = pending(pool).await;
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
    let quarters: Vec<i64> = (1..=4)
        .map(|q| {
            let t = loaded * q as f64 / 4.0;
            samples
                .iter()
                .rev()
                .find(|(s, _, _)| *s <= t)
                .map_or(0, |(_, _, lag)| *lag)
        })
        .collect();
    let max_lag = samples.iter().map(|(_, _, lag)| *lag).max().unwrap_or(0);
    let pct = |g: &str| cpu.get(g).copied().unwrap_or(0.0) / matched * 100.0;
    let per_k = |g: &str| cpu.get(g).copied().unwrap_or(0.0) * 1e3 / (n as f64 / 1e3);
    println!(
        "pipeline: the loader wrote {n} records from the bus in {loaded:.1} s ({:.0} records/s; every message acked after {acked:.1} s) while the matcher binary ran; \
         matcher lag (changes not yet matched) at each quarter of the loading {quarters:?}, at most {max_lag}, {lag_at_end} when the loading ended; \
         all matched {:.1} s after the loading ended ({:.0} records/s over the whole run)",
        n as f64 / loaded,
        matched - loaded,
        n as f64 / matched,
    );
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
    let mut matcher = matcher;
    let status = matcher.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", matcher.logs());
    if let Err(error) = js.delete_stream(&stream.name).await {
        eprintln!("pipeline: deleting stream {}: {error}", stream.name);
    }
}

async fn advisory_lock_held(pool: &PgPool, lock: i64) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(lock)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// CPU time of this process (the loader's write path, or the matcher's
/// work, whichever the bench is doing) and of PostgreSQL's processes
/// (all of them: the machine must be otherwise quiet) since a reading.
struct Cpu(Vec<testkit::cpu::ProcessTime>);

/// CPU seconds spent: (this process, PostgreSQL).
struct Spent(f64, f64);

impl Cpu {
    fn now() -> Cpu {
        Cpu(testkit::cpu::processes())
    }

    fn spent(&self) -> Spent {
        let me = std::process::id() as i32;
        let by = testkit::cpu::seconds_between(
            &self.0,
            &testkit::cpu::processes(),
            testkit::cpu::services_and(&[(me, "me")]),
        );
        let of = |g| by.get(g).copied().unwrap_or(0.0);
        Spent(of("me"), of("postgres"))
    }
}

impl Spent {
    fn total(&self) -> f64 {
        self.0 + self.1
    }

    /// "X ms (process Y + PostgreSQL Z)" per 1,000 of `n` records.
    fn per_thousand(&self, n: usize) -> String {
        let k = n.max(1) as f64 / 1e3;
        format!(
            "{:.0} ms (process {:.0} + PostgreSQL {:.0})",
            self.total() * 1e3 / k,
            self.0 * 1e3 / k,
            self.1 * 1e3 / k
        )
    }
}

/// Writes the dirty pages out before a timed section, so that it does not
/// pay for the previous section's checkpoint (full-page writes) by chance.
async fn checkpoint(pool: &PgPool) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("CHECKPOINT refused ({error}); timings may include one");
    }
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// VmRSS and VmHWM of a process, MiB.
fn rss_of(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn concurrently(
    db: &etl_runtime::database::DatabaseSettings,
    pool: &PgPool,
    store: &Store,
    n: usize,
) {
    let mut records = synth::truth::TruthGenerator::new(31).records(2 * n as u64 * 2 / 3 + 1);
    records.truncate(2 * n);
    for (k, t) in records.iter_mut().enumerate() {
        t.source_id = format!("cc-{k}");
    }
    let (alone, shared) = records.split_at(records.len() / 2);
    checkpoint(pool).await;
    // The loader's write path alone.
    let started = Instant::now();
    load(store, alone, 1).await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "concurrent: {} records written alone in {:.1} s ({:.0} records/s)",
        alone.len(),
        took,
        alone.len() as f64 / took
    );
    // The matcher binary drains them (and builds its index first).
    let mut env = testkit::service_env(db, &testkit::unique_stream());
    env.push(("RUST_LOG".into(), "matcher=info".into()));
    let mut matcher = testkit::ChildProcess::spawn(env!("CARGO_BIN_EXE_matcher"), &[], &env);
    let started = Instant::now();
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "concurrent: the matcher binary started and drained them in {:.1} s ({:.0} records/s, index build included); resident memory {:?} MiB (current, peak)",
        took,
        alone.len() as f64 / took,
        rss_of(matcher.pid())
    );
    // Both at once.
    checkpoint(pool).await;
    let started = Instant::now();
    load(store, shared, 1).await;
    let wrote = started.elapsed().as_secs_f64();
    let lag = pending(pool).await;
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    println!(
        "concurrent: {} records written while the matcher ran: written in {:.1} s ({:.0} records/s); matcher lag when the writing ended: {} changes; all matched after {:.1} s ({:.0} records/s); matcher resident memory {:?} MiB (current, peak)",
        shared.len(),
        wrote,
        shared.len() as f64 / wrote,
        lag,
        drained,
        shared.len() as f64 / drained,
        rss_of(matcher.pid())
    );
    // Paced: the loader's write path at a set rate instead of flat out.
    for rate in std::env::var("BENCH_PACED")
        .unwrap_or_default()
        .split(',')
        .filter_map(|r| r.trim().parse::<u64>().ok())
        .filter(|r| *r > 0)
    {
        paced(pool, store, &matcher, rate).await;
    }
    let status = matcher.terminate(Duration::from_secs(30));
    let logs = matcher.logs();
    for line in logs.lines().filter(|l| {
        l.contains("blocking index built")
            || l.contains("audit written")
            || l.contains("phase=\"committed\"")
    }) {
        println!("concurrent: matcher log: {line}");
    }
    // Whether the two batches in flight held while the writer wrote: the
    // batches of 5,000 or more (their phases are logged) that took their
    // pairs prepared against those that computed them.
    let batch_phase = |phase: &str| {
        logs.lines()
            .filter(|l| l.contains("what=\"batch\"") && l.contains(phase))
            .count()
    };
    println!(
        "concurrent: batches of 5,000 or more: {} with their pairs prepared while the one before wrote, {} computed them themselves",
        batch_phase("phase=\"pairs prepared by the batch before\""),
        batch_phase("phase=\"pairs evaluated\""),
    );
    assert!(status.is_some_and(|s| s.success()), "{logs}");
}
