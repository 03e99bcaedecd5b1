//! Benchmark: initial load of `BENCH_ROWS` (default 1,000,000) CLIENTS rows
//! from Firebird onto the bus, beside a plain rsfbclient read of the same
//! rows in the same run (the read ceiling), the extractor's peak RSS and
//! CPU time (and nats-server's and Firebird's during the load), and the
//! latency of a delta pass carrying 1,000 changes. `BENCH_BATCH_RECORDS`
//! (default 500) sets `extractor.batch_records`; 1 is one message per row.
//!
//!     cargo bench -p infoclinica-extractor --bench initial_load
//!
//! The bench database (`etl-tests/bench-infoclinica-<rows>.fdb`, generated
//! patients, change log installed after the rows) is created on first run
//! and reused. The extractor runs as its release binary in a child process
//! so that its peak RSS (VmHWM) is its own; the stream is the bench's own
//! and deleted at the end.

use std::time::{Duration, Instant};

use infoclinica_extractor::mapping::Mapper;
use infoclinica_extractor::sample;
use infoclinica_extractor::settings::{Charset, DatabaseSettings};
use rsfbclient::prelude::*;
use rsfbclient::RawValue;
use secrecy::SecretString;

fn bench_db(rows: u64) -> DatabaseSettings {
    let mut db = DatabaseSettings {
        name: "bench".into(),
        database: format!("/var/lib/firebird/3.0/data/etl-tests/bench-infoclinica-{rows}.fdb"),
        user: "ETL_TEST".into(),
        password: SecretString::from("etl_test"),
        charset: Charset::Win1251,
        ..Default::default()
    };
    for (filial, unit) in sample::SAMPLE_FILIALS {
        db.business_units
            .insert(filial.to_string(), unit.to_string());
    }
    db.table.snils = Some(sample::SNILS_COLUMN.into());
    db.table.oms_policy = Some(sample::OMS_COLUMN.into());
    db
}

fn count_rows(db: &DatabaseSettings) -> Option<i64> {
    let mut conn = infoclinica_extractor::firebird::builder(db)
        .connect()
        .ok()?;
    let (n,): (i64,) = conn
        .query_first("SELECT COUNT(*) FROM CLIENTS", ())
        .ok()??;
    Some(n)
}

fn ensure_database(db: &DatabaseSettings, rows: u64) {
    if count_rows(db) == Some(rows as i64) {
        println!("bench database with {rows} rows exists");
        return;
    }
    println!("creating the bench database with {rows} rows (once)…");
    let started = Instant::now();
    let mut conn = sample::create_database(db, false).expect("create bench database");
    sample::insert_patients(&mut conn, 11, 0..rows).expect("insert patients");
    sample::install_changelog(&mut conn).expect("install change log");
    conn.close().unwrap();
    println!("  created in {:.1} s", started.elapsed().as_secs_f64());
}

/// The read ceiling: the same SELECT list, the same keyset pages, raw rows
/// streamed and dropped (no decoding, no mapping, no publishing).
fn plain_read(db: &DatabaseSettings, page_size: usize) -> (u64, Duration) {
    let mapper = Mapper::new(db);
    let mut conn = infoclinica_extractor::firebird::builder(db)
        .connect()
        .unwrap();
    let started = Instant::now();
    let mut rows = 0u64;
    let mut after = 0i64;
    loop {
        let mut n = 0;
        conn.stream_raw(&mapper.page_sql(after, page_size), |row: &[RawValue]| {
            if let Some(RawValue::Integer(p)) = row.first() {
                after = *p;
            }
            n += 1;
            Ok(())
        })
        .unwrap();
        rows += n;
        if n == 0 {
            break;
        }
    }
    (rows, started.elapsed())
}

/// What a reconciliation pass scans: every key and its row version.
fn key_scan(db: &DatabaseSettings) -> (u64, Duration) {
    let mut conn = infoclinica_extractor::firebird::builder(db)
        .connect()
        .unwrap();
    let started = Instant::now();
    let mut rows = 0u64;
    conn.stream_raw("SELECT PCODE, RDB$RECORD_VERSION FROM CLIENTS", |_| {
        rows += 1;
        Ok(())
    })
    .unwrap();
    (rows, started.elapsed())
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) of the processes named `comm` (e.g.
/// `nats-server`, `firebird`), summed: read before and after a measurement.
fn cpu_seconds_of(comm: &str) -> f64 {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let same = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == comm);
        if let (true, Ok(stat)) = (same, std::fs::read_to_string(path.join("stat"))) {
            ticks += stat_ticks(&stat, 13) + stat_ticks(&stat, 14);
        }
    }
    ticks as f64 / 100.0
}

