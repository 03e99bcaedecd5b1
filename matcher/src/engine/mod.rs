//! Where records are matched: the PostgreSQL side of the matcher.
//!
//! Every change is applied in one transaction that holds the matcher's
//! advisory lock ([`MATCH_LOCK`]): recompute the changed records' blocking
//! keys and pairwise decisions, then recompute the persons of the affected
//! component (everything connected to the changed records through links,
//! operator links and current person membership), write the differences
//! (memberships, persons, review items) and the audit rows, and delete the
//! claimed change-feed rows. A crash before commit changes nothing; the rows
//! are claimed again after a restart.
//!
//! The modules depend on each other in one direction only (no circles):
//! this file (the [`Engine`], its batch loop and its state) uses the
//! paths; the paths use the shared parts; the shared parts use nothing of
//! the engine but the leaves.
//!
//! * Paths: [`quarantine`] (a change that fails for a reason of its data is
//!   isolated and set aside as a dead letter; the rest of its batch is
//!   matched) → [`incremental`] (a set of changed records, from one to a
//!   backlog of tens of thousands, every step one set-based statement) →
//!   [`ahead`] (under a backlog, the next batch's records are read and its
//!   pairs prepared while a batch works) → [`pairing`] (a batch's first
//!   half: keys, blocks, pairs). [`rematch`]: everything from scratch
//!   ([`Engine::rematch_all`]), in memory, with the tables' indexes rebuilt
//!   after a bulk COPY.
//! * Shared: [`component`] (from pairs to persons: load the state of a set
//!   of records, cluster, assign person ids, write the difference),
//!   [`write`] (COPY of the rows both paths write), [`events`] (the
//!   person events of an application, written with it), [`index`] (the blocking
//!   index, in the active instance's memory, kept equal to the database by
//!   the generation in `match_state`).
//! * Leaves: [`setup`] (how a pair is decided: a pure function of two
//!   records), [`types`], [`rows`] (records read by name), [`par`] (work on
//!   every core), [`phases`] (timing logs), [`lock`] (the advisory lock).
//!
//! A unit test reads the modules' imports and fails on a circle.

mod ahead;
mod component;
pub mod events;
mod incremental;
pub mod index;
mod pairing;
pub use crate::par::par_map;
mod phases;
pub mod quarantine;
mod rematch;
mod rows;
mod setup;
mod types;
mod write;

#[cfg(test)]
mod layers;

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use index::{BlockIndex, Undo};
use phases::Phases;

use crate::rules::Weights;

pub use setup::{Scoring, Setup};
pub use types::{Applied, Evidence, PairRow, Rec};
pub use write::audit_one;

pub use crate::lock::MATCH_LOCK;
use crate::queue::KEEP_PLAN;

#[derive(Debug, Clone)]
pub struct Engine {
    /// How pairs are decided (the same for every path); the model in it
    /// is reloaded with the blocking index (a trained model bumps the
    /// generation).
    setup: Arc<std::sync::RwLock<Setup>>,
    /// A batch of at least this many changes that comes back full (a
    /// backlog) starts reading the next batch's records ahead
    /// ([`ahead`]; setting `matcher.read_ahead_from`).
    pub read_ahead_from: usize,
    /// The blocking index of this instance (shared by clones of the engine;
    /// one batch at a time holds it).
    index: Arc<tokio::sync::Mutex<BlockIndex>>,
    /// A read-ahead for the next batch ([`Engine::read_ahead`]).
    ahead: Arc<std::sync::Mutex<Option<ahead::Pending>>>,
    /// The next batch's first half, prepared while the last batch wrote
    /// ([`ahead::Prepared`]); its index changes are in the index.
    prepared: Arc<std::sync::Mutex<Option<ahead::Prepared>>>,
    /// What batches took from a read-ahead (tests, benchmarks).
    used: Arc<Used>,
}

impl Engine {
    /// An engine scoring by the fixed rules with `weights`.
    pub fn new(weights: Weights, max_block_size: i64) -> Engine {
        Self::with_setup(Setup {
            scoring: Scoring::Rules(weights),
            max_block_size,
            actor: "matcher".into(),
        })
    }

    pub fn with_setup(setup: Setup) -> Engine {
        Engine {
            setup: Arc::new(std::sync::RwLock::new(setup)),
            read_ahead_from: 2_000,
            index: Arc::default(),
            ahead: Arc::default(),
            prepared: Arc::default(),
            used: Arc::default(),
        }
    }

