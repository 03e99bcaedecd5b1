//! How fast does the matcher work off a backlog of new records at the
//! table's size, with and without reading the next batch ahead?
//! `BENCH_BACKLOG` (default 50,000; 0 skips it) new records matched by the
//! service's batches (records/s), six times (a new set each time, after a
//! VACUUM), read-ahead off and on alternated; the CPU per 1,000 records
//! against the loader's write path for the same records.

use std::time::Instant;

use sqlx::PgPool;

use crate::support::{checkpoint, env_u64, load, Bench, Cpu, Table};

pub async fn run(bench: &Bench, table: &Table) {
    let backlog = env_u64("BENCH_BACKLOG", 50_000) as usize;
    if backlog == 0 {
        return;
    }
    // After the re-match's million-row writes, the first reads of those
    // pages set their hint bits (writes): vacuumed first, so that no run
    // pays for that. Then alternated, three times each: the table grows
    // with each run.
    vacuum(&table.pool).await;
    let with = bench.engine.read_ahead_from;
    for (label, seed, read_ahead_from) in [
        ("without read-ahead", 8, usize::MAX),
        ("with read-ahead", 9, with),
        ("with read-ahead", 10, with),
        ("without read-ahead", 11, usize::MAX),
        ("without read-ahead", 12, usize::MAX),
        ("with read-ahead", 13, with),
    ] {
        let mut engine = bench.engine.clone();
        engine.read_ahead_from = read_ahead_from;
        once(bench, &engine, table, backlog, seed, label).await;
    }
}

async fn vacuum(pool: &PgPool) {
    sqlx::query(
        "VACUUM (ANALYZE) person_memberships, persons, match_pairs, match_audit_events, source_records",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// One backlog of `n` new records (from `seed`) written, then matched by
/// `engine`.
async fn once(
    bench: &Bench,
    engine: &matcher::Engine,
    table: &Table,
    n: usize,
    seed: u64,
    label: &str,
) {
    let mut extra = synth::truth::TruthGenerator::new(seed).records(n as u64 * 2 / 3 + 1);
    extra.truncate(n);
    for t in &mut extra {
        t.source_id = format!("bl{seed}-{}", t.source_id);
    }
    let before = Cpu::now();
    load(&table.store, &extra, 1).await;
    let written = before.spent();
    checkpoint(&table.pool).await;
    let used = engine.read_ahead_used();
    let before = Cpu::now();
    let started = Instant::now();
    let applied = matcher::service::drain(engine, &table.pool, bench.batch_size())
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    let matched = before.spent();
    println!(
        "incremental backlog of {} new records on {} records, {label}: {:.1} s ({:.0} records/s), {} persons created, {} records read ahead; \
         CPU per 1,000 records: written by the loader's write path {}, matched {} = {:.2}×",
        applied.changes,
        table.records.len(),
        took.as_secs_f64(),
        applied.changes as f64 / took.as_secs_f64(),
        applied.persons_created,
        engine.read_ahead_used() - used,
        written.per_thousand(n),
        matched.per_thousand(applied.changes as usize),
        matched.total() / written.total()
    );
}
