//! `etl dlq`: dead letters (table `dead_letters`: messages the loader could
//! not apply, and changes the matcher could not match — stream
//! `record_changes`, reason `match_failed`) and the qMS rejects stream
//! (records the qMS extractor could not parse).
//!
//! Only identifiers (source, source id, stream sequence) and reasons are
//! printed, control characters escaped; a payload is decoded only with
//! `--show-personal-data`.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

use crate::text::printable;
use crate::Settings;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters (open ones by default) with their reason.
    List {
        /// Only this reason code (e.g. unknown_document_type).
        #[arg(long)]
        reason: Option<String>,
        /// open, retried, dropped or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: identifiers and reason; the decoded payload only with
    /// --show-personal-data.
    Show {
        id: i64,
        /// Print the message's content (names, documents…): only where you
        /// are allowed to see patients' data.
        #[arg(long)]
        show_personal_data: bool,
    },
    /// Re-submit through the normal path after fixing the cause: a change the
    /// matcher set aside goes back into `record_changes`; a message is
    /// republished to its subject (a record out of a batch message goes
    /// alone, as a single-envelope message) (a fresh message id, so the stream's
    /// duplicate check does not drop it), then marks the row retried. If the
    /// cause is not fixed, the loader (or the matcher) sets it aside again as
    /// a new row.
    Retry {
        /// The dead letter to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every open dead letter (with --reason: of that reason only).
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        reason: Option<String>,
    },
    /// Give up on a dead letter (kept, marked dropped).
    Drop { id: i64 },
    /// The qMS rejects stream: records the qMS extractor could not parse.
    /// They cannot be retried from here (the fix is in qMS or the parser;
    /// the next sync re-reads them): list, show, drop.
    #[command(subcommand)]
    QmsRejects(RejectsCommand),
}

#[derive(Subcommand)]
pub enum RejectsCommand {
    /// Rejects with stream sequence and reason.
    List {
        /// Rejects stream name.
        #[arg(long, default_value = "QMS_REJECTS")]
        stream: String,
        #[arg(long)]
        json: bool,
    },
    /// One reject; its raw text only with --show-personal-data.
    Show {
        seq: u64,
        #[arg(long, default_value = "QMS_REJECTS")]
        stream: String,
        #[arg(long)]
        show_personal_data: bool,
    },
    /// Delete one reject from the stream.
    Drop {
        seq: u64,
        #[arg(long, default_value = "QMS_REJECTS")]
        stream: String,
    },
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub stream: String,
    pub stream_seq: i64,
    /// The record's index in its message (0 unless it came out of a batch
    /// message).
    pub item: i32,
    pub subject: String,
    pub source: Option<String>,
    pub source_id: Option<String>,
    pub reason_code: String,
    pub reason: String,
    pub delivered: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// The message's W3C `traceparent`, re-sent by a retry.
    pub traceparent: Option<String>,
}

/// The columns of [`DeadLetterRow`] (a macro so queries stay literals).
macro_rules! columns {
    () => {
        "id, stream, stream_seq, item, subject, source, source_id, reason_code, reason, delivered, status, created_at, traceparent"
    };
}

