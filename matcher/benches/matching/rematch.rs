//! How long does a full re-match of the table take (`matcher --rematch`,
//! after a rule change or a bulk load): first with everything to write,
//! then again with nothing changed.

use std::time::Instant;

use crate::support::{Bench, Table};

pub async fn run(bench: &Bench, table: &Table) {
    let started = Instant::now();
    let applied = bench.engine.rematch_all(&table.pool).await.unwrap();
    println!(
        "full re-match of {} records (first run, everything written): {:.1} s; {} persons, {} review items",
        applied.records,
        started.elapsed().as_secs_f64(),
        applied.persons_created,
        applied.reviews_opened
    );
    let started = Instant::now();
    let applied = bench.engine.rematch_all(&table.pool).await.unwrap();
    println!(
        "full re-match of {} records (again, nothing changed): {:.1} s, {} moved",
        applied.records,
        started.elapsed().as_secs_f64(),
        applied.moved
    );
}
