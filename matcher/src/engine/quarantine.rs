//! A poisoned change must not stop matching (promise 3). When PostgreSQL
//! (or decoding a stored record) refuses a batch for a reason that will not
//! go away — a constraint, a value it cannot store, content that does not
//! decode, a trigger's refusal — the batch is applied again split in
//! halves, each half under a savepoint of the batch's transaction, until
//! the failing changes are alone; each is then set aside as a dead letter
//! (table `dead_letters`, stream [`STREAM`], the change id as `stream_seq`,
//! the SQLSTATE, constraint and table as reason: no values) and its change
//! row deleted with the others, and the rest is matched. Like the loader's
//! `loader::split`, but by halving: a batch is up to 20,000 changes.
//!
//! Everything happens in the batch's one transaction: a kill -9 in the
//! middle rolls back the applied halves and the dead letters alike, and the
//! batch is claimed (and split) again after the restart.
//!
//! What is retried instead, with the service's backoff ([`Fault`]): a
//! transient error (`etl_runtime::database::is_transient`: connection,
//! serialization failure, deadlock, lock timeout, a missing grant) and an
//! error of the schema or the code that no change can be blamed for (an
//! undefined column or function, a syntax error, …): every change would
//! fail alike, so they wait in `record_changes` for the operator's fix
//! rather than filling the dead letters.
//!
//! An operator lists them with `etl dlq list --reason match_failed` and,
//! after fixing the cause, re-queues them with `etl dlq retry`
//! ([`retry`]: the change goes back into `record_changes`).

use etl_runtime::database::{describe, is_transient};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::ahead::Overlap;
use super::incremental::match_batch;
use super::index::{BlockIndex, Undo};
use super::pairing::Ready;
use super::setup::Setup;
use super::types::{Applied, Rec};

/// `dead_letters.stream` (and `subject`) of a change the matcher set aside:
/// the change feed it came from (not a NATS stream).
pub const STREAM: &str = "record_changes";

/// `dead_letters.reason_code` of a change the matcher set aside.
pub const REASON_CODE: &str = "match_failed";

/// What a failure of a batch says about its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server, the network or a race: retry the whole batch later.
    Transient,
    /// The schema or the code: every change would fail alike; retry later
    /// (an operator must fix it).
    Systemic,
    /// Something about the data of some change: isolate and set it aside.
    Data,
}

impl Fault {
    pub fn of(error: &sqlx::Error) -> Fault {
        if is_transient(error) {
            return Fault::Transient;
        }
        match error {
            sqlx::Error::Database(db) => match db.code() {
                Some(code) if is_data_sqlstate(&code) => Fault::Data,
                _ => Fault::Systemic,
            },
            // A stored record whose content does not decode.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Fault::Data,
            _ => Fault::Systemic,
        }
    }
}

/// SQLSTATEs that blame the rows a statement wrote or read: data exceptions
/// (22: a value out of range, bad encoding…), integrity constraints (23:
/// check, unique, foreign key, not null), a PL/pgSQL `RAISE` (P0: a
/// trigger's refusal), a view's check option (44), corrupted data (XX001).
fn is_data_sqlstate(code: &str) -> bool {
    code.starts_with("22")
        || code.starts_with("23")
        || code.starts_with("P0")
        || code.starts_with("44")
        || code == "XX001"
}

/// A claimed change: its id and record.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: i64,
    pub rec: Rec,
}

/// What a dead letter of the matcher keeps so that a retry can re-queue the
/// change as it was (no personal data: the record is named by the dead
/// letter's `source` and `source_id`).
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    op: String,
    source_version: i64,
    /// Hex.
    content_hash: String,
    traceparent: Option<String>,
}

/// A row of `record_changes`: what a dead letter keeps of it.
#[derive(sqlx::FromRow)]
struct ChangeRow {
    op: String,
    source_version: i64,
    content_hash: Vec<u8>,
    traceparent: Option<String>,
}

/// [`match_batch`] of the claimed `changes` (with the records
/// `ready` from a read-ahead), isolating and
/// setting aside the ones that fail for a reason of their data. `Err` for
/// a transient or systemic failure (the caller retries the whole batch).
/// The caller holds the lock and deletes every claimed change row.
///
/// The blocking index follows the savepoints: the index changes of a
/// part that is rolled back are undone at once; those of the parts that
/// were applied go into `undo`, for the caller to undo if the whole
/// transaction does not commit.
///
/// `overlap` goes with the first attempt, the whole batch
/// ([`match_batch`]); the parts of a split batch are computed
/// without it.
pub(super) async fn match_isolating(
    setup: &Setup,
    tx: &mut Transaction<'_, Postgres>,
    changes: &[Change],
    ready: &mut Ready,
    index: &mut BlockIndex,
    undo: &mut Undo,
    overlap: &mut Overlap,
) -> sqlx::Result<Applied> {
    let mut first = true;
    let mut applied = Applied::default();
    // Parts still to apply, the next one last (left halves first: the
    // changes keep their order).
    let mut parts: Vec<&[Change]> = vec![changes];
    while let Some(part) = parts.pop() {
        let recs: Vec<Rec> = part.iter().map(|c| c.rec.clone()).collect();
        let mut savepoint = Connection::begin(&mut **tx).await?;
        let mut part_undo = Undo::new();
        let mut without = Overlap::default();
        let part_overlap = if std::mem::take(&mut first) {
            &mut *overlap
        } else {
            &mut without
        };
        let result = match_batch(
            setup,
            &mut savepoint,
            &recs,
            ready,
            index,
            &mut part_undo,
            part_overlap,
        )
        .await;
        let error = match result {
            Ok(a) => {
                // Applied (or, if the savepoint's release fails, the
                // whole transaction fails and the caller undoes it).
                undo.append(&mut part_undo);
                savepoint.commit().await?;
                applied += a;
                continue;
            }
            Err(error) => error,
        };
        if Fault::of(&error) != Fault::Data {
            undo.append(&mut part_undo);
            return Err(error);
        }
        index.undo(part_undo);
        savepoint.rollback().await?;
        if let [change] = part {
            set_aside(tx, change, &error).await?;
            continue;
        }
        if part.len() == changes.len() {
            tracing::warn!(
                changes = part.len(),
                error = %describe(&error),
                "batch refused; isolating the failing changes"
            );
        }
        let (left, right) = part.split_at(part.len() / 2);
        parts.push(right);
        parts.push(left);
    }
    Ok(applied)
}