    /// How many records batches have taken from a read-ahead so far
    /// (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn read_ahead_used(&self) -> u64 {
        self.used
            .read_ahead
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many records batches have taken with their pairs prepared while
    /// the batch before wrote ([`ahead::Prepared`]) so far (feature
    /// `testing`).
    #[cfg(feature = "testing")]
    pub fn prepared_used(&self) -> u64 {
        self.used
            .prepared
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads ahead the records of up to `limit` changes after `after` and
    /// waits until that is done: the next batch may use them. What a batch
    /// that comes back full does by itself; public for tests, which change
    /// records in between.
    pub async fn read_ahead(&self, pool: &PgPool, after: i64, limit: i64) {
        let pending = ahead::start(pool, after, limit).finished().await;
        *self.ahead.lock().expect("not poisoned") = Some(pending);
    }

    /// How pairs are decided now.
    pub fn setup(&self) -> Setup {
        self.setup.read().expect("not poisoned").clone()
    }

    /// Replaces `index` by one built from `source_records`, and reloads the
    /// model in use with it (the caller holds the lock; the generation is
    /// the caller's to set).
    async fn rebuild(&self, index: &mut BlockIndex, conn: &mut PgConnection) -> sqlx::Result<()> {
        let setup = self.setup().reloaded(conn).await?;
        *self.setup.write().expect("not poisoned") = setup;
        rebuild(index, conn).await
    }

    /// Takes the matcher lock for this transaction if it is free.
    pub async fn try_lock(tx: &mut PgConnection) -> sqlx::Result<bool> {
        crate::lock::try_lock(tx).await
    }

    /// Waits for the matcher lock for this transaction.
    pub async fn lock(tx: &mut PgConnection) -> sqlx::Result<()> {
        crate::lock::lock(tx).await
    }

    /// Claims up to `limit` change-feed rows and applies them in one
    /// transaction. `Ok(None)` when another instance holds the lock.
    ///
    /// The batch bumps the generation in `match_state`; when the one it
    /// finds is not the one this instance last wrote (first batch, another
    /// instance or a re-match worked in between), the blocking index is
    /// rebuilt from `source_records` first, under the lock. The index
    /// changes of a batch that does not commit are undone.
    pub async fn process_batch(&self, pool: &PgPool, limit: i64) -> sqlx::Result<Option<Applied>> {
        self.process_batch_reading_ahead(pool, limit, limit).await
    }

    /// [`Engine::process_batch`]; if the batch comes back full (a backlog)
    /// and holds at least `read_ahead_from` changes, the records of the
    /// next `ahead_limit` changes are read ahead while it matches
    /// ([`ahead`]): the service passes the next batch's size.
    pub async fn process_batch_reading_ahead(
        &self,
        pool: &PgPool,
        limit: i64,
        ahead_limit: i64,
    ) -> sqlx::Result<Option<Applied>> {
        let mut index = self.index.lock().await;
        let mut tx = pool.begin().await?;
        match Self::try_lock(&mut tx).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(error) => return Err(rolled_back(tx, error).await),
        }
        // This batch's first half, if the batch before prepared it
        // ([`ahead::Prepared`]): its index changes are undone unless the
        // batch uses it.
        let prepared = self.prepared.lock().expect("not poisoned").take();
        // No change after those the prepared half read ([`ahead::Prepared::last_change`]).
        let up_to = prepared.as_ref().map(|p| p.last_change);
        let claiming = std::time::Instant::now();
        let claimed = match claim(&mut tx, limit, up_to).await {
            Ok(claimed) => claimed,
            Err(error) => return Err(abandoned(tx, &mut index, prepared, error).await),
        };
        let pending = self.ahead.lock().expect("not poisoned").take();
        if claimed.is_empty() {
            if let Some(p) = prepared {
                index.undo(p.undo);
            }
            tx.commit().await?;
            return Ok(Some(Applied::default()));
        }
        let backlog = claimed.len() as i64 == limit || up_to.is_some();
        let loud = claimed.len() >= pairing::LOUD_BATCH;
        let mut phases = Phases::since("claim", claimed.len(), loud, claiming);
        phases.mark("changes claimed");
        let mut overlap = ahead::Overlap {
            next_ahead: self.next_ahead(pool, &claimed, backlog, ahead_limit),
            ..Default::default()
        };
        let mut ready = self.ready(pending, &claimed).await;
        phases.mark("read-ahead checked");
        let before = match bump_generation(&mut tx).await {
            Ok(before) => before,
            Err(error) => return Err(abandoned(tx, &mut index, prepared, error).await),
        };
        let prepared = if index.generation != Some(before) {
            // Rebuilt: what was prepared on the old index goes with it.
            drop(prepared);
            if let Err(error) = self.rebuild(&mut index, &mut tx).await {
                return Err(rolled_back(tx, error).await);
            }
            None
        } else {
            prepared
        };
        overlap.this = self.fitting(prepared, &claimed, &mut index);
        phases.mark("generation bumped");
        self.apply_in_flight(tx, claimed, &mut ready, &mut index, before, overlap, phases)
            .await
            .map(|applied| Some(Applied { backlog, ..applied }))
    }

