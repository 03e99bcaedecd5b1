//! Drain benchmark: how fast the loader binary empties a pre-filled stream
//! into PostgreSQL, against the server's own ingest ceiling (`psql \copy`).
//!
//! ```text
//! cargo bench -p loader --bench drain
//! BENCH_RECORDS=100000 cargo bench -p loader --bench drain
//! BENCH_LOADER_ENV="ETL__LOADER__BATCH_SIZE=5000,ETL__LOADER__WRITERS=2;ETL__LOADER__WRITERS=3" \
//!     cargo bench -p loader --bench drain
//! ```
//!
//! * `BENCH_RECORDS`: records published (default 1 000 000).
//! * `BENCH_LOADER_ENV`: loader variants to run after the default settings,
//!   `;`-separated; each a `,`-separated list of `KEY=VALUE` environment
//!   overrides (`ETL__SECTION__KEY`). Every variant drains the same stream
//!   through its own durable consumer into a fresh database.
//! * `BENCH_SKIP_DEFAULT=1`: run only the `BENCH_LOADER_ENV` variants.
//! * `BENCH_PUBLISH_WINDOW`: publish acks kept in flight (default 4096).
//! * `BENCH_BATCH_RECORDS`: records per bus message (default 1: one message
//!   per record, as qMS publishes; 500 is what the Infoclinica initial load
//!   sends, `proto::batch`), to measure the loader's speed and memory with
//!   batch messages.
//! * `BENCH_TIMEOUT_SECS`: longest drain of one variant (default 1800).
//!
//! The stream is published once; the database, stream and CSV file are
//! removed at the end, also when a step fails. Prints a Markdown table (also
//! written to `target/bench-drain.md`). Targets (loader ≥ 50 % of the
//! `\copy` rate, peak RSS < 100 MiB) are reported as PASS/MISS, never
//! asserted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use sqlx::{Connection, PgConnection, PgPool};
use testkit::ChildProcess;

const SOURCE: &str = "qms";
const TARGET_SHARE: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 100.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// What must be removed at the end, whatever happened.
#[derive(Default)]
struct Cleanup {
    databases: Vec<DatabaseSettings>,
    stream: Option<String>,
    files: Vec<PathBuf>,
}

fn main() {
    // Measured on the deployment's recommended PostgreSQL settings.
    let postgres = testkit::postgres::benchmark_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let outcome = runtime.block_on({
        let cleanup = cleanup.clone();
        // A panic inside the task (testkit helpers use `expect`) still lets us clean up.
        async move { tokio::spawn(bench(cleanup)).await }
    });
    runtime.block_on(clean_up(&cleanup));
    // `exit` below skips destructors: stop the cluster first.
    drop(postgres);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            eprintln!("bench failed: {error:#}");
            std::process::exit(1);
        }
        Err(panic) => {
            eprintln!("bench panicked: {panic}");
            std::process::exit(1);
        }
    }
}

async fn clean_up(cleanup: &Mutex<Cleanup>) {
    let Cleanup {
        databases,
        stream,
        files,
    } = std::mem::take(&mut *cleanup.lock().unwrap());
    for file in files {
        let _ = std::fs::remove_file(&file);
    }
    if let Some(name) = stream {
        match async_nats::connect(testkit::nats_url()).await {
            Ok(client) => {
                if let Err(error) = jetstream::new(client).delete_stream(&name).await {
                    eprintln!("cleanup: deleting stream {name}: {error}");
                }
            }
            Err(error) => eprintln!("cleanup: connecting to NATS: {error}"),
        }
    }
    for db in databases {
        if let Err(error) = drop_database(&db).await {
            eprintln!("cleanup: dropping database {}: {error:#}", db.database_name);
        }
    }
}

