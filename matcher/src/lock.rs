//! The matcher's advisory lock.

use sqlx::PgConnection;

/// The advisory lock every matching transaction holds: the incremental
/// service, a full re-match and the operator commands serialise on it, so two
/// instances never compute the same person at once.
pub const MATCH_LOCK: i64 = 0x6D61_7463_6865_7201;

/// Takes the matcher lock for this transaction if it is free.
pub(crate) async fn try_lock(tx: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(MATCH_LOCK)
        .fetch_one(tx)
        .await
}

/// Waits for the matcher lock for this transaction.
pub(crate) async fn lock(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MATCH_LOCK)
        .execute(tx)
        .await
        .map(drop)
}