    /// Under a `backlog` ([`Applied::backlog`]), the read-ahead of the
    /// next batch's records, started now: they are read while this batch
    /// matches, and its pairs computed while this one writes.
    fn next_ahead(
        &self,
        pool: &PgPool,
        claimed: &[ClaimedRow],
        backlog: bool,
        ahead_limit: i64,
    ) -> Option<(PgPool, ahead::Pending)> {
        if !backlog || claimed.len() < self.read_ahead_from {
            return None;
        }
        let after = claimed
            .iter()
            .map(|c| c.change_id)
            .max()
            .unwrap_or_default();
        Some((pool.clone(), ahead::start(pool, after, ahead_limit)))
    }

    /// The records of `claimed` that the read-ahead `pending` (if any)
    /// holds as the batch would read them.
    async fn ready(
        &self,
        pending: Option<ahead::Pending>,
        claimed: &[ClaimedRow],
    ) -> pairing::Ready {
        let ready = match pending {
            Some(pending) => pending.ready(claimed.iter().map(ClaimedRow::view)).await,
            None => pairing::Ready::new(),
        };
        if !ready.is_empty() {
            tracing::debug!(records = ready.len(), "records taken from the read-ahead");
        }
        self.used.count_read_ahead(ready.len());
        ready
    }

    /// `prepared` if it fits the claimed changes; otherwise its index
    /// changes are undone.
    fn fitting(
        &self,
        prepared: Option<ahead::Prepared>,
        claimed: &[ClaimedRow],
        index: &mut BlockIndex,
    ) -> Option<ahead::Prepared> {
        let p = prepared?;
        if p.fits(claimed.iter().map(ClaimedRow::view)) {
            self.used.count_read_ahead(p.len());
            self.used.count_prepared(p.len());
            metrics::counter!("matcher_prepared_batches_total", "outcome" => "used").increment(1);
            Some(p)
        } else {
            metrics::counter!("matcher_prepared_batches_total", "outcome" => "not_fitting")
                .increment(1);
            tracing::debug!("the prepared pairs do not fit the claimed changes; computed again");
            index.undo(p.undo);
            None
        }
    }

    /// Applies the claimed changes with the index in flight: marked
    /// without a generation while the batch works (if this future is
    /// dropped half-way, the next batch rebuilds it), at `before + 1` if
    /// it commits, its changes undone and at `before` if not.
    #[allow(clippy::too_many_arguments)] // the batch's state, passed down once
    async fn apply_in_flight(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
        claimed: Vec<ClaimedRow>,
        ready: &mut pairing::Ready,
        index: &mut BlockIndex,
        before: i64,
        mut overlap: ahead::Overlap,
        mut phases: Phases,
    ) -> sqlx::Result<Applied> {
        index.generation = None;
        let mut undo = Undo::new();
        let result = self
            .apply_claimed(
                tx,
                claimed,
                ready,
                index,
                &mut undo,
                &mut overlap,
                &mut phases,
            )
            .await;
        match result {
            Ok(applied) => {
                index.generation = Some(before + 1);
                *self.prepared.lock().expect("not poisoned") = overlap.next.take();
                Ok(applied)
            }
            Err(error) => {
                // Rolled back (or, if the commit's outcome is unknown, the
                // database's generation tells at the next batch). The next
                // batch's changes were made after this one's: undone first.
                if let Some(p) = overlap.next.take() {
                    index.undo(p.undo);
                }
                index.undo(undo);
                index.generation = Some(before);
                Err(error)
            }
        }
    }