async fn drop_database(db: &DatabaseSettings) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&db.without_db().database("postgres")).await?;
    let sql = format!(
        r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
        db.database_name
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// One loader configuration: a label and its environment overrides.
struct Variant {
    label: String,
    env: Vec<(String, String)>,
}

fn variants() -> anyhow::Result<Vec<Variant>> {
    let mut out = Vec::new();
    if std::env::var("BENCH_SKIP_DEFAULT").map_or(true, |v| v.is_empty() || v == "0") {
        out.push(Variant {
            label: "default".into(),
            env: Vec::new(),
        });
    }
    if let Ok(spec) = std::env::var("BENCH_LOADER_ENV") {
        for variant in spec.split(';').map(str::trim).filter(|v| !v.is_empty()) {
            let mut env = Vec::new();
            for pair in variant.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("not KEY=VALUE: {pair:?}"))?;
                env.push((k.trim().to_string(), v.trim().to_string()));
            }
            let label = env
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={v}",
                        k.strip_prefix("ETL__LOADER__").unwrap_or(k).to_lowercase()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Variant { label, env });
        }
    }
    if out.is_empty() {
        bail!("no variant to run");
    }
    Ok(out)
}

/// What one loader run measured.
struct DrainResult {
    label: String,
    seconds: f64,
    rows: i64,
    /// From the loader's creation of the consumer to drained (excludes
    /// process start, migrations and connecting).
    steady_seconds: Option<f64>,
    peak_rss_mib: f64,
    max_sampled_rss_mib: f64,
    cpu: CpuShares,
    wal_bytes: Option<i64>,
    exit: String,
}

/// CPU used during a phase, in % of one core (200 % = both cores busy).
#[derive(Default, Clone, Copy)]
struct CpuShares {
    loader: f64,
    postgres: f64,
    nats: f64,
    psql: f64,
    system_busy: f64,
    system_iowait: f64,
}

struct Ceiling {
    seconds: f64,
    rows: i64,
    cpu: CpuShares,
    wal_bytes: Option<i64>,
}

async fn bench(cleanup: Arc<Mutex<Cleanup>>) -> anyhow::Result<()> {
    let records: u64 = env_or("BENCH_RECORDS", 1_000_000);
    let window: usize = env_or("BENCH_PUBLISH_WINDOW", 4096);
    let batch_records: usize = env_or("BENCH_BATCH_RECORDS", 1);
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 1800));
    let variants = variants()?;
    let loader_bin = env!("CARGO_BIN_EXE_loader");
    eprintln!("drain bench: {records} records, {batch_records} per message, loader {loader_bin}");

    // 1. The stream, pre-filled.
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    cleanup.lock().unwrap().stream = Some(stream.name.clone());
    let (messages, stored, publish_secs) =
        publish(&js, &stream, records, window, batch_records).await?;
    let publish_rate = records as f64 / publish_secs;
    eprintln!(
        "published {records} records in {messages} messages ({stored} stored) in {publish_secs:.1} s: {publish_rate:.0} records/s"
    );
    let info = js.get_stream(&stream.name).await?.get_info().await?;
    eprintln!(
        "stream holds {} messages, {:.1} MiB",
        info.state.messages,
        info.state.bytes as f64 / MIB
    );
    if info.state.messages != messages {
        bail!(
            "the stream holds {} messages, not {messages} (refused or deduplicated?)",
            info.state.messages
        );
    }

    // 2. + 3. Each variant drains into its own database; the ceiling is
    // measured on the first one's rows.
    let mut results = Vec::new();
    let mut ceiling = None;
    for (i, variant) in variants.iter().enumerate() {
        let db = testkit::fresh_database().await;
        cleanup.lock().unwrap().databases.push(db.clone());
        let consumer = format!("bench_{i}");
        eprintln!(
            "\n== variant {} ({}), consumer {consumer}, database {}",
            i + 1,
            variant.label,
            db.database_name
        );
        let result = drain(
            &js, &stream, &db, &consumer, variant, records, messages, timeout, loader_bin,
        )
        .await?;
        eprintln!(
            "drained {} rows in {:.1} s ({:.0} rows/s; steady {}), peak RSS {:.1} MiB, CPU loader {:.0}% postgres {:.0}% nats {:.0}% (system busy {:.0}%, iowait {:.0}%), WAL {}, exit {}",
            result.rows,
            result.seconds,
            result.rows as f64 / result.seconds,
            result.steady_seconds.map_or("?".into(), |s| format!("{:.0} rows/s", result.rows as f64 / s)),
            result.peak_rss_mib,
            result.cpu.loader,
            result.cpu.postgres,
            result.cpu.nats,
            result.cpu.system_busy,
            result.cpu.system_iowait,
            result.wal_bytes.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / MIB)),
            result.exit,
        );
        if ceiling.is_none() {
            let c = copy_ceiling(&db, &cleanup).await?;
            eprintln!(
                "ceiling: \\copy {} rows in {:.1} s ({:.0} rows/s), CPU postgres {:.0}% psql {:.0}% (system busy {:.0}%, iowait {:.0}%), WAL {}",
                c.rows,
                c.seconds,
                c.rows as f64 / c.seconds,
                c.cpu.postgres,
                c.cpu.psql,
                c.cpu.system_busy,
                c.cpu.system_iowait,
                c.wal_bytes.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / MIB)),
            );
            ceiling = Some(c);
        }
        // Free the disk before the next variant.
        drop_database(&db).await?;
        cleanup
            .lock()
            .unwrap()
            .databases
            .retain(|d| d.database_name != db.database_name);
        results.push(result);
    }

    // 4. The report.
    let ceiling = ceiling.expect("at least one variant");
    let table = report(records, batch_records, publish_rate, &results, &ceiling);
    println!("\n{table}");
    let path = report_path();
    match std::fs::write(&path, &table) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(error) => eprintln!("cannot write {}: {error}", path.display()),
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