pub async fn run(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    if let DlqCommand::QmsRejects(c) = command {
        return rejects(settings, c).await;
    }
    let pool = crate::db::connect(settings).await?;
    match command {
        DlqCommand::List {
            reason,
            status,
            json,
        } => {
            let rows: Vec<DeadLetterRow> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters
                 WHERE ($1::text IS NULL OR reason_code = $1) AND ($2 = 'all' OR status = $2)
                 ORDER BY id"
            ))
            .bind(&reason)
            .bind(&status)
            .fetch_all(&pool)
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:>6} {:>9} {:>5} {:<10} {:<20} {:<26} {:<8} reason",
                "id", "seq", "item", "source", "source id", "code", "status"
            );
            for r in &rows {
                println!(
                    "{:>6} {:>9} {:>5} {:<10} {:<20} {:<26} {:<8} {}",
                    r.id,
                    r.stream_seq,
                    r.item,
                    printable(r.source.as_deref().unwrap_or("?")),
                    printable(r.source_id.as_deref().unwrap_or("?")),
                    printable(&r.reason_code),
                    r.status,
                    printable(&r.reason)
                );
            }
            println!("{} dead letters", rows.len());
        }
        DlqCommand::Show {
            id,
            show_personal_data,
        } => {
            let (row, payload) = fetch(&pool, id).await?;
            println!("{}", serde_json::to_string_pretty(&row)?);
            if row.stream == matcher::engine::quarantine::STREAM {
                // The change's own columns (op, version, hash): no content.
                println!("change: {}", String::from_utf8_lossy(&payload));
            } else if show_personal_data {
                crate::access_log::record(&pool, &dead_letter_view(&row)).await?;
                // One envelope (a single-envelope message, or one record
                // of a batch message); a whole batch message if an older
                // loader set it aside.
                let items = proto::batch::decode_message(&payload).unwrap_or_default();
                if items.is_empty() || items.iter().any(|i| i.envelope.is_err()) {
                    println!(
                        "payload ({} bytes, not an envelope): {}",
                        payload.len(),
                        hex::encode(&payload)
                    );
                }
                for envelope in items.iter().filter_map(|i| i.envelope.as_ref().ok()) {
                    println!("{}", serde_json::to_string_pretty(envelope)?);
                }
            } else {
                println!(
                    "(payload of {} bytes not shown: add --show-personal-data)",
                    payload.len()
                );
            }
        }
        DlqCommand::Retry { id, all, reason } => {
            let ids: Vec<i64> = if all {
                sqlx::query_scalar(
                    "SELECT id FROM dead_letters WHERE status = 'open'
                     AND ($1::text IS NULL OR reason_code = $1) ORDER BY id",
                )
                .bind(&reason)
                .fetch_all(&pool)
                .await?
            } else {
                id.into_iter().collect()
            };
            // Connected on the first dead letter of a stream: the matcher's
            // go back into `record_changes` without NATS.
            let mut js = None;
            for &id in &ids {
                if is_matchers(&pool, id).await? {
                    matcher::engine::quarantine::retry(&pool, id).await?;
                    continue;
                }
                if js.is_none() {
                    let client = settings.nats.connect("etl-dlq").await?;
                    js = Some(jetstream::new(client));
                }
                retry(&pool, js.as_ref().expect("connected above"), id).await?;
            }
            println!("{} dead letters re-submitted", ids.len());
        }
        DlqCommand::Drop { id } => {
            let done = sqlx::query(
                "UPDATE dead_letters SET status = 'dropped', updated_at = now()
                 WHERE id = $1 AND status = 'open'",
            )
            .bind(id)
            .execute(&pool)
            .await?
            .rows_affected();
            anyhow::ensure!(
                done == 1,
                "dead letter {id} is not open (or does not exist)"
            );
            println!("dead letter {id} dropped");
        }
        DlqCommand::QmsRejects(_) => unreachable!("handled above"),
    }
    Ok(())
}

async fn fetch(pool: &PgPool, id: i64) -> anyhow::Result<(DeadLetterRow, Vec<u8>)> {
    let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM dead_letters WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?;
    let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM dead_letters WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?;
    Ok((row, payload))
}

