//! The consume → write → ack loop.
//!
//! One task fetches: whenever one of the `writers` is free, it sends one pull
//! request (up to `batch_size` messages, waiting at most `batch_wait`) and
//! hands the batch to that writer, so the next batch is fetched while the
//! previous ones are written. Each writer writes its batch in one
//! transaction and acks its messages after commit. A message may carry
//! several records (a batch message): all of them are in that transaction,
//! as loads or as dead letters, before the message is acked. On SIGTERM the fetcher
//! stops requesting; since every request is read to its end, nothing is left
//! delivered but unread, and the batches in hand are finished and acked
//! before the process exits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, message::Message, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch;
use crate::settings::{LoaderSettings, Settings};
use crate::store::{self, Store, Written};
use etl_runtime::database::is_transient;
use etl_runtime::retry::{retry, Attempts};

/// What a loader did in its life, reported at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub written: Written,
    pub batches: u64,
    /// Batches nak'ed for a transient failure (to be redelivered).
    pub retried_batches: u64,
}

struct Shared {
    store: Store,
    subject_prefix: String,
    settings: LoaderSettings,
    summary: Mutex<Summary>,
    shutdown: CancellationToken,
}

/// Runs the loader until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let loader = settings.loader.clone();
    let store = Store::new(settings.database.pool(), &settings.stream.name);

    let pool = store.pool();
    if !etl_runtime::database::wait_for_connection(pool, &loader.retry, &shutdown).await? {
        return Ok(Summary::default());
    }
    if !etl_runtime::database::wait_for_schema(
        pool,
        &etl_runtime::database::MIGRATOR,
        settings.database.migrate,
        &loader.retry,
        &shutdown,
    )
    .await
    .context("preparing the database schema")?
    {
        return Ok(Summary::default());
    }
    etl_runtime::observe::watch_database(store.pool());

    let client = settings
        .nats
        .connect("loader")
        .await
        .context("connecting to NATS")?;
    etl_runtime::observe::watch_nats(&client);
    let js = jetstream::new(client.clone());
    let consumer_config = pull::Config {
        durable_name: Some(loader.consumer.clone()),
        filter_subject: loader
            .filter_subject
            .clone()
            .unwrap_or_else(|| settings.stream.all_subjects()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: loader.ack_wait,
        // Never give up on a message: poison is dead-lettered and terminated
        // by us; a transient failure must be retried until it succeeds.
        max_deliver: -1,
        max_ack_pending: loader.max_ack_pending,
        ..Default::default()
    };
    let (js_ref, stream_settings, name, config) =
        (&js, &settings.stream, &loader.consumer, &consumer_config);
    // The stream and the durable consumer, created if missing: at start, and
    // again whenever the message stream breaks (a consumer deleted during a
    // reconnect must be re-created, not pulled from forever).
    let bind_consumer = || async move {
        let stream = proto::bus::ensure_stream(js_ref, stream_settings).await?;
        let consumer: jetstream::consumer::Consumer<pull::Config> =
            stream.get_or_create_consumer(name, config.clone()).await?;
        Ok::<_, anyhow::Error>(consumer)
    };

    let shared = Arc::new(Shared {
        store,
        subject_prefix: settings.stream.subject_prefix.clone(),
        settings: loader.clone(),
        summary: Mutex::new(Summary::default()),
        shutdown: shutdown.clone(),
    });
    let permits = Arc::new(Semaphore::new(loader.writers.max(1)));
    let mut writers = JoinSet::new();
    // Failed pulls in a row: each binds the consumer again after a wait.
    let mut attempts = Attempts::new(loader.retry, shutdown.clone());

    'consume: while !shutdown.is_cancelled() {
        // Every failure to bind is the bus being away: waited for.
        let bound = retry(
            "binding the NATS consumer",
            &loader.retry,
            &shutdown,
            |_| true,
            bind_consumer,
        );
        let Ok(consumer) = bound.await else {
            break;
        };
        etl_runtime::observe::watch_consumer(&consumer, Duration::from_secs(5), &shutdown);
        etl_runtime::observe::ready();
        if attempts.failed() == 0 {
            tracing::info!(consumer = %loader.consumer, stream = %settings.stream.name, "loader ready");
        }
        loop {
            // A writer must be free before the next batch is requested: at
            // most `writers` batches are ever in hand, and none waits in a
            // buffer where a shutdown would strand it.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'consume,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            };
            let batch = match fetch_batch(&consumer, &loader).await {
                Ok(batch) => batch,
                Err(error) => {
                    drop(permit);
                    // Stopped: the loop's condition ends it.
                    let _ = attempts.wait("pulling from the consumer", &error).await;
                    // The consumer is bound again before the next pull.
                    continue 'consume;
                }
            };
            attempts.succeeded();
            if !batch.is_empty() {
                writers.spawn(write_batch(shared.clone(), batch, permit));
            }
            while let Some(done) = writers.try_join_next() {
                done.context("a writer task panicked")?;
            }
        }
    }

    let finish = async {
        while let Some(done) = writers.join_next().await {
            done.context("a writer task panicked")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(loader.shutdown_timeout, finish).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            "batches still in hand at the shutdown deadline; they will be redelivered"
        ),
    }
    // `ack()` only queues the ack, and `drain()` only queues a drain: flush
    // (which waits for the server's PONG, so every queued ack was written
    // before it) before the process exits, or the last acks are lost and
    // their messages redelivered after `ack_wait`.
    match tokio::time::timeout(Duration::from_secs(10), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "flushing acks to NATS failed; they will be redelivered")
        }
        Err(_) => tracing::warn!("flushing acks to NATS timed out; they will be redelivered"),
    }
    if let Err(error) = client.drain().await {
        tracing::warn!(%error, "draining the NATS connection failed");
    }
    let summary = *shared.summary.lock().unwrap();
    Ok(summary)
}

