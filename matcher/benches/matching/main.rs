//! The matcher's benchmark (release build, real PostgreSQL), one module per
//! question, run in this order:
//!
//! * [`quality`]: how good are the persons, matched incrementally as one
//!   backlog, and does a full re-match agree? (`BENCH_QUALITY_PERSONS`,
//!   default 67,000 persons ≈ 100,000 records; 0 skips it.)
//!
//! * [`events`]: are the person events of a load on the bus exactly once,
//!   in commit order, and how long after the matcher's commit?
//!   (`BENCH_EVENTS=N`, in a fresh database of its own; skipped by
//!   default: `BENCH_QUALITY_PERSONS=0 BENCH_RECORDS=0 BENCH_EVENTS=N` runs
//!   it alone.)
//!
//! The others run on one table of `BENCH_RECORDS` (default 1,000,000; 0
//! skips them all) generated records, loaded through the loader's store:
//!
//! * [`training`]: how long does training the model on the table take?
//!   (With the model only: the sections after it use the trained model.)
//! * [`rematch`]: how long does a full re-match of the table take?
//! * [`index`]: how long does an instance take to build its blocking
//!   index, and how much memory does it hold?
//! * [`backlog`]: how fast is a backlog of new records worked off?
//!   (`BENCH_BACKLOG`, default 50,000.)
//! * [`latency`]: how long after the loader's commit does a record have
//!   its person when the service is idle?
//! * [`concurrent`]: does the matcher binary keep up beside the loader's
//!   write path, flat out and paced? (`BENCH_CONCURRENT=N`,
//!   `BENCH_PACED=R1,R2,…`; skipped by default; `BENCH_MATCHER_LOG=FILE`
//!   keeps the matcher binary's whole log.)
//! * [`pipeline`]: does it keep up with the loader's service draining the
//!   bus, and how soon after the load is everything matched?
//!   (`BENCH_PIPELINE=N`; skipped by default.)
//! * [`floor`]: is the least the matcher must write for new records
//!   cheaper than the loader's write of them? (`BENCH_FLOOR`, default
//!   20,000; its records stay unmatched.)
//! * [`mass_delete`]: how long does a mass delete take to match, and the
//!   slowest batch? (`BENCH_MASS_DELETE=N`; skipped by default; last: it
//!   empties the table.)
//!
//! Every section runs with the default scoring (the model);
//! `BENCH_SCORING=rules` runs them with `matcher.scoring = "rules"`.
//!
//! Phase timings (`phase` log lines) are printed for the re-matches and for
//! batches of 5,000 records or more; `RUST_LOG=matcher=debug` shows them
//! for every batch.
//!
//! `cargo bench -p matcher --bench matching`

mod backlog;
mod concurrent;
mod events;
mod floor;
mod index;
mod latency;
mod mass_delete;
mod pipeline;
mod quality;
mod rematch;
mod support;
mod training;

use support::{env_u64, Bench, Table};

/// The matcher binary's allocator (`src/main.rs`), so that the in-process
/// sections measure what the service runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // Measured on the deployment's recommended PostgreSQL settings.
    let _postgres = testkit::postgres::benchmark_server();
    let bench = Bench::from_env();
    etl_runtime::telemetry::init(&bench.settings.log);
    println!("scoring: {}", bench.scoring());

    let persons = env_u64("BENCH_QUALITY_PERSONS", 67_000);
    if persons > 0 {
        quality::run(&bench, persons).await;
    }

    let events = env_u64("BENCH_EVENTS", 0) as usize;
    if events > 0 {
        events::run(&bench, events).await;
    }

    let n = env_u64("BENCH_RECORDS", 1_000_000);
    if n == 0 {
        return;
    }
    let table = Table::load(n).await;
    if bench.model() {
        training::train(&table.pool, table.records.len()).await;
    }
    rematch::run(&bench, &table).await;
    index::run(&bench, &table).await;
    backlog::run(&bench, &table).await;
    latency::run(&bench, &table).await;
    let concurrent = env_u64("BENCH_CONCURRENT", 0) as usize;
    if concurrent > 0 {
        concurrent::run(&bench, &table, concurrent).await;
    }
    // Before the floor, which leaves its records unmatched.
    let pipeline = env_u64("BENCH_PIPELINE", 0) as usize;
    if pipeline > 0 {
        pipeline::run(&bench, &table, pipeline).await;
    }
    let floor = env_u64("BENCH_FLOOR", 20_000) as usize;
    if floor > 0 {
        floor::run(&table, floor).await;
    }
    let deletes = env_u64("BENCH_MASS_DELETE", 0) as usize;
    if deletes > 0 {
        mass_delete::run(&bench, &table, deletes).await;
    }
}
