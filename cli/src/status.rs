//! `etl status`: is the pipeline the settings point at healthy, how far
//! behind is it, what is stuck. Per source its checkpoint, last successful
//! sync and held deletion brakes; the stream, each consumer's lag, the
//! matcher's backlog, dead letters and qMS rejects by reason, persons.
//! Counts and identifiers only.
//!
//! A verdict with its exit status, for cron and monitoring: 0 healthy, 1
//! degraded (a brake holds, a lag or backlog beyond its limit, a source
//! whose last sync is too old), 2 down (NATS or PostgreSQL unreachable, the
//! stream missing). NATS and PostgreSQL are asked at the same time, each
//! within `--timeout`, so the answer comes within seconds when either is
//! down, naming it.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::text::printable;
use crate::Settings;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
    /// KV bucket of the Infoclinica extractor's checkpoints (default: the
    /// settings' `extractor.checkpoint_bucket`).
    #[arg(long)]
    checkpoint_bucket: Option<String>,
    /// Stream of the qMS extractor's rejects (default: the settings'
    /// `qms.rejects.stream`).
    #[arg(long)]
    qms_rejects_stream: Option<String>,
    /// Degraded when a consumer of the stream has more messages pending.
    #[arg(long, default_value_t = 10_000)]
    max_lag: u64,
    /// Degraded when the matcher has more changes waiting.
    #[arg(long, default_value_t = 10_000)]
    max_backlog: u64,
    /// Degraded when a source's last successful sync is older (e.g. `3h`,
    /// `90m`).
    #[arg(long, default_value = "3h", value_parser = humantime_serde::re::humantime::parse_duration)]
    max_sync_age: Duration,
    /// How long to wait for NATS and for PostgreSQL (asked at once).
    #[arg(long, default_value = "3s", value_parser = humantime_serde::re::humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Status {
    /// `healthy`, `degraded` or `down`.
    pub verdict: Verdict,
    /// Why the verdict is not `healthy`.
    pub problems: Vec<Problem>,
    pub stream_name: String,
    pub checkpoints: Vec<Checkpoint>,
    pub last_syncs: Vec<LastSync>,
    pub brakes: Vec<etl_runtime::brake::Hold>,
    pub stream: Option<StreamState>,
    pub consumers: Vec<ConsumerLag>,
    /// Changes loaded but not yet matched; `None` when PostgreSQL did not
    /// answer.
    pub matcher_backlog: Option<i64>,
    pub dead_letters: Vec<ReasonCount>,
    pub qms_rejects: Vec<ReasonCount>,
    pub persons: Option<PersonCounts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Healthy,
    Degraded,
    Down,
}

