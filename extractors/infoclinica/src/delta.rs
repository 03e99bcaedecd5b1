//! Delta sync from the change-log table that the triggers of
//! `deploy/firebird/changelog.sql` fill (one row per insert, update or
//! delete of a patient: ID from a sequence, PCODE, FILIAL, OPERATION,
//! PROCESSED).
//!
//! One batch: read up to `delta_batch` unprocessed rows in ID order; read
//! the current row of each distinct PCODE (several changes of one PCODE
//! yield one message: its state now); publish an upsert for each row found
//! and a delete for each PCODE whose row is gone (whatever the logged
//! operations were: the current state decides); wait for every ack; then
//! mark exactly the change-log IDs that were read as processed — by ID
//! list, never by range, because a change with a lower ID can commit later
//! and must not be marked unseen. A crash before the marking republishes the
//! batch next time, which changes nothing downstream.
//!
//! The deletion brake (see [`etl_runtime::brake`]): before a pass, the
//! PCODEs of unprocessed change-log rows that are gone from the table are
//! counted. If that many deletions are beyond the brake, the pass reads only
//! the changes of rows that exist (upserts go out) and leaves the rows of
//! gone PCODEs unprocessed, until an operator releases the brake.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use etl_runtime::brake::{Brake, Decision};
use etl_runtime::progress::{Progress, Unit};
use proto::bus::{DuplicateMode, Publisher};
use rsfbclient::prelude::*;
use rsfbclient::RawValue;

use crate::firebird;
use crate::mapping::{self, Mapped};
use crate::sync::{DbSync, SyncError};

/// PCODEs per `IN (…)` list (Firebird 3 allows at most 1,500).
pub const IN_LIST: usize = 500;

/// One change-log row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    pub pcode: i64,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Change-log rows (or, for a reconciliation, changed keys) handled.
    pub changes: u64,
    pub upserts: u64,
    pub deletes: u64,
    /// Deletions held back by the deletion brake.
    pub withheld: u64,
}

impl PassSummary {
    pub fn add(&mut self, other: PassSummary) {
        self.changes += other.changes;
        self.upserts += other.upserts;
        self.deletes += other.deletes;
        self.withheld += other.withheld;
    }
}

/// The database's deletion brake and its decision on a pass of kind `pass`
/// that would delete `deletions` of `known` records.
pub async fn brake(
    sync: &DbSync,
    pass: &str,
    deletions: u64,
    known: u64,
) -> Result<(Brake, Decision), SyncError> {
    let brake = Brake::open(
        &sync.bus.js,
        sync.bus.stream.replicas,
        &sync.bus.stream.name,
        &sync.settings.source,
        Some(&sync.db.name),
        sync.settings.deletion_brake,
    )
    .await?;
    let decision = brake.check(pass, deletions, known).await?;
    Ok((brake, decision))
}

/// One delta pass: batches until the change log has no unprocessed row
/// left (as of the last read).
pub async fn pass(sync: &mut DbSync) -> Result<PassSummary, SyncError> {
    let started = std::time::Instant::now();
    let mut summary = PassSummary::default();
    let gone = crate::retry!(sync, "count deletions", count_gone(sync))?;
    let known = if gone == 0 {
        0
    } else {
        crate::retry!(sync, "count rows", table_rows(sync))? + gone
    };
    let (brake, decision) = crate::retry!(
        sync,
        "deletion brake",
        brake(sync, "changelog", gone, known)
    )?;
    let send_deletes = decision.sends();
    if !send_deletes {
        summary.withheld = gone;
    }
    // Shown once a pass takes more than one batch.
    let mut progress: Option<Progress> = None;
    loop {
        let batch = crate::retry!(sync, "read change log", read_changes(sync, send_deletes))?;
        if batch.is_empty() {
            break;
        }
        let full = batch.len() >= sync.settings.delta_batch;
        let mut pcodes: Vec<i64> = batch.iter().map(|c| c.pcode).collect();
        pcodes.sort_unstable();
        pcodes.dedup();
        let (published, held) = crate::retry!(
            sync,
            "publish changes",
            publish_current(sync, &pcodes, send_deletes)
        )?;
        // Rows of PCODEs whose deletion is held stay unprocessed.
        let ids: Vec<i64> = batch
            .iter()
            .filter(|c| send_deletes || held.binary_search(&c.pcode).is_err())
            .map(|c| c.id)
            .collect();
        crate::retry!(sync, "mark processed", mark_processed(sync, &ids))?;
        summary.add(PassSummary {
            changes: batch.len() as u64,
            ..published
        });
        let max_id = ids.iter().copied().max();
        sync.checkpoint.state.last_change_id = sync.checkpoint.state.last_change_id.max(max_id);
        crate::retry!(sync, "checkpoint", sync.save())?;
        if !full {
            break;
        }
        if progress.is_none() {
            let left = crate::retry!(sync, "count changes", unprocessed(sync))?;
            progress = Some(Progress::start(
                format!("delta pass of {}", sync.name()),
                Unit::Items("changes"),
                Some(summary.changes + left),
            ));
        }
        if let Some(progress) = &progress {
            progress.set(summary.changes);
        }
    }
    drop(progress);
    if decision == Decision::SendReleased {
        crate::retry!(sync, "deletion brake", async {
            brake.released_sent().await.map_err(SyncError::from)
        })?;
    }
    sync.checkpoint.state.passes += 1;
    crate::retry!(sync, "checkpoint", sync.save())?;
    metrics::histogram!("infoclinica_delta_pass_seconds", "database" => sync.db.name.clone())
        .record(started.elapsed().as_secs_f64());
    if summary.changes > 0 {
        tracing::info!(
            database = %sync.name(),
            changes = summary.changes,
            upserts = summary.upserts,
            deletes = summary.deletes,
            withheld_deletes = summary.withheld,
            ms = started.elapsed().as_millis() as u64,
            "delta pass"
        );
    }
    sync.record_status("delta", summary.upserts, summary.deletes)
        .await;
    Ok(summary)
}

