//! The matcher's queues: `record_changes`, the change feed it works off,
//! and `person_events`, the outbox its relay publishes.

/// Whether a statement that reads a queue keeps its plan in the session:
/// no, it is planned again at each run (`sqlx`'s `.persistent(KEEP_PLAN)`).
///
/// A queue swings between empty and a backlog of millions. PostgreSQL
/// caches a generic plan for a prepared statement after five runs, made
/// with the table as it was then. Made while the feed was empty (an idle
/// matcher polls it), that plan reads the feed by a sequential scan and a
/// sort, and keeps doing so after a bulk load has put a million changes in
/// it (until an ANALYZE of the table happens to replace it): every batch
/// then reads the whole backlog (measured: 172 ms for a claim of 20,000
/// of 1,000,000 changes, against 4 ms by the index, more with the dead
/// rows of deleted changes), the matcher falls behind, and the backlog and
/// each read of it grow together. Planned at each run (well under a
/// millisecond), a statement reads the queue by its index whatever size it
/// had before.
pub(crate) const KEEP_PLAN: bool = false;