/// A change the matcher set aside (not a stream message).
async fn is_matchers(pool: &PgPool, id: i64) -> anyhow::Result<bool> {
    let stream: Option<String> =
        sqlx::query_scalar("SELECT stream FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(stream.as_deref() == Some(matcher::engine::quarantine::STREAM))
}

/// Publish (and wait for the stream's ack), then mark: a crash between the
/// two re-submits once more on the next retry, which the versioned upsert
/// makes harmless; the other order could lose the message.
async fn retry(pool: &PgPool, js: &jetstream::Context, id: i64) -> anyhow::Result<()> {
    let (row, payload) = fetch(pool, id).await?;
    anyhow::ensure!(
        row.status == "open",
        "dead letter {id} is {}, not open",
        row.status
    );
    let mut headers = async_nats::HeaderMap::new();
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    headers.insert(
        "Nats-Msg-Id",
        format!(
            "retry:{}:{}:{}:{nanos}",
            row.stream, row.stream_seq, row.item
        )
        .as_str(),
    );
    // The retry joins the trace of the message that failed.
    if let Some(traceparent) = &row.traceparent {
        headers.insert(proto::trace::HEADER, traceparent.as_str());
    }
    js.publish_with_headers(row.subject.clone(), headers, payload.into())
        .await
        .map_err(|e| anyhow::anyhow!("re-publishing dead letter {id}: {e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("re-publishing dead letter {id}: {e}"))?;
    sqlx::query("UPDATE dead_letters SET status = 'retried', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Serialize)]
struct Reject {
    seq: u64,
    time: String,
    reason: String,
    bytes: usize,
}

async fn rejects(settings: &Settings, command: RejectsCommand) -> anyhow::Result<()> {
    let client = settings.nats.connect("etl-dlq").await?;
    let js = jetstream::new(client);
    match command {
        RejectsCommand::List { stream, json } => {
            let list = list_rejects(&js, &stream).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:>9} {:<26} reason", "seq", "time");
                for r in &list {
                    println!("{:>9} {:<26} {}", r.seq, r.time, printable(&r.reason));
                }
                println!("{} rejects", list.len());
            }
        }
        RejectsCommand::Show {
            seq,
            stream,
            show_personal_data,
        } => {
            let s = js.get_stream(&stream).await?;
            let m = s.get_raw_message(seq).await?;
            println!(
                "seq {seq}, stored {}, reason {}",
                m.time,
                printable(&reject_reason(&m.headers))
            );
            if show_personal_data {
                let pool = crate::db::connect(settings).await?;
                crate::access_log::record(&pool, &reject_view(&stream, seq, &m.headers)).await?;
                println!("{}", String::from_utf8_lossy(&m.payload));
            } else {
                println!(
                    "(raw record of {} bytes not shown: add --show-personal-data)",
                    m.payload.len()
                );
            }
        }
        RejectsCommand::Drop { seq, stream } => {
            let s = js.get_stream(&stream).await?;
            s.delete_message(seq).await?;
            println!("reject {seq} dropped");
        }
    }
    Ok(())
}

/// The access-log entry of `dlq show --show-personal-data`.
fn dead_letter_view(row: &DeadLetterRow) -> crate::access_log::View {
    let records = match (&row.source, &row.source_id) {
        (Some(source), Some(id)) => vec![format!("{source}:{id}")],
        _ => Vec::new(),
    };
    crate::access_log::view("dlq show", format!("dead letter {}", row.id), records)
}

/// The access-log entry of `dlq qms-rejects show --show-personal-data`:
/// the reject's his number when it had a readable one.
fn reject_view(stream: &str, seq: u64, headers: &async_nats::HeaderMap) -> crate::access_log::View {
    let records = headers
        .get("Qms-His-Number")
        .map(|his| vec![format!("qms:{}", his.as_str())])
        .unwrap_or_default();
    crate::access_log::view(
        "dlq qms-rejects show",
        format!("reject {seq} of {stream}"),
        records,
    )
}

fn reject_reason(headers: &async_nats::HeaderMap) -> String {
    headers
        .get("Qms-Reject-Reason")
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| "?".into())
}

/// The rejects stream's messages, oldest first (reasons only). An absent
/// stream is an empty list. Read through one ordered consumer (one request
/// per batch, not per message), so a large rejects stream lists quickly.
async fn list_rejects(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<Reject>> {
    use futures::StreamExt;
    let Ok(mut s) = js.get_stream(stream).await else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if s.info().await?.state.messages == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("reading the rejects: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("reading the rejects: {e}"))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("reading the rejects: {e}"))?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let empty = async_nats::HeaderMap::new();
        out.push(Reject {
            seq: info.stream_sequence,
            time: info.published.to_string(),
            reason: reject_reason(message.headers.as_ref().unwrap_or(&empty)),
            bytes: message.payload.len(),
        });
        if info.pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// Rejects per reason, for `etl status`.
pub async fn reject_counts(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for r in list_rejects(js, stream).await? {
        *counts.entry(r.reason).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}