/// One pull request: up to `batch_size` messages and `batch_bytes` bytes,
/// waiting at most `batch_wait`. The request is read to its end, so no message delivered to
/// this process is left unread — what arrives is the batch in hand, written
/// and acked even during a shutdown.
async fn fetch_batch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    settings: &LoaderSettings,
) -> anyhow::Result<Vec<Message>> {
    let mut messages = consumer
        .batch()
        .max_messages(settings.batch_size)
        .max_bytes(settings.batch_bytes)
        .expires(settings.batch_wait)
        .messages()
        .await?;
    let mut batch = Vec::with_capacity(settings.batch_size);
    // The server ends the request with a timeout notice at `batch_wait`; now
    // and then that notice does not come and the client would wait 5 s more.
    // Past a grace period the request has expired on the server, so nothing
    // more will be delivered to it: take what is buffered and go on.
    let deadline = tokio::time::Instant::now() + settings.batch_wait + Duration::from_millis(500);
    loop {
        let item = match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                tracing::debug!("pull request outlived its expiry; taking what arrived");
                while let Some(Some(Ok(message))) = messages.next().now_or_never() {
                    batch.push(message);
                }
                break;
            }
        };
        match item {
            Ok(message) => batch.push(message),
            // The byte budget is spent: the server ends the request with a
            // "409 Message Size Exceeds MaxBytes" status. A full batch.
            Err(error) if !batch.is_empty() && error.to_string().contains("MaxBytes") => break,
            // Not fatal once messages arrived: write what we have.
            Err(error) if !batch.is_empty() => {
                tracing::warn!(%error, "pull request ended early");
                break;
            }
            Err(error) => return Err(anyhow::anyhow!(error)),
        }
    }
    Ok(batch)
}

/// A message of the batch and, while its group is written, its verdicts:
/// one per record it carries.
struct Examined {
    message: Message,
    stream_seq: u64,
    delivered: i64,
    /// Records the message says it carries (its header), for grouping.
    records: usize,
    /// Filled just before the message's group is written, emptied after.
    verdicts: Vec<batch::Verdict>,
}

impl Examined {
    /// How the message is settled once its records' effects and dead
    /// letters are committed: terminated when none of them loads (so a
    /// poison message is never redelivered), acked otherwise.
    fn settled(&self) -> AckKind {
        if self.verdicts.iter().any(|v| v.result.is_ok()) {
            AckKind::Ack
        } else {
            AckKind::Term
        }
    }
}

async fn write_batch(shared: Arc<Shared>, batch: Vec<Message>, _permit: OwnedSemaphorePermit) {
    // "Today" in the easternmost time zone (UTC+14): a baby born just after
    // midnight in Moscow has a birth date that is still tomorrow in UTC.
    let today = (chrono::Utc::now() + chrono::Duration::hours(14)).date_naive();
    let started = std::time::Instant::now();
    metrics::histogram!("loader_batch_size").record(batch.len() as f64);
    // Records are decoded group by group, just before their transaction,
    // and dropped after it: a pull of batch messages holds thousands of
    // records, and decoding them all at once would multiply the loader's
    // memory (`batch_bytes` bounds the raw bytes, this the decoded ones).
    let mut examined: Vec<Examined> = batch
        .into_iter()
        .map(|message| {
            // Stream sequence 0: the position is unknown (its dead letter
            // gets a key of its own, see `store::DeadLetter::stream_seq`).
            let (stream_seq, delivered) = message
                .info()
                .map(|i| (i.stream_sequence, i.delivered))
                .unwrap_or((0, 1));
            Examined {
                records: proto::batch::record_count(&message.payload),
                message,
                stream_seq,
                delivered,
                verdicts: Vec::new(),
            }
        })
        .collect();
    // Exported traces: the batch's work in each publisher's trace, ended
    // (dropped) once the batch is settled.
    let _traces = trace_spans(&shared, &examined);

    // One transaction per group of messages holding at most `batch_size`
    // records (a message is never split; batch messages carry hundreds).
    let mut start = 0;
    let records: Vec<usize> = examined.iter().map(|e| e.records).collect();
    for end in groups_of_records(&records, shared.settings.batch_size) {
        let (group, later) = examined[start..].split_at_mut(end - start);
        for e in group.iter_mut() {
            e.verdicts = batch::examine(
                &shared.subject_prefix,
                e.message.subject.as_str(),
                &e.message.payload,
                today,
                &shared.settings.limits,
            );
        }
        let written = write_group(&shared, group, later, started).await;
        for e in group.iter_mut() {
            e.verdicts = Vec::new();
        }
        if !written {
            return;
        }
        start = end;
    }
}