/// Field `n` (0-based, after the command) of a `/proc/<pid>/stat` line.
fn stat_ticks(stat: &str, n: usize) -> u64 {
    let after_comm = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    after_comm
        .split_whitespace()
        .nth(n - 2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    (stat_ticks(&stat, 15) + stat_ticks(&stat, 16)) as f64 / 100.0
}

fn config(db: &DatabaseSettings, stream: &str, prefix: &str, bucket: &str, page: usize) -> String {
    format!(
        r#"
[nats]
url = "{nats}"
[stream]
name = "{stream}"
subject_prefix = "{prefix}"
max_age = "1h"
[log]
level = "warn,infoclinica_extractor=info"
[extractor]
checkpoint_bucket = "{bucket}"
page_size = {page}
batch_records = {batch_records}
[[databases]]
name = "bench"
database = "{path}"
user = "ETL_TEST"
password = "etl_test"
charset = "WIN1251"
business_units = {{ "1" = "main", "3" = "branch-1", "7" = "branch-7" }}
[databases.table]
snils = "SNILS"
oms_policy = "POLIS"
"#,
        nats = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        path = db.database,
        batch_records = std::env::var("BENCH_BATCH_RECORDS").unwrap_or_else(|_| "500".into()),
    )
}

/// Runs the extractor binary with `args`; returns its wall time and peak RSS.
fn run_extractor(config: &std::path::Path, args: &[&str]) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_infoclinica-extractor"))
        .arg("--config")
        .arg(config)
        .args(args)
        .spawn()
        .expect("spawn extractor");
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "extractor failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (started.elapsed(), peak)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let page_size: usize = std::env::var("BENCH_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let db = bench_db(rows);
    ensure_database(&db, rows);

    // Warm the server's page cache the same way for both measurements.
    let _ = plain_read(&db, page_size);
    let (read_rows, read_time) = plain_read(&db, page_size);
    assert_eq!(read_rows, rows);
    let ceiling = read_rows as f64 / read_time.as_secs_f64();
    let (scanned, scan_time) = key_scan(&db);
    assert_eq!(scanned, rows);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = format!("bench_ic_{}", std::process::id());
    let stream_name = id.to_uppercase();
    let bucket = format!("{id}_ck");
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.toml");
    std::fs::write(
        &config_path,
        config(&db, &stream_name, &id, &bucket, page_size),
    )
    .unwrap();

    let cpu_before = (
        children_cpu_seconds(),
        cpu_seconds_of("nats-server"),
        cpu_seconds_of("firebird"),
    );
    let (load_time, peak_kib) = run_extractor(&config_path, &["--initial-load"]);
    let load_rate = rows as f64 / load_time.as_secs_f64();
    let cpu = (
        children_cpu_seconds() - cpu_before.0,
        cpu_seconds_of("nats-server") - cpu_before.1,
        cpu_seconds_of("firebird") - cpu_before.2,
    );

    let js = runtime.block_on(async {
        let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
        async_nats::jetstream::new(client)
    });
    let stored = runtime.block_on(async {
        let mut stream = js.get_stream(&stream_name).await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    // Batch messages: the checkpoint counts the rows acknowledged.
    let checkpointed = runtime.block_on(async {
        let kv = js.get_key_value(&bucket).await.unwrap();
        let value = kv.get("bench").await.unwrap().expect("a checkpoint");
        let state: serde_json::Value = serde_json::from_slice(&value).unwrap();
        state["initial"]["rows"].as_u64().unwrap()
    });
    assert_eq!(checkpointed, rows, "every row on the bus once");

    // Delta: 1,000 changes committed in one transaction, then one pass.
    let mut writer = sample::connect_writer(&db).unwrap();
    // A fresh, empty change log (dropping it is instant; deleting a big one
    // would leave record versions for the measured statements to collect).
    for stmt in sample::statements(include_str!(
        "../../../deploy/firebird/uninstall-changelog.sql"
    )) {
        let _ = writer.execute(&stmt, ());
    }
    writer.close().unwrap();
    let mut writer = sample::connect_writer(&db).unwrap();
    sample::install_changelog(&mut writer).unwrap();
    let tag = std::process::id() % 10_000;
    writer
        .execute(
            &format!(
                "UPDATE CLIENTS SET PHONE3 = '+7 900 {tag:04} ' || PCODE \
                 WHERE PCODE BETWEEN 1001 AND 2000"
            ),
            (),
        )
        .unwrap();
    // Auto-committed when execute returned.
    let committed = Instant::now();
    let (pass_time, _) = run_extractor(&config_path, &["--delta-sync"]);
    let latency = committed.elapsed();
    let (log_left,): (i64,) = writer
        .query_first(
            "SELECT COUNT(*) FROM ETL_CLIENTS_LOG WHERE PROCESSED = 'N'",
            (),
        )
        .unwrap()
        .unwrap();
    assert_eq!(log_left, 0);
    writer.close().unwrap();
    let after_delta = runtime.block_on(async {
        let mut stream = js.get_stream(&stream_name).await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(after_delta, stored + 1000, "one message per change");

    runtime.block_on(async {
        let _ = js.delete_stream(&stream_name).await;
        let _ = js.delete_key_value(&bucket).await;
    });

    println!();
    println!("| rows | plain read (ceiling) | initial load onto the bus | load / ceiling | extractor peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {rows} | {:.1} s, {:.0} rows/s | {:.1} s, {:.0} rows/s | {:.0} % | {:.0} MiB |",
        read_time.as_secs_f64(),
        ceiling,
        load_time.as_secs_f64(),
        load_rate,
        100.0 * load_rate / ceiling,
        peak_kib as f64 / 1024.0,
    );
    println!();
    println!(
        "initial load: {stored} messages ({:.0} rows each); CPU seconds: extractor {:.1}, \
         nats-server {:.1}, firebird {:.1}",
        rows as f64 / stored as f64,
        cpu.0,
        cpu.1,
        cpu.2
    );
    println!(
        "delta pass, 1,000 changes: {:.0} ms from commit to acked (process start, connect, \
         pass, exit: {:.0} ms)",
        latency.as_secs_f64() * 1000.0,
        pass_time.as_secs_f64() * 1000.0
    );
    println!(
        "reconciliation key scan (PCODE, RDB$RECORD_VERSION) of {rows} rows: {:.2} s",
        scan_time.as_secs_f64()
    );
}