    /// Builds the blocking index now (an instance that becomes the active
    /// one), so that the first change does not wait for it. Nothing to do
    /// if it is current or another instance holds the lock.
    pub async fn prepare_index(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut index = self.index.lock().await;
        let mut tx = pool.begin().await?;
        if !Self::try_lock(&mut tx).await? {
            return Ok(());
        }
        let generation: i64 = sqlx::query_scalar("SELECT generation FROM match_state")
            .fetch_one(&mut *tx)
            .await?;
        if index.generation != Some(generation) {
            self.rebuild(&mut index, &mut tx).await?;
            // Built under the lock at this generation: equal to the
            // database until someone bumps it.
            index.generation = Some(generation);
        }
        tx.commit().await
    }

    /// Records and distinct keys in this instance's blocking index, and its
    /// estimated size in bytes (benchmarks, logs).
    pub async fn index_size(&self) -> (usize, usize, usize) {
        let index = self.index.lock().await;
        (index.records(), index.keys(), index.heap_bytes())
    }

    #[allow(clippy::too_many_arguments)] // the batch's state, passed down once
    async fn apply_claimed(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        claimed: Vec<ClaimedRow>,
        ready: &mut pairing::Ready,
        index: &mut BlockIndex,
        undo: &mut Undo,
        overlap: &mut ahead::Overlap,
        phases: &mut Phases,
    ) -> sqlx::Result<Applied> {
        let ids: Vec<i64> = claimed.iter().map(|c| c.change_id).collect();
        // Exported traces: this batch's work in each publisher's trace (a
        // child of the `traceparent` the loader stored), ended after commit.
        let _traces = etl_runtime::telemetry::continue_traces(
            claimed.iter().map(|c| c.traceparent.as_deref()),
            |first, n| {
                tracing::info_span!(
                    "matcher.apply",
                    source = %claimed[first].source,
                    changes = n,
                    batch = claimed.len()
                )
            },
        );
        // The publishers' traces this batch continues (ids only: no
        // personal data), so that a trace search finds the matcher's work.
        let traces = trace_ids(claimed.iter().map(|c| c.traceparent.as_deref()));
        tracing::debug!(
            changes = ids.len(),
            trace_ids = %traces.join(","),
            "claimed changes"
        );
        let changes: Vec<quarantine::Change> = claimed
            .into_iter()
            .map(|c| quarantine::Change {
                id: c.change_id,
                rec: (c.source, c.source_id),
            })
            .collect();
        let matched = async {
            let mut applied = quarantine::match_isolating(
                &self.setup(),
                &mut tx,
                &changes,
                ready,
                index,
                undo,
                overlap,
            )
            .await?;
            applied.changes = ids.len() as u64;
            phases.mark("matched");
            sqlx::query("DELETE FROM record_changes WHERE change_id = ANY($1)")
                .persistent(KEEP_PLAN)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            phases.mark("changes deleted");
            Ok::<_, sqlx::Error>(applied)
        }
        .await;
        match matched {
            Ok(applied) => {
                tx.commit().await?;
                phases.mark("committed");
                Ok(applied)
            }
            Err(error) => Err(rolled_back(tx, error).await),
        }
    }

    /// The stored decision for a pair, if any ([`Setup::evaluate`]).
    pub fn evaluate(
        &self,
        x: &crate::features::Features,
        y: &crate::features::Features,
    ) -> Option<PairRow> {
        self.setup().evaluate(x, y)
    }

    /// Recomputes everything from `source_records`: the same result as
    /// applying every change incrementally. Claims (deletes) the change-feed
    /// rows present at its start.
    pub async fn rematch_all(&self, pool: &PgPool) -> sqlx::Result<Applied> {
        rematch::rematch_all(&self.setup(), pool).await
    }

    /// Recomputes the persons of `recs`' component from the stored pairs
    /// (an operator decision or lock changed; the records did not). The
    /// caller holds the lock.
    pub async fn recompute_persons(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        recs: &[Rec],
    ) -> sqlx::Result<Applied> {
        incremental::recompute_persons(&self.setup(), tx, recs).await
    }
}

/// How many records batches took from a read-ahead and from a prepared
/// first half: what tests and benchmarks ask (`Engine::read_ahead_used`);
/// counted only with the feature `testing`.
#[derive(Debug, Default)]
struct Used {
    #[cfg(feature = "testing")]
    read_ahead: std::sync::atomic::AtomicU64,
    #[cfg(feature = "testing")]
    prepared: std::sync::atomic::AtomicU64,
}

impl Used {
    fn count_read_ahead(&self, records: usize) {
        #[cfg(feature = "testing")]
        self.read_ahead
            .fetch_add(records as u64, std::sync::atomic::Ordering::Relaxed);
        let _ = records;
    }