/// Where each group of messages ends, given each message's number of
/// records: consecutive messages holding at most `max_records` records
/// together (at least one message per group).
fn groups_of_records(records_per_message: &[usize], max_records: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut records = 0;
    for (i, &n) in records_per_message.iter().enumerate() {
        if records > 0 && records + n > max_records {
            ends.push(i);
            records = 0;
        }
        records += n;
    }
    if !records_per_message.is_empty() {
        ends.push(records_per_message.len());
    }
    ends
}

/// Writes one group in one transaction and settles its messages; `later`
/// (the fetched messages after it) are kept in progress meanwhile. `false`
/// after a transient failure (the group and `later` are nak'ed).
async fn write_group(
    shared: &Shared,
    group: &mut [Examined],
    later: &[Examined],
    started: std::time::Instant,
) -> bool {
    match write_in_progress(shared, group, later).await {
        Ok(written) => {
            settle(group, Examined::settled).await;
            count_written(&written);
            metrics::counter!("loader_batches_total", "outcome" => "committed").increment(1);
            metrics::histogram!("loader_batch_seconds").record(started.elapsed().as_secs_f64());
            let mut summary = shared.summary.lock().unwrap();
            summary.written += written;
            summary.batches += 1;
            tracing::debug!(
                messages = group.len(),
                inserted = written.inserted,
                "batch committed"
            );
            true
        }
        Err(error) if is_transient(&error) => {
            // The later groups were not written either: handed back too.
            hand_back(shared, later).await;
            retry_later(shared, group, &error).await;
            false
        }
        Err(error) => {
            // The driver's own message can quote the data: described only.
            let error = etl_runtime::database::describe(&error);
            tracing::warn!(%error, messages = group.len(), "batch rejected by PostgreSQL; isolating the bad records");
            isolate(shared, group).await;
            true
        }
    }
}

/// [`write`], telling the server every half `ack_wait` that the batch (and
/// the fetched messages waiting behind it, `later`) is still in work, so
/// that a slow write is not redelivered to another instance meanwhile.
async fn write_in_progress(
    shared: &Shared,
    examined: &[Examined],
    later: &[Examined],
) -> Result<Written, sqlx::Error> {
    let write = write(&shared.store, examined);
    tokio::pin!(write);
    let every = (shared.settings.ack_wait / 2).max(Duration::from_millis(100));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            result = &mut write => return result,
            _ = progress.tick() => {
                settle(examined, |_| AckKind::Progress).await;
                settle(later, |_| AckKind::Progress).await;
            }
        }
    }
}

/// Writes the loadable records (newest version per record) and the dead
/// letters of the others in one transaction.
async fn write(store: &Store, examined: &[Examined]) -> Result<Written, sqlx::Error> {
    let view: Vec<store::Examined> = examined
        .iter()
        .flat_map(|e| e.verdicts.iter().map(move |v| record(e, v)))
        .collect();
    store.write_examined(&view).await
}

/// One record of a message, as the store takes it.
fn record<'a>(e: &'a Examined, v: &'a batch::Verdict) -> store::Examined<'a> {
    store::Examined {
        stream_seq: e.stream_seq,
        item: v.item,
        subject: e.message.subject.as_str(),
        delivered: e.delivered,
        payload: &v.payload,
        verdict: &v.result,
        traceparent: traceparent(&e.message),
    }
}

/// The message's `traceparent` header, if it has one.
fn traceparent(message: &Message) -> Option<&str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(proto::trace::HEADER))
        .map(|v| v.as_str())
}

