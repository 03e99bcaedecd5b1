//! Person events on the bus: the relay that publishes the outbox
//! `person_events` (written by every transaction that changes persons:
//! `engine::events`) to NATS JetStream, and the replay of a range.
//!
//! * **Subjects** `<events.subject_prefix>.<kind>` (`persons.created`, …) in
//!   a stream of their own (`events.stream`, `PERSONS`). The payload is JSON:
//!   `event_id`, `kind`, `person_id`, `other_person_id`, `records`, `at`
//!   (matcher/EVENTS.md). Ids and sources only.
//! * **Order.** Events are published in `event_id` order, which is commit
//!   order: every writer of `person_events` holds the matcher lock
//!   (`engine::MATCH_LOCK`; the table's trigger takes it for a writer that
//!   does not), so a transaction draws its ids only after the previous one
//!   ended. When the relay sees id N, every smaller id is visible already or
//!   belongs to a transaction that rolled back: a gap is never a
//!   transaction still running, and reading on from a cursor skips nothing.
//!   (Without that lock a gap could be a long transaction that commits
//!   later, and a cursor would skip it; a delay past each gap would only
//!   make that rarer.)
//! * **At least once, made exactly once by the stream.** The relay marks
//!   events published (moves its cursor, `person_event_relay`) only after
//!   the stream acknowledged them. Killed in between, it publishes them
//!   again after restart with the same `Nats-Msg-Id` (the event id), and the
//!   stream drops them as duplicates within `events.duplicate_window`.
//! * **One relay at a time**: the instance holding [`RELAY_LOCK`] (a
//!   session-level advisory lock); the others stand by. It runs beside the
//!   matching loop in the matcher service, with its own connections, and
//!   never delays matching: NATS down only lets events wait in PostgreSQL.
//! * **Retention.** Published events older than `events.retention` are
//!   deleted by the relay (once a minute); until then
//!   [`replay`] re-emits a range for a consumer that lost its state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::leader::Leadership;
use crate::lock::MATCH_LOCK;
use crate::settings::{EventsSettings, Settings};
use etl_runtime::database::describe;
use etl_runtime::retry::Attempts;

/// The session-level advisory lock of the active relay.
pub const RELAY_LOCK: i64 = MATCH_LOCK + 2;

/// The channel `person_events`' trigger notifies at each commit.
const CHANNEL: &str = "person_events";

/// The header a replayed message carries: the replay's run id.
pub const REPLAY_HEADER: &str = "Etl-Replay";