/// Unprocessed change-log rows, oldest first; with `deletions` false only
/// those of PCODEs whose row exists (the deletion brake holds the others).
async fn read_changes(sync: &mut DbSync, deletions: bool) -> Result<Vec<Change>, SyncError> {
    let t = &sync.db.table;
    let existing = if deletions {
        String::new()
    } else {
        format!(
            " AND EXISTS (SELECT 1 FROM {table} c WHERE c.{pcode} = l.PCODE)",
            table = t.name,
            pcode = t.pcode
        )
    };
    let sql = format!(
        "SELECT FIRST {n} l.ID, l.PCODE FROM {log} l WHERE l.PROCESSED = 'N'{existing} \
         ORDER BY l.ID",
        n = sync.settings.delta_batch,
        log = sync.db.changelog.table,
    );
    let changes = sync
        .source
        .call(move |conn| {
            let mut out = Vec::new();
            conn.stream_raw(&sql, |row: &[RawValue]| {
                if let [RawValue::Integer(id), RawValue::Integer(pcode)] = row {
                    out.push(Change {
                        id: *id,
                        pcode: *pcode,
                    });
                }
                Ok(())
            })?;
            Ok(out)
        })
        .await?;
    Ok(changes)
}

/// Distinct PCODEs of unprocessed change-log rows whose row is gone: the
/// deletions the next pass would send.
async fn count_gone(sync: &mut DbSync) -> Result<u64, SyncError> {
    let t = &sync.db.table;
    let sql = format!(
        "SELECT COUNT(DISTINCT l.PCODE) FROM {log} l WHERE l.PROCESSED = 'N' \
         AND NOT EXISTS (SELECT 1 FROM {table} c WHERE c.{pcode} = l.PCODE)",
        log = sync.db.changelog.table,
        table = t.name,
        pcode = t.pcode
    );
    count(sync, sql).await
}

/// How many rows the patients table has: the base of the brake's share.
/// Counted (a full scan) only when a pass has deletions, and then at most
/// every [`RECOUNT`] per table.
async fn table_rows(sync: &mut DbSync) -> Result<u64, SyncError> {
    // Per server, database and table (not per configured name: tests in one
    // process reuse names), across restarts of the database's sync.
    type Counts = std::sync::Mutex<HashMap<String, (std::time::Instant, u64)>>;
    static COUNTS: std::sync::OnceLock<Counts> = std::sync::OnceLock::new();
    let counts = COUNTS.get_or_init(Default::default);
    let db = &sync.db;
    let id = format!("{}:{}:{}:{}", db.host, db.port, db.database, db.table.name);
    if let Some((at, rows)) = counts.lock().unwrap().get(&id) {
        if at.elapsed() < RECOUNT {
            return Ok(*rows);
        }
    }
    let rows = count_table(sync).await?;
    counts
        .lock()
        .unwrap()
        .insert(id, (std::time::Instant::now(), rows));
    Ok(rows)
}

/// Rows of the patients table now (the initial load's progress total; the
/// brake's share goes through [`table_rows`]' cache).
pub(crate) async fn count_table(sync: &mut DbSync) -> Result<u64, SyncError> {
    let sql = format!("SELECT COUNT(*) FROM {}", sync.db.table.name);
    count(sync, sql).await
}