/// `target/bench-drain.md`: the loader binary lives in `target/release/`.
fn report_path() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_loader"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "target".into());
    target.join("bench-drain.md")
}

/// Publishes `n` generated records, `batch_records` per message, with up to
/// `window` acks in flight; returns the messages sent, how many the server
/// stored and the seconds it took.
async fn publish(
    js: &jetstream::Context,
    stream: &StreamSettings,
    n: u64,
    window: usize,
    batch_records: usize,
) -> anyhow::Result<(u64, u64, f64)> {
    let generator = synth::Generator::new(42);
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let start = Instant::now();
    let mut publisher = proto::bus::Publisher::new(js, stream, window);
    let mut batch = proto::batch::BatchBuilder::new(
        SOURCE,
        proto::batch::BatchLimits {
            max_records: batch_records,
            ..Default::default()
        },
    );
    let mut messages = 0u64;
    let mut last_report = Instant::now();
    for i in 0..n {
        let patient = generator.patient(i);
        if batch_records <= 1 {
            publisher
                .send(&patient.into_envelope(SOURCE, 1, at))
                .await
                .context("publish")?;
            messages += 1;
        } else if let Some(message) = batch.push_upsert(&patient.source_id, 1, at, &patient.record)
        {
            publisher
                .send_encoded(SOURCE, message)
                .await
                .context("publish")?;
            messages += 1;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  publishing: {i} sent, {:.0} records/s",
                i as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(message) = batch.finish() {
        publisher
            .send_encoded(SOURCE, message)
            .await
            .context("publish")?;
        messages += 1;
    }
    let proto::bus::Published {
        stored, duplicates, ..
    } = publisher.settle().await.context("publish ack")?;
    let secs = start.elapsed().as_secs_f64();
    if duplicates > 0 {
        eprintln!("  {duplicates} publishes were dropped as duplicates");
    }
    Ok((messages, stored, secs))
}

#[allow(clippy::too_many_arguments)]
async fn drain(
    js: &jetstream::Context,
    stream: &StreamSettings,
    db: &DatabaseSettings,
    consumer: &str,
    variant: &Variant,
    records: u64,
    messages: u64,
    timeout: Duration,
    loader_bin: &str,
) -> anyhow::Result<DrainResult> {
    let pool = testkit::pool(db).await;
    let mut env = testkit::service_env(db, stream);
    env.push(("ETL__LOG__LEVEL".into(), "warn".into()));
    env.push(("ETL__LOADER__CONSUMER".into(), consumer.into()));
    env.extend(variant.env.iter().cloned());
    let js_stream = js.get_stream(&stream.name).await?;
    let wal_before = wal_lsn(&pool).await;
    let cpu_before = CpuSnapshot::take(None);

    let start = Instant::now();
    let mut loader = ChildProcess::spawn(loader_bin, &[], &env);
    let pid = loader.pid();
    let memory = MemorySampler::start(pid, Duration::from_millis(100));
    let cpu_before = cpu_before.with_pid(pid);

    let mut consumer_seen_at = None;
    let mut last_report = Instant::now();
    let drained_at = loop {
        if start.elapsed() > timeout {
            eprintln!("loader logs:\n{}", loader.logs());
            bail!("not drained after {timeout:?}");
        }
        if let Some(status) = exited(&mut loader) {
            bail!("the loader exited early ({status}):\n{}", loader.logs());
        }
        if let Ok(info) = js_stream.consumer_info(consumer).await {
            consumer_seen_at.get_or_insert_with(Instant::now);
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= messages
            {
                break Instant::now();
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let acked = info.ack_floor.consumer_sequence;
                eprintln!(
                    "  {:>5.0} s: messages acked ≥ {acked}, pending {}, ack pending {}, {:.0} messages/s so far, RSS {:.1} MiB",
                    start.elapsed().as_secs_f64(),
                    info.num_pending,
                    info.num_ack_pending,
                    acked as f64 / start.elapsed().as_secs_f64(),
                    memory.current_mib(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let seconds = (drained_at - start).as_secs_f64();
    let cpu = cpu_before.shares_until(&CpuSnapshot::take(Some(pid)));
    let (peak_rss_mib, max_sampled_rss_mib) = memory.stop();
    let wal_bytes = match (wal_before, wal_lsn(&pool).await) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rows = testkit::count_records(&pool).await;
    if rows as u64 != records {
        eprintln!("WARNING: source_records holds {rows} rows, expected {records}");
    }
    let exit = match loader.terminate(Duration::from_secs(60)) {
        Some(status) if status.success() => "0 after SIGTERM".to_string(),
        Some(status) => format!("{status} after SIGTERM"),
        None => "killed (no exit within 60 s of SIGTERM)".into(),
    };
    let logs = loader.logs();
    if !logs.trim().is_empty() {
        eprintln!("loader logs (level warn):\n{}", tail(&logs, 20));
    }
    pool.close().await;
    Ok(DrainResult {
        label: variant.label.clone(),
        seconds,
        rows,
        steady_seconds: consumer_seen_at.map(|at| (drained_at - at).as_secs_f64()),
        peak_rss_mib,
        max_sampled_rss_mib,
        cpu,
        wal_bytes,
        exit,
    })
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn exited(child: &mut ChildProcess) -> Option<String> {
    // `ChildProcess` does not expose try_wait; a zombie's /proc state is Z.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid())).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (state == "Z" || state == "X").then(|| "exited".to_string())
}

async fn wal_lsn(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar::<_, i64>("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
        .fetch_one(pool)
        .await
        .ok()
}

/// Exports the loaded rows and times `\copy` of them into an empty table of
/// the same shape (primary key included).
async fn copy_ceiling(db: &DatabaseSettings, cleanup: &Mutex<Cleanup>) -> anyhow::Result<Ceiling> {
    let csv = std::env::temp_dir().join(format!("{}.csv", testkit::unique("bench_drain")));
    cleanup.lock().unwrap().files.push(csv.clone());
    let csv_str = csv.to_str().context("temp path is UTF-8")?.to_string();

    let export = Instant::now();
    psql(db, &format!("\\copy source_records TO '{csv_str}' CSV"))?;
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "exported to {csv_str} ({:.0} MiB) in {:.1} s",
        size as f64 / MIB,
        export.elapsed().as_secs_f64()
    );
    psql(
        db,
        "CREATE TABLE ceiling (LIKE source_records INCLUDING ALL)",
    )?;
    // Let the checkpointer and autovacuum of the load settle a little.
    psql(db, "CHECKPOINT")?;

    let pool = testkit::pool(db).await;
    let wal_before = wal_lsn(&pool).await;
    let cpu_before = CpuSnapshot::take(None);
    let start = Instant::now();
    let output = psql(db, &format!("\\copy ceiling FROM '{csv_str}' CSV"))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_before.shares_until(&CpuSnapshot::take(None));
    let wal_bytes = match (wal_before, wal_lsn(&pool).await) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ceiling")
        .fetch_one(&pool)
        .await?;
    eprintln!("  psql: {}", output.trim());
    pool.close().await;
    let _ = std::fs::remove_file(&csv);
    Ok(Ceiling {
        seconds,
        rows,
        cpu,
        wal_bytes,
    })
}

/// Runs one psql command against `db`; its stdout.
fn psql(db: &DatabaseSettings, command: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &db.host,
            "-p",
            &db.port.to_string(),
            "-U",
            &db.username,
        ])
        .args(["-d", &db.database_name, "-c", command])
        .output()
        .context("running psql")?;
    if !output.status.success() {
        bail!(
            "psql {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn report(
    records: u64,
    batch_records: usize,
    publish_rate: f64,
    results: &[DrainResult],
    ceiling: &Ceiling,
) -> String {
    let ceiling_rate = ceiling.rows as f64 / ceiling.seconds;
    let mut t = String::new();
    let _ = writeln!(t, "## Loader drain benchmark\n");
    let _ = writeln!(
        t,
        "| records | records/message | publish records/s | loader settings | drain s | rows/s | peak RSS MiB | \\copy s | \\copy rows/s | share of ceiling | verdict |"
    );
    let _ = writeln!(t, "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        let rate = r.rows as f64 / r.seconds;
        let share = 100.0 * rate / ceiling_rate;
        let verdict = format!(
            "share {} / RSS {}",
            if share >= TARGET_SHARE {
                "PASS"
            } else {
                "MISS"
            },
            if r.peak_rss_mib < TARGET_RSS_MIB {
                "PASS"
            } else {
                "MISS"
            },
        );
        let _ = writeln!(
            t,
            "| {records} | {batch_records} | {publish_rate:.0} | {} | {:.1} | {rate:.0} | {:.1} | {:.1} | {ceiling_rate:.0} | {share:.1} % | {verdict} |",
            r.label, r.seconds, r.peak_rss_mib, ceiling.seconds,
        );
    }
    let _ = writeln!(t, "\nTargets: loader ≥ {TARGET_SHARE:.0} % of the `\\copy` rate, peak RSS < {TARGET_RSS_MIB:.0} MiB.\n");
    let _ = writeln!(
        t,
        "CPU during each phase, % of one core (the machine has {} cores):\n",
        cores()
    );
    let _ = writeln!(t, "| phase | loader | postgres | nats-server | psql | system busy | iowait | WAL MiB | rows/s after consumer created | max sampled VmRSS MiB | loader exit |");
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let wal = |w: Option<i64>| w.map_or("?".into(), |b| format!("{:.0}", b as f64 / MIB));
    for r in results {
        let _ = writeln!(
            t,
            "| loader ({}) | {:.0} | {:.0} | {:.0} | – | {:.0} | {:.0} | {} | {} | {:.1} | {} |",
            r.label,
            r.cpu.loader,
            r.cpu.postgres,
            r.cpu.nats,
            r.cpu.system_busy,
            r.cpu.system_iowait,
            wal(r.wal_bytes),
            r.steady_seconds
                .map_or("?".into(), |s| format!("{:.0}", r.rows as f64 / s)),
            r.max_sampled_rss_mib,
            r.exit,
        );
    }
    let _ = writeln!(
        t,
        "| psql \\copy | – | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | – | – | – |",
        ceiling.cpu.postgres,
        ceiling.cpu.nats,
        ceiling.cpu.psql,
        ceiling.cpu.system_busy,
        ceiling.cpu.system_iowait,
        wal(ceiling.wal_bytes),
    );
    t
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Samples a process's VmRSS and reads its VmHWM (peak RSS) from
/// /proc/<pid>/status.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    current_kib: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl MemorySampler {
    fn start(pid: i32, every: Duration) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let current_kib = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, current_kib) = (stop.clone(), current_kib.clone());
            move || {
                let (mut hwm, mut max_rss) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    if let Some((rss, peak)) = read_status(pid) {
                        current_kib.store(rss, Ordering::Relaxed);
                        max_rss = max_rss.max(rss);
                        hwm = hwm.max(peak);
                    }
                    std::thread::sleep(every);
                }
                if let Some((rss, peak)) = read_status(pid) {
                    max_rss = max_rss.max(rss);
                    hwm = hwm.max(peak);
                }
                (hwm, max_rss)
            }
        });
        MemorySampler {
            stop,
            current_kib,
            thread,
        }
    }

    fn current_mib(&self) -> f64 {
        self.current_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// (VmHWM, largest sampled VmRSS) in MiB.
    fn stop(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let (hwm, rss) = self.thread.join().unwrap_or((0, 0));
        (hwm as f64 / 1024.0, rss as f64 / 1024.0)
    }
}

/// (VmRSS, VmHWM) in KiB.
fn read_status(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time of the processes of interest and of the whole machine.
struct CpuSnapshot {
    at: Instant,
    /// Every process's CPU time.
    procs: Vec<testkit::cpu::ProcessTime>,
    /// The loader's pid, once it runs.
    loader: Option<i32>,
    /// /proc/stat: (busy ticks, iowait ticks, total ticks).
    system: (u64, u64, u64),
    /// Clock ticks of our own waited-for children (psql).
    children: u64,
}

impl CpuSnapshot {
    fn take(loader: Option<i32>) -> CpuSnapshot {
        let procs = testkit::cpu::processes();
        let system = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?;
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal (guest is in user).
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0);
                let iowait = v.get(4).copied().unwrap_or(0);
                Some((total - idle - iowait, iowait, total))
            })
            .unwrap_or((0, 0, 0));
        // psql runs as our child and is gone at the end of the phase: its
        // time shows in our children's times (cutime, cstime) once waited for.
        let children = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let fields: Vec<u64> = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .skip(13)
                    .take(2)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                Some(fields.iter().sum())
            })
            .unwrap_or(0);
        CpuSnapshot {
            at: Instant::now(),
            procs,
            loader,
            system,
            children,
        }
    }

    /// The loader did not exist when the snapshot was taken: it counts
    /// from 0 ([`testkit::cpu::seconds_between`]).
    fn with_pid(mut self, pid: i32) -> CpuSnapshot {
        self.loader = Some(pid);
        self
    }

    fn shares_until(&self, end: &CpuSnapshot) -> CpuShares {
        const HZ: f64 = testkit::cpu::HZ;
        let wall = (end.at - self.at).as_secs_f64().max(1e-9);
        // Processes that ended in between (short psql runs) are lost, which
        // is negligible.
        let loader = end.loader.or(self.loader);
        let named: Vec<(i32, &'static str)> =
            loader.map(|pid| (pid, "loader")).into_iter().collect();
        let by_group = testkit::cpu::seconds_between(
            &self.procs,
            &end.procs,
            testkit::cpu::services_and(&named),
        );
        let pct = |g: &str| by_group.get(g).copied().unwrap_or(0.0) / wall * 100.0;
        let total = end.system.2.saturating_sub(self.system.2).max(1) as f64;
        let n = cores() as f64;
        CpuShares {
            loader: pct("loader"),
            postgres: pct("postgres"),
            nats: pct("nats"),
            psql: end.children.saturating_sub(self.children) as f64 / HZ / wall * 100.0,
            system_busy: end.system.0.saturating_sub(self.system.0) as f64 / total * 100.0 * n,
            system_iowait: end.system.1.saturating_sub(self.system.1) as f64 / total * 100.0 * n,
        }
    }
}