impl Verdict {
    /// The exit status: 0, 1, 2.
    pub fn code(self) -> i32 {
        self as i32
    }
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// `nats`, `postgresql`, `stream`, `brake`, `consumer`, `matcher`,
    /// `sync`.
    pub component: &'static str,
    pub severity: Verdict,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Checkpoint {
    pub key: String,
    /// The checkpoint's value (JSON when it is JSON, else text).
    pub value: serde_json::Value,
    pub revision: u64,
}

#[derive(Debug, Serialize)]
pub struct LastSync {
    /// `source` or `source/database`.
    pub key: String,
    #[serde(flatten)]
    pub status: etl_runtime::sync_status::SyncStatus,
    pub age_seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct StreamState {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Debug, Serialize)]
pub struct ConsumerLag {
    pub name: String,
    /// Messages not yet delivered (num_pending).
    pub pending: u64,
    /// Delivered, not yet acknowledged (num_ack_pending).
    pub unacked: usize,
    /// Delivered more than once (num_redelivered).
    pub redelivered: usize,
    pub ack_floor_seq: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct PersonCounts {
    pub persons: i64,
    pub records: i64,
    pub with_several_records: i64,
    pub cross_system: i64,
    pub locked: i64,
    pub open_review_items: i64,
}

/// What NATS told.
#[derive(Default)]
struct BusPart {
    checkpoints: Vec<Checkpoint>,
    last_syncs: Vec<LastSync>,
    brakes: Vec<etl_runtime::brake::Hold>,
    stream: Option<StreamState>,
    consumers: Vec<ConsumerLag>,
    qms_rejects: Vec<ReasonCount>,
}

/// What PostgreSQL told.
#[derive(Default)]
struct DbPart {
    matcher_backlog: Option<i64>,
    dead_letters: Vec<ReasonCount>,
    persons: Option<PersonCounts>,
    /// The schema does not match this etl.
    schema: Option<String>,
}

pub async fn run(settings: &Settings, args: StatusArgs) -> anyhow::Result<()> {
    // Connects in the background (returns at once).
    let client = settings.nats.connect("etl-status").await?;
    let (bus, db) = tokio::join!(
        bounded(args.timeout, from_nats(settings, &args, client.clone())),
        bounded(args.timeout, from_postgres(settings, args.timeout)),
    );
    let bus = bus.map_err(|e| {
        if client.connection_state() == async_nats::connection::State::Connected {
            e
        } else {
            anyhow::anyhow!("not reachable (no connection within {:?})", args.timeout)
        }
    });
    let status = judge(settings, &args, bus, db);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_table(&status);
    }
    std::process::exit(status.verdict.code());
}

/// `work` within `limit`; a timeout is an error that says so.
async fn bounded<T>(
    limit: Duration,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("no answer within {limit:?}"),
    }
}

async fn from_nats(
    settings: &Settings,
    args: &StatusArgs,
    client: async_nats::Client,
) -> anyhow::Result<BusPart> {
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let js = jetstream::new(client);
    let stream_name = &settings.stream.name;
    let (stream, consumers) = match bus(&js, stream_name).await {
        Ok((s, c)) => (Some(s), c),
        Err(_) => (None, Vec::new()),
    };
    let bucket = args
        .checkpoint_bucket
        .as_deref()
        .unwrap_or(&settings.extractor.checkpoint_bucket);
    let rejects = args
        .qms_rejects_stream
        .as_deref()
        .unwrap_or(&settings.qms.rejects.stream);
    let now = Utc::now();
    Ok(BusPart {
        checkpoints: checkpoints(&js, bucket).await?,
        last_syncs: etl_runtime::sync_status::of_stream(&js, stream_name)
            .await?
            .into_iter()
            .map(|(key, status)| LastSync {
                key,
                age_seconds: (now - status.finished_at).num_seconds(),
                status,
            })
            .collect(),
        brakes: etl_runtime::brake::list(&js, stream_name)
            .await?
            .into_iter()
            .map(|(hold, _)| hold)
            .collect(),
        stream,
        consumers,
        qms_rejects: crate::dlq::reject_counts(&js, rejects)
            .await?
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
    })
}

async fn from_postgres(settings: &Settings, timeout: Duration) -> anyhow::Result<DbPart> {
    // Within the answer's time even when every host is down.
    let server = tokio::time::timeout(timeout, settings.database.fitting_server())
        .await
        .unwrap_or_else(|_| settings.database.with_db());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect_with(server)
        .await?;
    if let Err(e) = crate::db::check_schema(&pool).await {
        return Ok(DbPart {
            schema: Some(e.to_string()),
            ..Default::default()
        });
    }
    let dead: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason_code, count(*) FROM dead_letters WHERE status = 'open' GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .fetch_all(&pool)
    .await?;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(&pool)
        .await?;
    Ok(DbPart {
        matcher_backlog: Some(backlog),
        dead_letters: dead
            .into_iter()
            .map(|(reason, count)| ReasonCount {
                reason,
                count: count as u64,
            })
            .collect(),
        persons: person_counts(&pool).await?,
        schema: None,
    })
}

