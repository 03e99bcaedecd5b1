//! The matcher service: wait for changes, apply them in batches.
//!
//! It wakes on `NOTIFY record_changes` (sent by the loader after each commit)
//! and polls every `poll_interval` as well, so a notification lost while the
//! LISTEN connection was being re-made delays a change by at most that long.
//! Each batch is one transaction (see [`crate::engine`]); on SIGTERM the batch
//! in hand is finished and committed, then the service exits. A kill -9 rolls
//! the open transaction back: its change rows are claimed again at restart.
//! The relay of person events ([`crate::events`]) runs beside the loop and
//! stops with it.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::{Applied, Engine, Scoring, Setup};
use crate::leader::Leadership;
use crate::settings::ScoringKind;
use crate::settings::Settings;
use etl_runtime::database::is_transient;
use etl_runtime::retry::Attempts;

/// Connects (waiting with backoff while PostgreSQL is down), applies the
/// migrations and writes the source priority.
async fn prepare(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<PgPool>> {
    let pool = settings.database.pool();
    if !etl_runtime::database::wait_for_connection(&pool, &settings.matcher.retry, shutdown).await?
    {
        return Ok(None);
    }
    if !etl_runtime::database::wait_for_schema(
        &pool,
        &etl_runtime::database::MIGRATOR,
        settings.database.migrate,
        &settings.matcher.retry,
        shutdown,
    )
    .await
    .context("preparing the database schema")?
    {
        return Ok(None);
    }
    // Instances starting together write the priority one after the other.
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    sqlx::query("DELETE FROM match_source_priority")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO match_source_priority (source, rank)
         SELECT s, r::int FROM UNNEST($1::text[]) WITH ORDINALITY AS t(s, r)",
    )
    .bind(&settings.matcher.source_priority)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(pool))
}

pub fn engine(settings: &Settings) -> Engine {
    let m = &settings.matcher;
    let scoring = match m.scoring {
        ScoringKind::Rules => Scoring::Rules(m.weights.clone()),
        // The model in use is read with the blocking index, before the
        // first batch.
        ScoringKind::Model => Scoring::Model {
            model: std::sync::Arc::new(crate::model::Model::priors()),
            thresholds: m.model,
        },
    };
    let mut engine = Engine::with_setup(Setup {
        scoring,
        max_block_size: m.max_block_size,
        actor: "matcher".into(),
    });
    engine.read_ahead_from = settings.matcher.read_ahead_from;
    engine
}

/// Runs the matcher until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Applied> {
    let mut total = Applied::default();
    let Some(pool) = prepare(&settings, &shutdown).await? else {
        return Ok(total);
    };
    let engine = engine(&settings);
    let m = &settings.matcher;
    let mut listener = listen(&pool).await;
    let mut attempts = Attempts::new(m.retry, shutdown.clone());
    let mut size = BatchSize::new(m.batch_size, m.max_batch_size);
    let mut leader = Leadership::new(LEADER_LOCK, "matcher");
    etl_runtime::observe::watch_database(&pool);
    crate::gauges::spawn(&pool, &shutdown);
    // The person events' relay: beside the matching loop, with its own
    // connections and its own lock (`events`), stopped by the same token.
    let relay = tokio::spawn(crate::events::relay(settings.clone(), shutdown.clone()));
    etl_runtime::observe::ready();
    tracing::info!("matcher started");
    while !shutdown.is_cancelled() {
        if !leader.hold(&pool).await {
            // Another instance is active: stand by.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wait_notification(&mut listener, &pool, m.poll_interval) => {}
            }
            continue;
        }
        if leader.became() {
            // Build the index before the first change needs it.
            if let Err(error) = engine.prepare_index(&pool).await {
                tracing::warn!(error = %describe(&error), "building the blocking index failed; the next batch retries");
            }
        }
        let started = std::time::Instant::now();
        match engine
            .process_batch_reading_ahead(&pool, size.limit(), size.if_full())
            .await
        {
            Ok(Some(applied)) if applied.changes > 0 => {
                attempts.succeeded();
                size.applied(&applied);
                record_batch(&applied, started.elapsed());
                total += applied;
                continue;
            }
            Ok(Some(applied)) => {
                attempts.succeeded();
                size.applied(&applied);
            }
            // Another instance holds the lock: stand by.
            Ok(None) => {}
            Err(error) => {
                // Every failed batch is retried: what a change could be
                // blamed for was set aside by the quarantine, so what is
                // left (the server away, or a schema error every change
                // would hit) waits for the server or the operator's fix.
                let kind = if is_transient(&error) {
                    "transient"
                } else {
                    "permanent"
                };
                metrics::counter!("matcher_batch_failures_total", "kind" => kind).increment(1);
                if attempts.wait("batch", &describe(&error)).await.is_err() {
                    break;
                }
                continue;
            }
        }
        // Idle: wait for a notification, the poll interval, or shutdown.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wait_notification(&mut listener, &pool, m.poll_interval) => {}
        }
    }
    tracing::info!("matcher stopping");
    // The listener holds a pooled connection: release it before closing.
    drop(listener);
    leader.release().await;
    pool.close().await;
    if let Err(error) = relay.await {
        tracing::warn!(%error, "the person event relay ended abnormally");
    }
    Ok(total)
}

