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

use std::collections::HashMap;

use sqlx::{PgPool, Row as _};
use tokio::task::JoinHandle;

use super::index::key_hashes;
use super::Rec;
use crate::features::{decode_row, Features};

/// A record read ahead: its features and key hashes, `None` if deleted.
pub(super) type Computed = Option<(Features, Box<[u64]>)>;

/// Rows read ahead and checked against the claimed changes: what a batch
/// uses instead of reading them.
pub(super) type Ready = HashMap<Rec, Computed>;

/// One record as the read-ahead saw it.
struct Seen {
    content_hash: Vec<u8>,
    deleted: bool,
    /// `None` for a live row that does not decode: the batch reads it
    /// itself (and sets its change aside if it fails there).
    computed: Option<Computed>,
}

/// A read-ahead in progress (or done).
pub(super) struct Pending(JoinHandle<sqlx::Result<HashMap<Rec, Seen>>>);

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

async fn read(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<HashMap<Rec, Seen>> {
    let mut conn = tokio::time::timeout(ACQUIRE, pool.acquire())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let rows = sqlx::query(concat!(
        "SELECT ",
        crate::row_columns!(),
        ", content_hash FROM (SELECT DISTINCT source, source_id FROM (
             SELECT source, source_id FROM record_changes WHERE change_id > $1
             ORDER BY change_id LIMIT $2) c) c
         JOIN source_records USING (source, source_id)"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    // Decoding, features and keys: CPU work, off the runtime's threads.
    let seen = tokio::task::spawn_blocking(move || {
        super::rematch::par_map(&rows, |row| {
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
    Ok(seen.into_iter().collect())
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

    /// What the batch that claimed `claimed` may use: the records whose row
    /// read ahead agrees with the newest of their claimed changes (module
    /// doc). A read-ahead that failed gives nothing.
    pub(super) async fn ready<'a>(self, claimed: impl IntoIterator<Item = Claimed<'a>>) -> Ready {
        let mut seen = match self.0.await {
            Ok(Ok(seen)) => seen,
            Ok(Err(error)) => {
                tracing::debug!(error = %etl_runtime::database::describe(&error), "read-ahead failed; the batch reads its records");
                return Ready::new();
            }
            Err(_) => return Ready::new(),
        };
        let mut newest: HashMap<(&str, &str), Claimed> = HashMap::new();
        for c in claimed {
            match newest.get(&(c.source, c.source_id)) {
                Some(n) if n.change_id > c.change_id => {}
                _ => {
                    newest.insert((c.source, c.source_id), c);
                }
            }
        }
        let mut ready = Ready::with_capacity(newest.len());
        for ((source, source_id), change) in newest {
            let rec: Rec = (source.to_owned(), source_id.to_owned());
            let Some(s) = seen.remove(&rec) else { continue };
            let agrees =
                s.content_hash == change.content_hash && s.deleted == (change.op == "delete");
            if let (true, Some(computed)) = (agrees, s.computed) {
                ready.insert(rec, computed);
            }
        }
        ready
    }
}
