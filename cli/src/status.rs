//! `etl status`: one look at the whole bus — per source its checkpoint and
//! last successful sync, the stream, each consumer's lag, dead letters and
//! qMS rejects by reason, persons. Counts and identifiers only.

use async_nats::jetstream;
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
    /// KV bucket of the Infoclinica extractor's checkpoints.
    #[arg(long, default_value = "infoclinica_checkpoints")]
    checkpoint_bucket: String,
    /// Stream of the qMS extractor's rejects.
    #[arg(long, default_value = "QMS_REJECTS")]
    qms_rejects_stream: String,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub checkpoints: Vec<Checkpoint>,
    pub last_syncs: Vec<LastSync>,
    pub stream: Option<StreamState>,
    pub consumers: Vec<ConsumerLag>,
    pub dead_letters: Vec<ReasonCount>,
    pub qms_rejects: Vec<ReasonCount>,
    pub persons: Option<PersonCounts>,
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
    pub key: String,
    #[serde(flatten)]
    pub status: etl_runtime::sync_status::SyncStatus,
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

pub async fn run(settings: &Settings, args: StatusArgs) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let client = settings.nats.connect("etl-status").await?;
    let js = jetstream::new(client);
    let (stream, consumers) = match bus(&js, &settings.stream.name).await {
        Ok((s, c)) => (Some(s), c),
        Err(_) => (None, Vec::new()),
    };
    let dead: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason_code, count(*) FROM dead_letters WHERE status = 'open' GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .fetch_all(&pool)
    .await?;
    let status = Status {
        checkpoints: checkpoints(&js, &args.checkpoint_bucket).await?,
        last_syncs: etl_runtime::sync_status::all(&js)
            .await?
            .into_iter()
            .map(|(key, status)| LastSync { key, status })
            .collect(),
        stream,
        consumers,
        dead_letters: dead
            .into_iter()
            .map(|(reason, count)| ReasonCount {
                reason,
                count: count as u64,
            })
            .collect(),
        qms_rejects: crate::dlq::reject_counts(&js, &args.qms_rejects_stream)
            .await?
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
        persons: person_counts(&pool).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_table(&status);
    }
    Ok(())
}

fn print_table(s: &Status) {
    println!("Sources");
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