/// How often published events past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The stream of person events.
pub fn stream_config(s: &EventsSettings) -> stream::Config {
    stream::Config {
        name: s.stream.clone(),
        subjects: vec![format!("{}.>", s.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: s.max_age,
        duplicate_window: s.duplicate_window,
        num_replicas: s.replicas,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// An event as published.
#[derive(Debug, sqlx::FromRow)]
pub struct Outgoing {
    pub event_id: i64,
    pub kind: String,
    /// The JSON payload.
    pub payload: String,
}

/// A query of events as published, from `person_events`, with `$rest`
/// (conditions, order) appended: a `&'static str`.
macro_rules! outgoing {
    ($rest:literal) => {
        concat!(
            "SELECT event_id, kind, json_build_object(
                 'event_id', event_id, 'kind', kind, 'person_id', person_id,
                 'other_person_id', other_person_id, 'records', records, 'at', created_at)::text AS payload
             FROM person_events ",
            $rest
        )
    };
}

/// Publishes `events` in order, all in flight at once, then awaits their
/// acks in order: how many were acknowledged from the first on, and the
/// failure that stopped the count, if any. `replay`: the run id of a
/// replay (another message id, so that the stream keeps them).
async fn publish(
    js: &jetstream::Context,
    settings: &EventsSettings,
    events: &[Outgoing],
    replay: Option<&str>,
) -> (usize, Option<anyhow::Error>) {
    let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
    let mut failed = None;
    for e in events {
        let mut message = jetstream::message::PublishMessage::build()
            .payload(e.payload.clone().into_bytes().into());
        message = match replay {
            None => message.message_id(e.event_id.to_string()),
            Some(run) => message
                .message_id(format!("{}:replay:{run}", e.event_id))
                .header(REPLAY_HEADER, run),
        };
        let subject = format!("{}.{}", settings.subject_prefix, e.kind);
        match js.send_publish(subject, message).await {
            Ok(ack) => acks.push(ack),
            Err(error) => {
                failed = Some(anyhow::Error::new(error).context("publishing a person event"));
                break;
            }
        }
    }
    // Every ack is awaited (none left behind); counted up to the first
    // that failed.
    let mut acked = 0;
    let mut unbroken = true;
    for ack in acks {
        match ack.await {
            Ok(_) if unbroken => acked += 1,
            Ok(_) => {}
            Err(error) => {
                unbroken = false;
                failed.get_or_insert_with(|| {
                    anyhow::Error::new(error)
                        .context("the stream did not acknowledge a person event")
                });
            }
        }
    }
    (acked, failed)
}

/// Publishes every event past the cursor, a batch at a time, moving the
/// cursor after each batch's acks. The number published.
async fn publish_pending(
    pool: &PgPool,
    js: &jetstream::Context,
    settings: &EventsSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let cursor: i64 = sqlx::query_scalar("SELECT published_up_to FROM person_event_relay")
            .fetch_one(pool)
            .await
            .map_err(db)?;
        let batch: Vec<Outgoing> =
            sqlx::query_as(outgoing!("WHERE event_id > $1 ORDER BY event_id LIMIT $2"))
                .persistent(crate::queue::KEEP_PLAN)
                .bind(cursor)
                .bind(settings.batch_size)
                .fetch_all(pool)
                .await
                .map_err(db)?;
        if batch.is_empty() {
            return Ok(total);
        }
        let (acked, failed) = publish(js, settings, &batch, None).await;
        if acked > 0 {
            // Never backwards (another relay, after this one lost its lock,
            // may have gone further).
            sqlx::query(
                "UPDATE person_event_relay SET published_up_to = greatest(published_up_to, $1),
                     updated_at = now()",
            )
            .bind(batch[acked - 1].event_id)
            .execute(pool)
            .await
            .map_err(db)?;
            let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
            for e in &batch[..acked] {
                *kinds.entry(e.kind.as_str()).or_default() += 1;
            }
            for (kind, n) in kinds {
                metrics::counter!("matcher_person_events_published_total", "kind" => kind.to_string())
                    .increment(n);
            }
            total += acked as u64;
        }
        if let Some(error) = failed {
            return Err(error);
        }
        if (batch.len() as i64) < settings.batch_size || shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}

/// Deletes the events past the retention that were published (all of them
/// when publishing is off).
async fn prune(pool: &PgPool, settings: &EventsSettings) -> anyhow::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM person_events WHERE created_at < now() - make_interval(secs => $1)
             AND (NOT $2 OR event_id <= (SELECT published_up_to FROM person_event_relay))",
    )
    .bind(settings.retention.as_secs_f64())
    .bind(settings.enabled)
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected();
    if deleted > 0 {
        tracing::info!(events = deleted, "person events past the retention deleted");
    }
    Ok(deleted)
}

/// The relay's connection to the bus: made once (the client reconnects by
/// itself); the stream is created on the first round that reaches NATS.
struct Bus {
    js: Option<jetstream::Context>,
    stream_ready: bool,
}

impl Bus {
    async fn ready(&mut self, settings: &Settings) -> anyhow::Result<jetstream::Context> {
        if self.js.is_none() {
            let client = settings.nats.connect("matcher-events").await?;
            self.js = Some(jetstream::new(client));
        }
        let js = self.js.clone().expect("connected above");
        if !self.stream_ready {
            js.get_or_create_stream(stream_config(&settings.events))
                .await
                .with_context(|| format!("creating the stream {}", settings.events.stream))?;
            self.stream_ready = true;
        }
        Ok(js)
    }
}

/// Runs the relay until `shutdown`: publishes events when notified (each
/// commit that wrote some) or every `events.poll_interval`, prunes once a
/// minute. On shutdown the batch in flight is acknowledged and recorded
/// first.
pub async fn relay(settings: Settings, shutdown: CancellationToken) {
    let events = &settings.events;
    // Connections of its own: the matcher's pool is sized for matching.
    let mut db = settings.database.clone();
    db.max_connections = 2;
    let pool = db.pool();
    let mut leader = Leadership::new(RELAY_LOCK, "event relay");
    let mut listener: Option<PgListener> = None;
    let mut bus = Bus {
        js: None,
        stream_ready: false,
    };
    let mut pruned: Option<Instant> = None;
    let mut attempts = Attempts::new(events.retry, shutdown.clone());
    while !shutdown.is_cancelled() {
        if leader.hold(&pool).await {
            if listener.is_none() {
                listener = listen(&pool).await;
            }
            let round = async {
                if events.enabled {
                    let js = bus.ready(&settings).await?;
                    publish_pending(&pool, &js, events, &shutdown).await?;
                }
                if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    prune(&pool, events).await?;
                    pruned = Some(Instant::now());
                }
                anyhow::Ok(())
            };
            if let Err(error) = round.await {
                metrics::counter!("matcher_person_event_failures_total").increment(1);
                // `{:#}`: the error with its causes.
                let error = format!("{error:#}");
                if attempts
                    .wait("relaying person events", &error)
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            attempts.succeeded();
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wait(&mut listener, events.poll_interval) => {}
        }
    }
    drop(listener);
    leader.release().await;
    pool.close().await;
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    Some(listener)
}

/// A notification, or `poll` (a lost LISTEN connection is made again at the
/// next round).
async fn wait(listener: &mut Option<PgListener>, poll: Duration) {
    match listener {
        Some(l) => {
            if let Ok(Err(error)) = tokio::time::timeout(poll, l.recv()).await {
                tracing::warn!(error = %describe(&error), "LISTEN connection of the event relay lost; polling");
                *listener = None;
            }
        }
        None => tokio::time::sleep(poll).await,
    }
}

fn db(error: sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!(describe(&error))
}

/// Which events [`replay`] re-emits.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// `from` to `to` (inclusive; `None`: the last published one).
    Ids { from: i64, to: Option<i64> },
    /// Those written at or after this time.
    Since(DateTime<Utc>),
}

