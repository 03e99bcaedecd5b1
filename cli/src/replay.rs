//! `etl replay`: re-applies a range of the stream to PostgreSQL through the
//! loader's own code (`loader::batch` to examine, `loader::store` to write).
//! Idempotent: the store's upserts keep the highest version of each record,
//! so replaying what is already loaded changes nothing, and dead letters are
//! unique per stream sequence and record index. Batch messages are read
//! record by record, as the loader reads them.

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use etl_runtime::progress::{Progress, Unit};
use futures::StreamExt;
use loader::batch::{self, Verdict};
use loader::store::{Store, Written};

use crate::Settings;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// First stream sequence to re-apply.
    #[arg(long, conflicts_with = "from_time")]
    from_seq: Option<u64>,
    /// Re-apply messages stored at or after this time (RFC 3339, e.g.
    /// 2026-12-01T10:00:00Z).
    #[arg(long)]
    from_time: Option<DateTime<Utc>>,
    /// Last stream sequence to re-apply (default: the stream's last message
    /// when the replay starts).
    #[arg(long)]
    to_seq: Option<u64>,
    /// Only this source's messages (its subject).
    #[arg(long)]
    source: Option<String>,
    /// Rebuild an EMPTY database from the whole stream (migrated first with
    /// `etl migrate`): refuses if source_records already holds rows, replays
    /// from the first sequence.
    #[arg(long, conflicts_with_all = ["from_seq", "from_time", "to_seq"])]
    rebuild: bool,
    /// Records per transaction (a batch message is never split: a
    /// transaction may exceed this by one message's records).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

pub async fn run(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    if args.from_seq.is_none() && args.from_time.is_none() && !args.rebuild {
        anyhow::bail!("say where to start: --from-seq N, --from-time RFC3339, or --rebuild");
    }
    let pool = crate::db::connect(settings).await?;
    let store = Store::new(pool.clone(), settings.stream.name.clone());
    if args.rebuild {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM source_records")
            .fetch_one(&pool)
            .await?;
        if rows > 0 {
            anyhow::bail!(
                "--rebuild needs an empty database: source_records holds {rows} rows \
                 (use a plain replay with --from-seq 1 to re-apply into it)"
            );
        }
    }
    let client = settings.nats.connect("etl-replay").await?;
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&settings.stream.name).await?;
    let state = stream.info().await?.state.clone();
    let end = args.to_seq.unwrap_or(state.last_sequence);
    let deliver_policy = match (args.from_seq, args.from_time) {
        (Some(seq), _) => DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        (None, Some(t)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                t.timestamp_nanos_opt().unwrap_or(0) as i128,
            )?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let first = args.from_seq.unwrap_or(state.first_sequence);
    if state.messages == 0 || end < first {
        eprintln!(
            "nothing to replay (stream holds sequences {}..{})",
            state.first_sequence, state.last_sequence
        );
        return Ok(());
    }
    let filter_subject = args
        .source
        .as_deref()
        .map(|s| settings.stream.subject(s))
        .unwrap_or_default();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            filter_subject,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the replay consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;

    let prefix = settings.stream.subject_prefix.clone();
    let today = Utc::now().date_naive();
    let mut pending: Vec<Examined> = Vec::with_capacity(args.batch_size);
    let mut pending_records = 0;
    let mut total = Written::default();
    let mut seen = 0u64;
    let progress = Progress::start(
        "replay",
        Unit::Items("messages"),
        Some(end.saturating_sub(first) + 1),
    );
    loop {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, left) = (info.stream_sequence, info.pending);
        if seq > end {
            break;
        }
        seen += 1;
        let verdicts = batch::examine(
            &prefix,
            &message.subject,
            &message.payload,
            today,
            &settings.loader.limits,
        );
        pending_records += verdicts.len();
        pending.push(Examined {
            stream_seq: seq,
            subject: message.subject.to_string(),
            verdicts,
            traceparent: message
                .headers
                .as_ref()
                .and_then(|h| h.get(proto::trace::HEADER))
                .map(|v| v.as_str().to_string()),
        });
        let done = seq >= end || left == 0;
        if pending_records >= args.batch_size || done {
            total += write(&store, &pending).await?;
            pending.clear();
            pending_records = 0;
            // Positions in the stream: with --source, others are skipped.
            progress.set(seq.saturating_sub(first) + 1);
        }
        if done {
            break;
        }
    }
    if !pending.is_empty() {
        total += write(&store, &pending).await?;
    }
    progress.finish();
    eprintln!(
        "replay done: {seen} messages; {} inserted, {} updated, {} deleted, {} unchanged, {} dead letters",
        total.inserted, total.updated, total.deleted, total.unchanged, total.dead_lettered
    );
    Ok(())
}

struct Examined {
    stream_seq: u64,
    subject: String,
    /// One per record the message carries (a batch message carries many).
    verdicts: Vec<Verdict>,
    /// The message's `traceparent` header: the change a replay makes
    /// continues the publisher's trace, as a live load's does.
    traceparent: Option<String>,
}

/// One transaction, as the loader writes a batch; a batch PostgreSQL
/// rejects for good is written record by record as the loader does
/// (`loader::split`): what still fails becomes a dead letter
/// (`database_rejected`), the rest loads. A transient failure stops the
/// replay (run it again: it is idempotent).
async fn write(store: &Store, examined: &[Examined]) -> anyhow::Result<Written> {
    let view: Vec<loader::store::Examined> = examined
        .iter()
        .flat_map(|e| e.verdicts.iter().map(move |v| (e, v)))
        .map(|(e, v)| loader::store::Examined {
            stream_seq: e.stream_seq,
            item: v.item,
            subject: &e.subject,
            // Replayed messages were delivered once to this tool.
            delivered: 1,
            payload: &v.payload,
            verdict: &v.result,
            traceparent: e.traceparent.as_deref(),
        })
        .collect();
    match store.write_examined(&view).await {
        Ok(written) => Ok(written),
        Err(error) if !etl_runtime::database::is_transient(&error) => {
            eprintln!(
                "PostgreSQL rejected a batch ({}); writing its records one by one",
                loader::split::database_reason(&error)
            );
            let mut total = Written::default();
            for message in &view {
                total += loader::split::write_alone(store, message).await?.written;
            }
            Ok(total)
        }
        Err(error) => Err(error.into()),
    }
}