/// Unprocessed rows of the change log.
async fn unprocessed(sync: &mut DbSync) -> Result<u64, SyncError> {
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE PROCESSED = 'N'",
        sync.db.changelog.table
    );
    count(sync, sql).await
}

/// How long a count of the patients table serves the brake's share.
const RECOUNT: std::time::Duration = std::time::Duration::from_secs(600);

/// The first column of the first row of `sql`, a count.
async fn count(sync: &mut DbSync, sql: String) -> Result<u64, SyncError> {
    let n = sync
        .source
        .call(move |conn| {
            let mut n = 0u64;
            conn.stream_raw(&sql, |row: &[RawValue]| {
                if let Some(RawValue::Integer(v)) = row.first() {
                    n = (*v).max(0) as u64;
                }
                Ok(())
            })?;
            Ok(n)
        })
        .await?;
    Ok(n)
}

/// Reads the current rows of `pcodes` (chunks of [`IN_LIST`]): mapped
/// records found, and when the read ended.
pub async fn read_rows(
    sync: &mut DbSync,
    pcodes: &[i64],
) -> Result<(Vec<Mapped>, DateTime<Utc>), SyncError> {
    let sql = sync.mapper.rows_sql(pcodes);
    let mapper = sync.mapper.clone();
    let rows = sync
        .source
        .call(move |conn| {
            let today = mapping::today();
            let mut out = Vec::new();
            conn.stream_raw(&sql, |row: &[RawValue]| {
                out.push(mapper.map(row, today));
                Ok(())
            })?;
            Ok((out, Utc::now()))
        })
        .await?;
    Ok(rows)
}

/// Publishes the current state of each PCODE (upsert, or delete when the
/// row is gone) and waits for every ack. Returns the PCODEs found gone
/// (ascending); with `deletions` false (the deletion brake holds) they are
/// not published.
pub async fn publish_current(
    sync: &mut DbSync,
    pcodes: &[i64],
    deletions: bool,
) -> Result<(PassSummary, Vec<i64>), SyncError> {
    let mut gone = Vec::new();
    let bus = sync.bus.clone();
    // The trace every message of this publish carries (exported traces only).
    let span = tracing::info_span!(
        "infoclinica.publish",
        database = %sync.db.name,
        records = pcodes.len()
    );
    let mut publisher = Publisher::with_mode(
        &bus.js,
        &bus.stream,
        sync.settings.publish_window,
        DuplicateMode::Republish,
    )
    .with_traceparent(etl_runtime::telemetry::traceparent_of(&span));
    let mut summary = PassSummary::default();
    for chunk in pcodes.chunks(IN_LIST) {
        let (rows, read_at) = read_rows(sync, chunk).await?;
        let mut found = HashSet::with_capacity(rows.len());
        for row in rows {
            match row {
                Mapped::Record { pcode, record } => {
                    found.insert(pcode);
                    let envelope = sync.upsert(pcode, record, read_at);
                    publisher.send(&envelope).await?;
                    summary.upserts += 1;
                }
                Mapped::Rejected { reason } => {
                    tracing::error!(database = %sync.name(), reason, "row skipped");
                }
            }
        }
        for &pcode in chunk.iter().filter(|p| !found.contains(p)) {
            gone.push(pcode);
            if deletions {
                let envelope = sync.delete(pcode, read_at);
                publisher.send(&envelope).await?;
                summary.deletes += 1;
            }
        }
    }
    gone.sort_unstable();
    publisher.settle().await?;
    let name = sync.db.name.clone();
    metrics::counter!("infoclinica_rows_published_total", "database" => name.clone(), "mode" => "delta")
        .increment(summary.upserts);
    metrics::counter!("infoclinica_deletes_published_total", "database" => name, "mode" => "delta")
        .increment(summary.deletes);
    Ok((summary, gone))
}

/// Sets PROCESSED = 'Y' on exactly these change-log rows, in a short
/// read-write no-wait transaction per chunk.
async fn mark_processed(sync: &mut DbSync, ids: &[i64]) -> Result<(), SyncError> {
    let statements: Vec<String> = ids
        .chunks(IN_LIST)
        .map(|chunk| {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            format!(
                "UPDATE {log} SET PROCESSED = 'Y' WHERE ID IN ({list}) AND PROCESSED = 'N'",
                log = sync.db.changelog.table
            )
        })
        .collect();
    sync.source
        .call(move |conn| {
            for sql in &statements {
                conn.with_transaction_config(firebird::read_write(), |tr| {
                    tr.execute(sql.as_str(), ())
                })?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}