/// One span per publisher's trace among the batch's messages, a child of
/// the `traceparent` in their headers (only when traces are exported).
fn trace_spans(shared: &Shared, examined: &[Examined]) -> Vec<tracing::Span> {
    let headers = examined.iter().map(|e| traceparent(&e.message));
    etl_runtime::telemetry::continue_traces(headers, |first, n| {
        let e = &examined[first];
        let source =
            proto::bus::source_from_subject(&shared.subject_prefix, e.message.subject.as_str())
                .unwrap_or("-");
        tracing::info_span!(
            "loader.write",
            source,
            messages = n,
            batch = examined.len(),
            first_stream_seq = e.stream_seq
        )
    })
}

/// Records loaded by outcome, and dead letters.
fn count_written(written: &Written) {
    for (outcome, n) in [
        ("inserted", written.inserted),
        ("updated", written.updated),
        ("deleted", written.deleted),
        ("unchanged", written.unchanged),
    ] {
        metrics::counter!("loader_records_loaded_total", "outcome" => outcome).increment(n);
    }
    metrics::counter!("loader_records_dead_lettered_total").increment(written.dead_lettered);
}

/// A transient failure: hand the batch back to the server with a delay that
/// grows with its deliveries, and pause this writer as long (so a loader
/// facing a down database does not spin).
async fn retry_later(shared: &Shared, examined: &[Examined], error: &sqlx::Error) {
    let delay = hand_back(shared, examined).await;
    let error = etl_runtime::database::describe(error);
    tracing::warn!(%error, messages = examined.len(), delay_ms = delay.as_millis() as u64,
        "transient failure writing a batch; it will be redelivered");
    metrics::counter!("loader_batches_total", "outcome" => "retried").increment(1);
    shared.summary.lock().unwrap().retried_batches += 1;
    sleep_or_cancel(delay, &shared.shutdown).await;
}

/// Hands messages back to the server (nak) with a delay that grows with
/// their deliveries; the delay.
async fn hand_back(shared: &Shared, examined: &[Examined]) -> Duration {
    let attempt = examined
        .iter()
        .map(|e| e.delivered)
        .max()
        .unwrap_or(1)
        .clamp(1, 32) as u32;
    let delay = shared.settings.retry.delay(attempt);
    settle(examined, |_| AckKind::Nak(Some(delay))).await;
    delay
}

/// PostgreSQL rejected the batch for a reason that will not go away. Write
/// each message alone, and the records of a message that still fails one
/// by one ([`crate::split`]): the records that still fail are dead-lettered
/// with the database's reason, the rest load. A message is settled only
/// once all of its records are written or dead-lettered (terminated when
/// none of them loaded). Records of a message that then meets a transient
/// failure are written again on its redelivery, which changes nothing.
async fn isolate(shared: &Shared, examined: &[Examined]) {
    for e in examined {
        let result = match write(&shared.store, std::slice::from_ref(e)).await {
            Err(error) if !is_transient(&error) => isolate_records(&shared.store, e).await,
            other => other.map(|written| (written, e.settled())),
        };
        match result {
            Ok((written, kind)) => {
                settle(std::slice::from_ref(e), |_| kind).await;
                count_written(&written);
                shared.summary.lock().unwrap().written += written;
            }
            Err(error) => retry_later(shared, std::slice::from_ref(e), &error).await,
        }
    }
}

/// Writes each record of `e` alone ([`crate::split::write_alone`]); how to
/// settle the message: terminated if every record was set aside.
async fn isolate_records(store: &Store, e: &Examined) -> Result<(Written, AckKind), sqlx::Error> {
    let mut total = Written::default();
    let mut any_loaded = false;
    for v in &e.verdicts {
        let alone = crate::split::write_alone(store, &record(e, v)).await?;
        total += alone.written;
        any_loaded |= !alone.set_aside;
    }
    Ok((
        total,
        if any_loaded {
            AckKind::Ack
        } else {
            AckKind::Term
        },
    ))
}

async fn settle(examined: &[Examined], kind: impl Fn(&Examined) -> AckKind) {
    for e in examined {
        if let Err(error) = e.message.ack_with(kind(e)).await {
            // The server will redeliver after ack_wait; the write is idempotent.
            tracing::warn!(%error, stream_seq = e.stream_seq, "acknowledging failed");
        }
    }
}

/// Sleeps; `false` if shut down first.
async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::groups_of_records;

    #[test]
    fn groups_hold_whole_messages_up_to_the_record_limit() {
        assert_eq!(groups_of_records(&[1; 5], 2000), [5]);
        assert_eq!(
            groups_of_records(&[400, 400, 400, 400, 400, 400], 2000),
            [5, 6]
        );
        // A message larger than the limit goes alone, never split.
        assert_eq!(groups_of_records(&[1, 3000, 1], 2000), [1, 2, 3]);
        assert_eq!(groups_of_records(&[], 2000), Vec::<usize>::new());
    }
}