/// The verdict and its problems from what each side answered.
fn judge(
    settings: &Settings,
    args: &StatusArgs,
    bus: anyhow::Result<BusPart>,
    db: anyhow::Result<DbPart>,
) -> Status {
    let mut problems = Vec::new();
    let mut problem = |component, severity, message: String| {
        problems.push(Problem {
            component,
            severity,
            message,
        })
    };
    let nats_up = bus.is_ok();
    let bus = bus.unwrap_or_else(|e| {
        let url = printable(&settings.nats.url).into_owned();
        problem("nats", Verdict::Down, format!("NATS at {url}: {e:#}"));
        BusPart::default()
    });
    let db = db.unwrap_or_else(|e| {
        let d = &settings.database;
        problem(
            "postgresql",
            Verdict::Down,
            format!("PostgreSQL at {}:{}: {e:#}", d.host, d.port),
        );
        DbPart::default()
    });
    if let Some(schema) = &db.schema {
        problem("postgresql", Verdict::Degraded, schema.clone());
    }
    if bus.stream.is_none() && nats_up {
        let name = &settings.stream.name;
        problem("stream", Verdict::Down, format!("stream {name} not found"));
    }
    for h in &bus.brakes {
        let message = format!("deletion brake: {}", crate::brake::describe(h));
        problem("brake", Verdict::Degraded, message);
    }
    for c in bus.consumers.iter().filter(|c| c.pending > args.max_lag) {
        let message = format!(
            "consumer {} is {} messages behind (limit {})",
            c.name, c.pending, args.max_lag
        );
        problem("consumer", Verdict::Degraded, message);
    }
    if let Some(backlog) = db.matcher_backlog.filter(|b| *b as u64 > args.max_backlog) {
        let message = format!(
            "the matcher has {backlog} changes waiting (limit {})",
            args.max_backlog
        );
        problem("matcher", Verdict::Degraded, message);
    }
    let max_age = args.max_sync_age.as_secs() as i64;
    for l in bus.last_syncs.iter().filter(|l| l.age_seconds > max_age) {
        let message = format!(
            "{}: last successful sync {} ago (limit {})",
            printable(&l.key),
            humantime_serde::re::humantime::format_duration(Duration::from_secs(
                l.age_seconds as u64
            )),
            humantime_serde::re::humantime::format_duration(args.max_sync_age)
        );
        problem("sync", Verdict::Degraded, message);
    }
    let verdict = problems
        .iter()
        .map(|p| p.severity)
        .max()
        .unwrap_or(Verdict::Healthy);
    Status {
        verdict,
        problems,
        stream_name: settings.stream.name.clone(),
        checkpoints: bus.checkpoints,
        last_syncs: bus.last_syncs,
        brakes: bus.brakes,
        stream: bus.stream,
        consumers: bus.consumers,
        matcher_backlog: db.matcher_backlog,
        dead_letters: db.dead_letters,
        qms_rejects: bus.qms_rejects,
        persons: db.persons,
    }
}

