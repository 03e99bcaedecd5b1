//! What the sections share: the scoring under test, loading records
//! through the loader's store, the table the large sections run on, CPU
//! and memory readings, and waiting for the matcher.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use loader::store::Store;
use matcher::settings::ScoringKind;
use proto::Envelope;
use sqlx::PgPool;

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The matcher as every section runs it: default settings (the model's
/// scoring), or the scoring `BENCH_SCORING` names (`model` or `rules`).
#[derive(Clone)]
pub struct Bench {
    pub settings: matcher::Settings,
    pub engine: matcher::Engine,
}

impl Bench {
    pub fn from_env() -> Bench {
        let mut settings = matcher::Settings::default();
        settings.matcher.scoring = match std::env::var("BENCH_SCORING").as_deref() {
            Ok("model") => ScoringKind::Model,
            Ok("rules") => ScoringKind::Rules,
            Err(_) => settings.matcher.scoring,
            Ok(other) => panic!("BENCH_SCORING={other}: `rules` or `model`"),
        };
        let engine = matcher::service::engine(&settings);
        Bench { settings, engine }
    }

    pub fn model(&self) -> bool {
        self.settings.matcher.scoring == ScoringKind::Model
    }

    pub fn scoring(&self) -> &'static str {
        if self.model() {
            "model"
        } else {
            "rules"
        }
    }

    pub fn batch_size(&self) -> matcher::service::BatchSize {
        let m = &self.settings.matcher;
        matcher::service::BatchSize::new(m.batch_size, m.max_batch_size)
    }

    /// The service's settings on `db`.
    pub fn service_settings(&self, db: &DatabaseSettings) -> matcher::Settings {
        matcher::Settings {
            database: db.clone(),
            ..self.settings.clone()
        }
    }

    /// The environment of a matcher binary on `db` with this scoring.
    pub fn binary_env(&self, db: &DatabaseSettings) -> Vec<(String, String)> {
        let mut env = testkit::service_env(db, &testkit::unique_stream());
        env.push(("RUST_LOG".into(), "matcher=info".into()));
        env.push(("ETL__MATCHER__SCORING".into(), self.scoring().into()));
        env
    }
}

/// Writes `records` as the loader does (its store, batches of 2,000).
pub async fn load(store: &Store, records: &[synth::truth::TruthRecord], version: i64) {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let envelopes = records
        .iter()
        .map(|t| Envelope::upsert(t.source, t.source_id.clone(), version, at, t.record.clone()));
    write(store, envelopes).await;
}

/// Writes `envelopes` through the loader's store, 2,000 at a time.
pub async fn write(store: &Store, envelopes: impl Iterator<Item = Envelope>) {
    let mut envelopes = envelopes.peekable();
    while envelopes.peek().is_some() {
        let chunk: Vec<Envelope> = envelopes.by_ref().take(2000).collect();
        store.write_envelopes(&chunk, 0).await.expect("write");
    }
}

/// `n` generated records (about 1.5 per person) from `seed`, their ids
/// prefixed so that they are new to any table.
pub fn new_records(seed: u64, n: usize, prefix: &str) -> Vec<synth::truth::TruthRecord> {
    let mut records = synth::truth::TruthGenerator::new(seed).records(n as u64 * 2 / 3 + 1);
    records.truncate(n);
    for (k, t) in records.iter_mut().enumerate() {
        t.source_id = format!("{prefix}-{k}");
    }
    records
}

pub async fn database() -> (DatabaseSettings, PgPool, Store) {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
    let store = Store::new(pool.clone(), "BENCH");
    (db, pool, store)
}

/// The table the large sections run on: `BENCH_RECORDS` generated records,
/// loaded, their change rows deleted (nothing matched yet).
pub struct Table {
    pub db: DatabaseSettings,
    pub pool: PgPool,
    pub store: Store,
    pub records: Vec<synth::truth::TruthRecord>,
}

impl Table {
    pub async fn load(n: u64) -> Table {
        let (db, pool, store) = database().await;
        let mut records = synth::truth::TruthGenerator::new(7).records(n * 2 / 3);
        records.truncate(n as usize);
        let started = Instant::now();
        load(&store, &records, 1).await;
        println!(
            "loaded {} records in {:.1} s",
            records.len(),
            started.elapsed().as_secs_f64()
        );
        sqlx::query("DELETE FROM record_changes")
            .execute(&pool)
            .await
            .unwrap();
        Table {
            db,
            pool,
            store,
            records,
        }
    }
}

/// This process's resident memory (Linux), MiB.
pub fn rss_mib() -> u64 {
    rss_of(std::process::id() as i32).0
}

/// VmRSS and VmHWM of a process, MiB.
pub fn rss_of(pid: i32) -> (u64, u64) {
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

/// CPU time of this process (the loader's write path, or the matcher's
/// work, whichever the bench is doing) and of PostgreSQL's processes
/// (all of them: the machine must be otherwise quiet) since a reading.
pub struct Cpu(Vec<testkit::cpu::ProcessTime>);

/// CPU seconds spent: (this process, PostgreSQL).
pub struct Spent(f64, f64);

impl Cpu {
    pub fn now() -> Cpu {
        Cpu(testkit::cpu::processes())
    }

    pub fn spent(&self) -> Spent {
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
    pub fn total(&self) -> f64 {
        self.0 + self.1
    }

    /// "X ms (process Y + PostgreSQL Z)" per 1,000 of `n` records.
    pub fn per_thousand(&self, n: usize) -> String {
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
pub async fn checkpoint(pool: &PgPool) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("CHECKPOINT refused ({error}); timings may include one");
    }
}

/// Change rows not matched yet.
pub async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn advisory_lock_held(pool: &PgPool, lock: i64) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(lock)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until a matcher service (in this process or a binary) is the
/// active instance with its index built (it no longer holds the matcher
/// lock) and, with `drained`, has matched every pending change.
pub async fn matcher_ready(pool: &PgPool, drained: bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2)
        || !advisory_lock_held(pool, matcher::service::LEADER_LOCK).await
        || advisory_lock_held(pool, matcher::engine::MATCH_LOCK).await
        || (drained && pending(pool).await > 0)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}