/// What a replay re-emitted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub events: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// The oldest event still kept (older ones are past the retention).
    pub oldest_kept: Option<i64>,
}

/// Re-emits the published events of `range` on their subjects, in id order,
/// for a consumer that lost its state: the same payloads, with the header
/// [`REPLAY_HEADER`] set to `run` and the message id `<event id>:replay:<run>`
/// (the stream keeps them; the event id in the payload lets every consumer
/// skip what it has applied). Events not yet published are left to the
/// relay.
pub async fn replay(
    pool: &PgPool,
    js: &jetstream::Context,
    settings: &EventsSettings,
    range: Range,
    run: &str,
) -> anyhow::Result<Replayed> {
    let (cursor, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT published_up_to, (SELECT min(event_id) FROM person_events) FROM person_event_relay",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let (from, to) = match range {
        Range::Ids { from, to } => (from, to.unwrap_or(cursor).min(cursor)),
        Range::Since(at) => {
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT min(event_id) FROM person_events WHERE created_at >= $1",
            )
            .bind(at)
            .fetch_one(pool)
            .await
            .map_err(db)?;
            (first.unwrap_or(i64::MAX), cursor)
        }
    };
    js.get_or_create_stream(stream_config(settings))
        .await
        .with_context(|| format!("the stream {}", settings.stream))?;
    let mut out = Replayed {
        oldest_kept: oldest,
        ..Default::default()
    };
    let mut after = from.saturating_sub(1);
    while after < to {
        let batch: Vec<Outgoing> = sqlx::query_as(outgoing!(
            "WHERE event_id > $1 AND event_id <= $2 ORDER BY event_id LIMIT $3"
        ))
        .persistent(crate::queue::KEEP_PLAN)
        .bind(after)
        .bind(to)
        .bind(settings.batch_size)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let Some(last) = batch.last() else { break };
        let (acked, failed) = publish(js, settings, &batch, Some(run)).await;
        if let Some(error) = failed {
            return Err(error.context(format!(
                "replayed {} events up to {:?}; run again from the next id",
                out.events + acked as u64,
                batch
                    .get(acked.wrapping_sub(1))
                    .map(|e| e.event_id)
                    .or(out.last)
            )));
        }
        out.first = out.first.or(Some(batch[0].event_id));
        out.last = Some(last.event_id);
        out.events += batch.len() as u64;
        after = last.event_id;
    }
    Ok(out)
}