    fn count_prepared(&self, records: usize) {
        #[cfg(feature = "testing")]
        self.prepared
            .fetch_add(records as u64, std::sync::atomic::Ordering::Relaxed);
        let _ = records;
    }
}

/// A claimed change-feed row.
#[derive(Debug, sqlx::FromRow)]
struct ClaimedRow {
    change_id: i64,
    source: String,
    source_id: String,
    traceparent: Option<String>,
    op: String,
    content_hash: Vec<u8>,
}

impl ClaimedRow {
    fn view(&self) -> ahead::Claimed<'_> {
        ahead::Claimed {
            change_id: self.change_id,
            source: &self.source,
            source_id: &self.source_id,
            op: &self.op,
            content_hash: &self.content_hash,
        }
    }
}

/// Rolls `tx` back now and gives back the error that failed it: a dropped
/// transaction is rolled back only when its connection is next used, and
/// until then it holds the matcher lock, so that the next batch would find
/// it taken (as if another instance were active). If the rollback fails,
/// the connection is gone and the server has ended the transaction.
async fn rolled_back(tx: sqlx::Transaction<'_, sqlx::Postgres>, error: sqlx::Error) -> sqlx::Error {
    let _ = tx.rollback().await;
    error
}

/// [`rolled_back`], with the index changes of the batch's prepared first
/// half (if any) undone first: an error before the batch used it.
async fn abandoned(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    index: &mut BlockIndex,
    prepared: Option<ahead::Prepared>,
    error: sqlx::Error,
) -> sqlx::Error {
    if let Some(p) = prepared {
        index.undo(p.undo);
    }
    rolled_back(tx, error).await
}

/// Claims up to `limit` change-feed rows, oldest first, none after
/// `up_to` (the prepared half's last change, if any).
///
/// No row locks: every transaction that deletes change rows (a batch, a
/// re-match) holds `MATCH_LOCK`, which the caller holds, so nobody else can
/// claim these rows before it commits. A `FOR UPDATE` would only write a
/// lock into each claimed row (~10 ms per 20,000 measured) that the delete
/// of the batch writes again. Planned at each run ([`KEEP_PLAN`]).
async fn claim(
    tx: &mut PgConnection,
    limit: i64,
    up_to: Option<i64>,
) -> sqlx::Result<Vec<ClaimedRow>> {
    sqlx::query_as(
        "SELECT change_id, source, source_id, traceparent, op, content_hash FROM record_changes
             WHERE change_id <= $2 ORDER BY change_id LIMIT $1",
    )
    .persistent(KEEP_PLAN)
    .bind(limit)
    .bind(up_to.unwrap_or(i64::MAX))
    .fetch_all(tx)
    .await
}

/// Bumps the generation in `match_state`; gives the one before.
async fn bump_generation(tx: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "UPDATE match_state SET generation = generation + 1, updated_at = now()
             RETURNING generation - 1",
    )
    .fetch_one(tx)
    .await
}

/// Replaces `index` by one built from `source_records` (the caller holds
/// the lock; the generation is the caller's to set).
async fn rebuild(index: &mut BlockIndex, conn: &mut PgConnection) -> sqlx::Result<()> {
    let started = std::time::Instant::now();
    // Dropped first: the old index and the new one need not both fit in
    // memory.
    *index = BlockIndex::default();
    *index = BlockIndex::build(conn).await?;
    tracing::info!(
        records = index.records(),
        keys = index.keys(),
        mib = index.heap_bytes() >> 20,
        ms = started.elapsed().as_millis() as u64,
        "blocking index built"
    );
    Ok(())
}

/// The distinct, well-formed trace ids of claimed changes' `traceparent`s,
/// sorted; malformed or missing ones are skipped.
pub fn trace_ids<'a>(traceparents: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut ids: Vec<String> = traceparents
        .into_iter()
        .flatten()
        .filter_map(proto::trace::trace_id_of)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod trace_tests {
    use super::trace_ids;

    #[test]
    fn trace_ids_are_distinct_well_formed_ids() {
        let a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let b = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ids = trace_ids([Some(a), None, Some("garbage"), Some(b), Some(a)]);
        assert_eq!(
            ids,
            [
                "0af7651916cd43dd8448eb211c80319c",
                "4bf92f3577b34da6a3ce929d0e0e4736"
            ]
        );
    }
}
