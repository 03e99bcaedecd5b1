//! Read-ahead under a backlog: while one batch is being matched, the
//! records of the changes after it are read, on another connection and
//! outside any transaction of the matcher, and reduced to features and
//! blocking keys on the other core. Reading them was the largest single
//! phase of a batch of new records, and while the batch matches, that core
//! and the connection are idle.
//!
//! Why a row read outside the batch can stand in for the one the batch
//! would read: every content change of a record commits with a change row
//! carrying the new `content_hash` (and `op = 'delete'` for a delete; the
//! loader, `loader::store`). A batch uses a row read ahead only when it
//! agrees with the *newest change the batch claimed* for that record: same
//! content hash, deleted exactly when that change is a delete. The row then
//! holds the content of that change — what the batch would have read, or
//! an older state than the current one whose newer change row the batch
//! did not claim and a later batch will apply. Anything else (the record
//! changed again, an undecodable row, a change the read-ahead did not see)
//! is read inside the batch, as without read-ahead.
//!
//! Two batches in flight ([`Prepared`]): while a batch writes, the next
//! batch's first half — its keys replaced in the blocking index, its
//! candidates read, its pairs evaluated ([`super::pairing::Paired`]) —
//! is computed from the read-ahead, on the index the writing batch lends
//! to a task of its own. That half reads only `source_records`, which the
//! matcher does not write, and the index, which the writing batch no
//! longer needs; so it is what the next batch would compute itself. The
//! next batch uses it only if its claimed changes are exactly the records
//! read ahead, each with the content read (as above); anything else undoes
//! its index changes and computes the batch as without it. The writing
//! batch's own index changes come first: if it fails, the prepared
//! half's are undone before its own.

use std::collections::HashMap;

use sqlx::{PgPool, Row as _};
use tokio::task::JoinHandle;

use super::index::{key_hashes, BlockIndex, Undo};
use super::pairing::{pair_up, Computed, Paired, Ready, LOUD_BATCH};
use super::phases::Phases;
use super::setup::Setup;
use super::types::Rec;
use crate::features::{decode_row, Features};
use crate::par::par_map;

/// One record as the read-ahead saw it.
struct Seen {
    content_hash: Vec<u8>,
    deleted: bool,
    /// `None` for a live row that does not decode: the batch reads it
    /// itself (and sets its change aside if it fails there).
    computed: Option<Computed>,
}

/// What a read-ahead saw: the records of the changes it read, and the
/// newest of those changes.
struct Sight {
    records: HashMap<Rec, Seen>,
    last_change: i64,
}

/// A read-ahead in progress (or done).
pub(super) struct Pending(JoinHandle<sqlx::Result<Sight>>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// Starts reading the records of up to `limit` changes after `after`.
pub(super) fn start(pool: &PgPool, after: i64, limit: i64) -> Pending {
    let pool = pool.clone();
    Pending(tokio::spawn(async move { read(&pool, after, limit).await }))
}

/// How long a read-ahead waits for a pooled connection: the batch that
/// will use it may wait for it, and reading its records itself is never
/// worse than waiting long.
const ACQUIRE: std::time::Duration = std::time::Duration::from_millis(500);

async fn read(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Sight> {
    let mut conn = tokio::time::timeout(ACQUIRE, pool.acquire())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let rows = sqlx::query(concat!(
        "WITH c AS (SELECT change_id, source, source_id FROM record_changes
             WHERE change_id > $1 ORDER BY change_id LIMIT $2)
         SELECT ",
        crate::row_columns!(),
        ", content_hash, (SELECT max(change_id) FROM c) AS last_change
         FROM (SELECT DISTINCT source, source_id FROM c) c
         JOIN source_records USING (source, source_id)"
    ))
    .persistent(crate::queue::KEEP_PLAN)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let last_change = rows
        .first()
        .map_or(after, |row| row.get::<i64, _>("last_change"));
    // Decoding, features and keys: CPU work, off the runtime's threads.
    let seen = tokio::task::spawn_blocking(move || {
        par_map(&rows, |row| {
            let rec: Rec = (row.get("source"), row.get("source_id"));
            let content_hash: Vec<u8> = row.get("content_hash");
            let deleted: bool = row.get("deleted");
            let computed = if deleted {
                Some(None)
            } else {
                decode_row(row).map(|r| {
                    let f = Features::of(&r);
                    let keys = key_hashes(&f.keys());
                    Some((f, keys))
                })
            };
            (
                rec,
                Seen {
                    content_hash,
                    deleted,
                    computed,
                },
            )
        })
    })
    .await
    .map_err(|e| sqlx::Error::Protocol(format!("read-ahead task failed: {e}")))?;
    Ok(Sight {
        records: seen.into_iter().collect(),
        last_change,
    })
}

/// A claimed change: its record, `op` and `content_hash`.
pub(super) struct Claimed<'a> {
    pub change_id: i64,
    pub source: &'a str,
    pub source_id: &'a str,
    pub op: &'a str,
    pub content_hash: &'a [u8],
}

impl Pending {
    /// The same read-ahead, once it is done.
    pub(super) async fn finished(self) -> Pending {
        let result = match self.0.await {
            Ok(result) => result,
            Err(e) => Err(sqlx::Error::Protocol(format!(
                "read-ahead task failed: {e}"
            ))),
        };
        Pending(tokio::spawn(async move { result }))
    }