fn print_table(s: &Status) {
    let verdict = match s.verdict {
        Verdict::Healthy => "HEALTHY",
        Verdict::Degraded => "DEGRADED",
        Verdict::Down => "DOWN",
    };
    println!("Pipeline of stream {}: {verdict}", s.stream_name);
    for p in &s.problems {
        println!("  {:<10} {}", p.component, p.message);
    }
    println!("\nSources");
    println!("  last successful sync:");
    if s.last_syncs.is_empty() {
        println!("    none recorded");
    }
    for l in &s.last_syncs {
        println!(
            "    {:<32} {:<10} {}  published {}, deleted {}",
            printable(&l.key),
            printable(&l.status.kind),
            l.status.finished_at.to_rfc3339(),
            l.status.published,
            l.status.deleted
        );
    }
    println!("  deletion brakes:");
    if s.brakes.is_empty() {
        println!("    none held");
    }
    for h in &s.brakes {
        println!("    {}", crate::brake::describe(h));
    }
    println!("  checkpoints:");
    if s.checkpoints.is_empty() {
        println!("    none");
    }
    for c in &s.checkpoints {
        println!(
            "    {:<32} rev {:<6} {}",
            printable(&c.key),
            c.revision,
            c.value
        );
    }
    println!("\nStream");
    match &s.stream {
        Some(st) => println!(
            "  {}: {} messages, {:.1} MiB, sequences {}..{}",
            st.name,
            st.messages,
            st.bytes as f64 / 1048576.0,
            st.first_seq,
            st.last_seq
        ),
        None => println!("  not found"),
    }
    println!(
        "\n  {:<28} {:>10} {:>10} {:>12} {:>12}",
        "consumer", "pending", "unacked", "redelivered", "acked up to"
    );
    for c in &s.consumers {
        println!(
            "  {:<28} {:>10} {:>10} {:>12} {:>12}",
            c.name, c.pending, c.unacked, c.redelivered, c.ack_floor_seq
        );
    }
    if let Some(backlog) = s.matcher_backlog {
        println!("\nMatcher backlog: {backlog} changes waiting");
    }
    for (title, list) in [
        ("Dead letters (open, by reason)", &s.dead_letters),
        ("qMS rejects (by reason)", &s.qms_rejects),
    ] {
        println!("\n{title}");
        if list.is_empty() {
            println!("  none");
        }
        for r in list {
            println!("  {:<32} {:>8}", printable(&r.reason), r.count);
        }
    }
    println!("\nPersons");
    match &s.persons {
        Some(p) => {
            println!(
                "  persons            {:>9} holding {} live records",
                p.persons, p.records
            );
            println!("  cross-system       {:>9}", p.cross_system);
            println!("  open review items  {:>9}", p.open_review_items);
        }
        None => println!("  the matcher has not run on this database"),
    }
}

/// The stream's size and every consumer's lag.
pub async fn bus(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<(StreamState, Vec<ConsumerLag>)> {
    let mut stream = js.get_stream(name).await?;
    let info = stream.info().await?;
    let state = StreamState {
        name: info.config.name.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
    };
    let mut consumers = Vec::new();
    let mut infos = stream.consumers();
    while let Some(c) = infos.next().await {
        let c = c.map_err(|e| anyhow::anyhow!("listing consumers: {e}"))?;
        consumers.push(ConsumerLag {
            name: c.name.clone(),
            pending: c.num_pending,
            unacked: c.num_ack_pending,
            redelivered: c.num_redelivered,
            ack_floor_seq: c.ack_floor.stream_sequence,
        });
    }
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((state, consumers))
}

async fn checkpoints(js: &jetstream::Context, bucket: &str) -> anyhow::Result<Vec<Checkpoint>> {
    let Ok(store) = js.get_key_value(bucket).await else {
        return Ok(Vec::new());
    };
    let Ok(keys) = store.keys().await else {
        return Ok(Vec::new());
    };
    let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
    let mut out = Vec::new();
    for key in keys {
        if let Ok(Some(entry)) = store.entry(&key).await {
            let value = serde_json::from_slice(&entry.value).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&entry.value).into_owned())
            });
            out.push(Checkpoint {
                key,
                value,
                revision: entry.revision,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The matcher's counts; `None` when the matcher has not run on this
/// database. Shared with `etl summary`.
pub async fn person_counts(pool: &PgPool) -> anyhow::Result<Option<PersonCounts>> {
    let present: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('person_memberships')::text")
            .fetch_one(pool)
            .await?;
    if present.is_none() {
        return Ok(None);
    }
    let (persons, multi, cross, records, locked, reviews): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH p AS (SELECT person_id, count(*) AS n, count(DISTINCT source) AS sources
                    FROM person_memberships WHERE valid_to IS NULL GROUP BY person_id)
         SELECT count(*), count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE sources > 1),
                coalesce(sum(n), 0)::int8,
                (SELECT count(*) FROM persons WHERE locked AND retired_at IS NULL),
                (SELECT count(*) FROM review_items WHERE status = 'open')
         FROM p",
        )
        .fetch_one(pool)
        .await?;
    Ok(Some(PersonCounts {
        persons,
        records,
        with_several_records: multi,
        cross_system: cross,
        locked,
        open_review_items: reviews,
    }))
}
