//! How long does an instance that becomes the active one take to build
//! its blocking index from the table, and how much memory does it hold?
//! Time, entries, estimated size and the growth of this process's
//! resident memory.

use std::time::Instant;

use crate::support::{rss_mib, Bench, Table};

pub async fn run(bench: &Bench, table: &Table) {
    let rss = rss_mib();
    let started = Instant::now();
    bench.engine.prepare_index(&table.pool).await.unwrap();
    let (recs, keys, bytes) = bench.engine.index_size().await;
    println!(
        "blocking index built from {} records: {:.1} s; {} records, {} distinct keys, ~{} MiB estimated; resident memory {} -> {} MiB",
        table.records.len(),
        started.elapsed().as_secs_f64(),
        recs,
        keys,
        bytes >> 20,
        rss,
        rss_mib()
    );
}