    /// What the read-ahead saw; `None` if it failed.
    async fn seen(self) -> Option<Sight> {
        match self.0.await {
            Ok(Ok(seen)) => Some(seen),
            Ok(Err(error)) => {
                tracing::debug!(error = %etl_runtime::database::describe(&error), "read-ahead failed; the batch reads its records");
                None
            }
            Err(_) => None,
        }
    }

    /// What the batch that claimed `claimed` may use: the records whose row
    /// read ahead agrees with the newest of their claimed changes (module
    /// doc). A read-ahead that failed gives nothing.
    pub(super) async fn ready<'a>(self, claimed: impl IntoIterator<Item = Claimed<'a>>) -> Ready {
        let Some(Sight {
            records: mut seen, ..
        }) = self.seen().await
        else {
            return Ready::new();
        };
        let newest = newest(claimed);
        let mut ready = Ready::with_capacity(newest.len());
        for ((source, source_id), change) in newest {
            let rec: Rec = (source.to_owned(), source_id.to_owned());
            let Some(s) = seen.remove(&rec) else { continue };
            if let (true, Some(computed)) = (change.agrees(&s.content_hash, s.deleted), s.computed)
            {
                ready.insert(rec, computed);
            }
        }
        ready
    }
}

impl Claimed<'_> {
    /// Whether a row read with this content hash and deleted flag holds
    /// this change's content.
    fn agrees(&self, content_hash: &[u8], deleted: bool) -> bool {
        content_hash == self.content_hash && deleted == (self.op == "delete")
    }
}

/// The newest claimed change of each record.
fn newest<'a>(
    claimed: impl IntoIterator<Item = Claimed<'a>>,
) -> HashMap<(&'a str, &'a str), Claimed<'a>> {
    let mut newest: HashMap<(&str, &str), Claimed> = HashMap::new();
    for c in claimed {
        match newest.get(&(c.source, c.source_id)) {
            Some(n) if n.change_id > c.change_id => {}
            _ => {
                newest.insert((c.source, c.source_id), c);
            }
        }
    }
    newest
}

/// What the first attempt of a batch does besides its own work (module
/// doc): use its first half if the batch before prepared it, and prepare
/// the next batch's.
#[derive(Default)]
pub(super) struct Overlap {
    /// This batch's first half, prepared while the batch before wrote, and
    /// found to fit the claimed changes ([`Prepared::fits`]).
    pub this: Option<Prepared>,
    /// The next batch's read-ahead, to prepare from while this batch writes.
    pub next_ahead: Option<(PgPool, Pending)>,
    /// The next batch's first half, once prepared.
    pub next: Option<Prepared>,
}

/// A batch's first half, computed from the read-ahead while the batch
/// before wrote (module doc).
pub(super) struct Prepared {
    /// Each record as read: content hash and deleted flag.
    seen: HashMap<Rec, (Vec<u8>, bool)>,
    /// The newest change the read-ahead read. The next batch claims no
    /// change after it: while the loader writes, a read-ahead often finds
    /// fewer changes than a batch, and a batch that claimed more would
    /// not fit and compute everything again.
    pub last_change: i64,
    pub paired: Paired,
    /// Its changes to the index (made after those of the batch before).
    pub undo: Undo,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("records", &self.seen.len())
            .finish()
    }
}

impl Prepared {
    /// Whether the batch that claimed `claimed` may use it: the claimed
    /// changes name exactly its records, and each record's newest claimed
    /// change holds the content read.
    pub(super) fn fits<'a>(&self, claimed: impl IntoIterator<Item = Claimed<'a>>) -> bool {
        let newest = newest(claimed);
        newest.len() == self.seen.len()
            && newest.iter().all(|((source, source_id), change)| {
                self.seen
                    .get(&(source.to_string(), source_id.to_string()))
                    .is_some_and(|(hash, deleted)| change.agrees(hash, *deleted))
            })
    }

    /// How many records it holds.
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// The first half of the batch `pending` read ahead, computed on
/// `index`; `None` (and the index unchanged) if the read-ahead failed,
/// saw nothing or a row that does not decode, or a read fails here:
/// the batch then computes it itself.
pub(super) async fn prepare(
    setup: &Setup,
    pool: &PgPool,
    pending: Pending,
    index: &mut BlockIndex,
) -> Option<Prepared> {
    let Sight {
        records: seen,
        last_change,
    } = pending.seen().await?;
    if seen.is_empty() {
        return None;
    }
    let mut ready = Ready::with_capacity(seen.len());
    let mut hashes = HashMap::with_capacity(seen.len());
    for (rec, s) in seen {
        hashes.insert(rec.clone(), (s.content_hash, s.deleted));
        ready.insert(rec, s.computed?);
    }
    let mut changed: Vec<Rec> = hashes.keys().cloned().collect();
    changed.sort();
    let mut conn = tokio::time::timeout(ACQUIRE, pool.acquire())
        .await
        .ok()?
        .ok()?;
    let mut phases = Phases::new("prepare", changed.len(), changed.len() >= LOUD_BATCH);
    let mut undo = Undo::new();
    match pair_up(
        setup,
        &mut conn,
        &changed,
        &mut ready,
        index,
        &mut undo,
        &mut phases,
    )
    .await
    {
        Ok(paired) => Some(Prepared {
            seen: hashes,
            last_change,
            paired,
            undo,
        }),
        Err(error) => {
            tracing::debug!(error = %etl_runtime::database::describe(&error), "preparing the next batch failed; it computes its pairs itself");
            index.undo(undo);
            None
        }
    }
}
