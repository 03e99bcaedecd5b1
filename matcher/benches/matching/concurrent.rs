//! Can the matcher binary keep up beside the loader's write path on one
//! machine? With `BENCH_CONCURRENT=N` (default 0: skipped): the loader's
//! write path (its `Store`, batches of 2,000) writes N new records alone,
//! then the matcher binary (a process of its own) drains them; then N more
//! are written while that matcher runs: both rates, the matcher's lag
//! (changes pending) when the writing ends, and the matcher's resident
//! memory (current and peak). With `BENCH_PACED=R1,R2,…` also: the writer
//! paced at R records/s for `BENCH_PACED_SECONDS` (default 20) while the
//! matcher runs ([`paced`]). At the end, how many of the matcher's large
//! batches took their pairs prepared while the batch before wrote (from
//! its log).

use std::time::{Duration, Instant};

use loader::store::Store;
use sqlx::PgPool;

use crate::support::{checkpoint, env_u64, load, new_records, pending, rss_of, Bench, Table};

pub async fn run(bench: &Bench, table: &Table, n: usize) {
    let records = new_records(31, 2 * n, "cc");
    let (alone, shared) = records.split_at(records.len() / 2);
    let (pool, store) = (&table.pool, &table.store);
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
    let mut matcher = testkit::ChildProcess::spawn(
        env!("CARGO_BIN_EXE_matcher"),
        &[],
        &bench.binary_env(&table.db),
    );
    let started = Instant::now();
    drained(pool).await;
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
    drained(pool).await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "concurrent: {} records written while the matcher ran: written in {:.1} s ({:.0} records/s); matcher lag when the writing ended: {} changes; all matched after {:.1} s ({:.0} records/s); matcher resident memory {:?} MiB (current, peak)",
        shared.len(),
        wrote,
        shared.len() as f64 / wrote,
        lag,
        took,
        shared.len() as f64 / took,
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
    // `BENCH_MATCHER_LOG=FILE` keeps the matcher binary's whole log.
    if let Ok(path) = std::env::var("BENCH_MATCHER_LOG") {
        std::fs::write(&path, &logs).expect("BENCH_MATCHER_LOG is writable");
    }
    report_batches(&logs);
    assert!(status.is_some_and(|s| s.success()), "{logs}");
}

async fn drained(pool: &PgPool) {
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The matcher's index build and its large batches, from its log; and
/// whether the two batches in flight held while the writer wrote: the
/// batches of 5,000 or more (their phases are logged) that took their
/// pairs prepared against those that computed them.
fn report_batches(logs: &str) {
    for line in logs.lines().filter(|l| {
        l.contains("blocking index built")
            || l.contains("audit written")
            || l.contains("phase=\"committed\"")
    }) {
        println!("concurrent: matcher log: {line}");
    }
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
}

/// `BENCH_PACED=R1,R2,…`: the loader's write path writes new records at R
/// records/s for `BENCH_PACED_SECONDS` (default 20) while the matcher
/// binary runs: does the matcher's lag (changes pending) stay bounded?
/// Prints the lag at each quarter of the window, the time to drain after
/// it, and the CPU each side used (this process = the writer, the matcher
/// binary, PostgreSQL).
async fn paced(pool: &PgPool, store: &Store, matcher: &testkit::ChildProcess, rate: u64) {
    // The loader's transactions under a sustained stream: full batches of
    // its default `loader.batch_size`.
    const CHUNK: usize = 2_000;
    let seconds = env_u64("BENCH_PACED_SECONDS", 20);
    let n = (rate * seconds) as usize;
    let records = new_records(rate, n, &format!("pc{rate}"));
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
    drained(pool).await;
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