/// The metrics of a batch that applied changes.
fn record_batch(applied: &Applied, took: Duration) {
    metrics::counter!("matcher_changes_total").increment(applied.changes);
    metrics::histogram!("matcher_batch_size").record(applied.changes as f64);
    for (outcome, n) in [
        ("moved", applied.moved),
        ("person_created", applied.persons_created),
        ("review_opened", applied.reviews_opened),
    ] {
        metrics::counter!("matcher_records_matched_total", "outcome" => outcome).increment(n);
    }
    metrics::histogram!("matcher_batch_seconds").record(took.as_secs_f64());
    tracing::debug!(?applied, "batch applied");
}

/// Which instance works: the one holding this session-level advisory lock
/// on a connection of its own. The others stand by without competing for
/// [`crate::engine::MATCH_LOCK`] at each notification, so the work — and
/// the blocking index, which an instance rebuilds (seconds at a million
/// records) whenever another one matched in between — stays with one
/// instance until it dies (its session, and the lock, die with it).
/// Correctness does not depend on it: every batch still takes `MATCH_LOCK`
/// and checks the index generation.
pub const LEADER_LOCK: i64 = crate::engine::MATCH_LOCK + 1;

/// How many changes the next batch claims: `batch_size` while the feed is
/// quiet; after each full batch (a backlog) four times more, up to
/// `max_batch_size`; back to `batch_size` after one that was not full.
#[derive(Debug, Clone, Copy)]
pub struct BatchSize {
    small: i64,
    large: i64,
    next: i64,
}

impl BatchSize {
    pub fn new(small: i64, large: i64) -> BatchSize {
        let small = small.max(1);
        BatchSize {
            small,
            large: large.max(small),
            next: small,
        }
    }

    pub fn limit(&self) -> i64 {
        self.next
    }

    /// The limit after a full batch: what a full batch reads ahead.
    pub fn if_full(&self) -> i64 {
        (self.next.saturating_mul(4)).min(self.large)
    }

    /// A batch applied `a`: a backlog ([`Applied::backlog`]) keeps the
    /// batches growing.
    pub fn applied(&mut self, a: &Applied) {
        self.next = if a.backlog {
            self.if_full()
        } else {
            self.small
        };
    }
}

/// Applies every pending change with the service's batch sizes (tests,
/// benchmarks); `None` if another instance holds the lock.
pub async fn drain(
    engine: &Engine,
    pool: &PgPool,
    mut size: BatchSize,
) -> sqlx::Result<Option<Applied>> {
    let mut total = Applied::default();
    loop {
        let Some(applied) = engine
            .process_batch_reading_ahead(pool, size.limit(), size.if_full())
            .await?
        else {
            return Ok(None);
        };
        if applied.changes == 0 {
            return Ok(Some(total));
        }
        size.applied(&applied);
        total += applied;
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen("record_changes").await.ok()?;
    Some(listener)
}

async fn wait_notification(listener: &mut Option<PgListener>, pool: &PgPool, poll: Duration) {
    match listener {
        Some(l) => {
            let got = tokio::time::timeout(poll, l.recv()).await;
            if let Ok(Err(error)) = got {
                tracing::warn!(error = %describe(&error), "LISTEN connection lost; polling");
                *listener = None;
            }
        }
        None => {
            tokio::time::sleep(poll).await;
            *listener = listen(pool).await;
        }
    }
}

/// A full re-match, once.
pub async fn rematch(settings: &Settings) -> anyhow::Result<Applied> {
    let shutdown = CancellationToken::new();
    let pool = prepare(settings, &shutdown).await?.context("no database")?;
    Ok(engine(settings).rematch_all(&pool).await?)
}

pub use etl_runtime::database::describe;

#[cfg(test)]
mod tests {
    use super::BatchSize;
    use crate::engine::Applied;

    /// A batch that claimed `n` of its `limit` changes.
    fn batch(n: u64, limit: i64) -> Applied {
        Applied {
            changes: n,
            backlog: n as i64 >= limit,
            ..Applied::default()
        }
    }

    #[test]
    fn batches_grow_under_a_backlog_and_shrink_when_quiet() {
        let mut s = BatchSize::new(500, 20_000);
        assert_eq!(s.limit(), 500);
        s.applied(&batch(500, s.limit()));
        assert_eq!(s.limit(), 2_000);
        s.applied(&batch(2_000, s.limit()));
        s.applied(&batch(8_000, s.limit()));
        assert_eq!(s.limit(), 20_000);
        s.applied(&batch(20_000, s.limit()));
        assert_eq!(s.limit(), 20_000);
        s.applied(&batch(3, s.limit()));
        assert_eq!(s.limit(), 500);
        s.applied(&batch(0, s.limit()));
        assert_eq!(s.limit(), 500);
    }
}