/// Writes the dead letter of one change (its row is still claimed by this
/// transaction; the caller deletes it with the batch's).
async fn set_aside(
    conn: &mut PgConnection,
    change: &Change,
    error: &sqlx::Error,
) -> sqlx::Result<()> {
    let (change_id, (source, source_id)) = (change.id, &change.rec);
    let reason = describe(error);
    let row: Option<ChangeRow> = sqlx::query_as(
        "SELECT op, source_version, content_hash, traceparent FROM record_changes WHERE change_id = $1",
    )
    .persistent(crate::queue::KEEP_PLAN)
    .bind(change_id)
    .fetch_optional(&mut *conn)
    .await?;
    let kept = row.map(|c| Kept {
        op: c.op,
        source_version: c.source_version,
        content_hash: hex::encode(&c.content_hash),
        traceparent: c.traceparent,
    });
    let payload = serde_json::to_vec(&kept).expect("a change serializes");
    // The trace also in the column every dead letter has (`etl dlq list`
    // and operators' SQL read it there).
    let traceparent = kept.as_ref().and_then(|k| k.traceparent.clone());
    sqlx::query(
        "INSERT INTO dead_letters (stream, stream_seq, item, subject, source, source_id,
                                   reason_code, reason, payload, delivered, traceparent)
         VALUES ($1, $2, 0, $1, $3, $4, $5, $6, $7, 1, $8)
         ON CONFLICT (stream, stream_seq, item) DO NOTHING",
    )
    .bind(STREAM)
    .bind(change_id)
    .bind(source)
    .bind(source_id)
    .bind(REASON_CODE)
    .bind(&reason)
    .bind(&payload)
    .bind(&traceparent)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("matcher_changes_quarantined_total").increment(1);
    tracing::warn!(
        change_id,
        source = %source,
        source_id = %source_id,
        reason = %reason,
        "change set aside as a dead letter"
    );
    Ok(())
}

/// Errors of [`retry`].
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("dead letter {0} does not exist or is not a matcher's (stream {STREAM})")]
    NotFound(i64),
    #[error("dead letter {0} is {1}, not open")]
    NotOpen(i64, String),
    #[error("{}", describe(.0))]
    Database(#[from] sqlx::Error),
}

/// A row of `dead_letters`: what a retry needs of it.
#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    source: Option<String>,
    source_id: Option<String>,
    status: String,
    payload: Vec<u8>,
}

/// Re-queues a change the matcher set aside: inserts it into
/// `record_changes` again (the matcher is woken by `NOTIFY record_changes`)
/// and marks the dead letter retried, in one transaction. If the cause is
/// not fixed, the matcher sets the change aside again as a new dead letter.
pub async fn retry(pool: &PgPool, id: i64) -> Result<(), RetryError> {
    let mut tx = pool.begin().await?;
    let row: Option<DeadLetterRow> = sqlx::query_as(
        "SELECT source, source_id, status, payload FROM dead_letters
         WHERE id = $1 AND stream = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(STREAM)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(DeadLetterRow {
        source: Some(source),
        source_id: Some(source_id),
        status,
        payload,
    }) = row
    else {
        return Err(RetryError::NotFound(id));
    };
    if status != "open" {
        return Err(RetryError::NotOpen(id, status));
    }
    // The change as it was; an unreadable payload re-queues a plain update
    // (the matcher reads only the record's name from a change).
    let kept: Option<Kept> = serde_json::from_slice(&payload).ok().flatten();
    let (op, version, hash, traceparent) = match kept {
        Some(k) => {
            let hash = hex::decode(&k.content_hash).unwrap_or_default();
            (k.op, k.source_version, hash, k.traceparent)
        }
        None => ("update".to_string(), 0, Vec::new(), None),
    };
    sqlx::query(
        "INSERT INTO record_changes (source, source_id, op, source_version, content_hash, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&source)
    .bind(&source_id)
    .bind(&op)
    .bind(version)
    .bind(&hash)
    .bind(&traceparent)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE dead_letters SET status = 'retried', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify('record_changes', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
