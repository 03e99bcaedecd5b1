//! The initial load: every row of the patients table, in keyset pages by
//! PCODE, resumable.
//!
//! A reader thread of its own (rsfbclient is blocking) reads and maps pages
//! `WHERE PCODE > last ORDER BY PCODE`, each page in its own short read-only
//! transaction, and hands them over a channel of two pages, so reading the
//! next page overlaps with publishing this one and memory stays bounded
//! whatever the table's size. Publishing keeps up to `publish_window` acks
//! in flight; each page is cut into batch messages of up to
//! `batch_records` records (`proto::batch`: one NATS message, several
//! envelopes, serialized once); a page's last PCODE is written to the
//! checkpoint only once every message of the page (and of every page before
//! it) is acknowledged.
//! After a crash the load resumes after that PCODE; whatever was published
//! past it again is dropped by the stream's duplicate window (same rows, same
//! batches, same message ids) or, outside the window, left unchanged by the
//! loader.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proto::batch::BatchBuilder;
use proto::bus::Publisher;
use proto::PatientRecord;
use rsfbclient::RawValue;
use tokio::sync::mpsc;

use crate::firebird::{self, SourceError};
use crate::mapping::{self, Mapped, Mapper};
use crate::settings::DatabaseSettings;
use crate::state::InitialLoad;
use crate::sync::{DbSync, SyncError};

/// One page read by the reader thread.
struct Page {
    rows: Vec<(i64, PatientRecord)>,
    rejected: u64,
    last_pcode: i64,
    read_at: DateTime<Utc>,
}

/// How far the initial load got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub rows: u64,
    pub pages: u64,
    /// Messages (batches) the stream dropped as re-published.
    pub duplicates: u64,
}

/// When to start a new initial load rather than resume or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Resume an unfinished load; do nothing if one finished (the daemon).
    UnlessFinished,
    /// Resume an unfinished load, else start a new one (`--initial-load`).
    ResumeOrNew,
    /// Start over from the first PCODE, even mid-load (`--restart`).
    FromScratch,
}

/// Runs (or resumes) the initial load of `sync`'s database.
pub async fn run(sync: &mut DbSync, start: Start) -> Result<LoadSummary, SyncError> {
    let unfinished = matches!(&sync.checkpoint.state.initial, Some(l) if !l.done);
    let resume = unfinished && start != Start::FromScratch;
    if !resume {
        if start == Start::UnlessFinished && sync.checkpoint.state.initial.is_some() {
            return Ok(LoadSummary::default());
        }
        sync.checkpoint.state.initial = Some(InitialLoad {
            after_pcode: 0,
            done: false,
            rows: 0,
            started_at: Utc::now(),
            finished_at: None,
        });
        crate::retry!(sync, "checkpoint", sync.save())?;
    }
    let after = load_position(sync);
    tracing::info!(database = %sync.name(), after_pcode = after, resume, "initial load starts");
    let started = std::time::Instant::now();
    let mut summary = LoadSummary::default();
    let mut attempt = 0;
    loop {
        match attempt_load(sync, &mut summary).await {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                attempt += 1;
                sync.pause(attempt, &e, "initial load").await?;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(load) = sync.checkpoint.state.initial.as_mut() {
        load.done = true;
        load.finished_at = Some(Utc::now());
    }
    crate::retry!(sync, "checkpoint", sync.save())?;
    metrics::histogram!("infoclinica_initial_load_seconds", "database" => sync.db.name.clone())
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        database = %sync.name(),
        rows = summary.rows,
        pages = summary.pages,
        duplicates = summary.duplicates,
        seconds = started.elapsed().as_secs_f64(),
        "initial load finished"
    );
    sync.record_status("initial", summary.rows, 0).await;
    Ok(summary)
}

fn load_position(sync: &DbSync) -> i64 {
    sync.checkpoint
        .state
        .initial
        .as_ref()
        .map_or(0, |l| l.after_pcode)
}

/// One attempt: from the checkpoint to the end of the table, or to the
/// first failure (after checkpointing every page that was acknowledged).
async fn attempt_load(sync: &mut DbSync, summary: &mut LoadSummary) -> Result<(), SyncError> {
    let after = load_position(sync);
    let (tx, mut rx) = mpsc::channel(2);
    let db = sync.db.clone();
    let mapper = sync.mapper.clone();
    let page_size = sync.settings.page_size;
    std::thread::Builder::new()
        .name(format!("fb-read-{}", sync.db.name))
        .spawn(move || read_pages(db, mapper, after, page_size, tx))
        .map_err(anyhow::Error::from)?;

    let bus = sync.bus.clone();
    // Up to `publish_window` acks in flight, and at most one page: once
    // page k+1 is sent, the acks of page k are collected, so the checkpoint
    // trails the publishing by one page.
    let window = sync.settings.publish_window.min(sync.settings.page_size);
    let source = sync.settings.source.clone();
    let mut publisher = Publisher::new(&bus.js, &bus.stream, window);
    // Each page is cut into batch messages of its own (never across pages:
    // the checkpoint moves per page), the same way whenever it is re-read.
    let mut batches = BatchBuilder::new(source.as_str(), sync.settings.batch_limits());
    // Pages sent but not yet checkpointed: (messages sent up to its end,
    // its last PCODE, its rows).
    let mut pending: VecDeque<(u64, i64, u64)> = VecDeque::new();
    let mut sent = 0u64;
    let mut source_id = String::new();
    let wait = sync.settings.query_timeout + sync.settings.connect_timeout;
    let failure: Option<SyncError> = loop {
        let next = tokio::select! {
            _ = sync.shutdown.cancelled() => break Some(SyncError::Stopped),
            next = tokio::time::timeout(wait, rx.recv()) => next,
        };
        let page = match next {
            Err(_) => break Some(SourceError::Timeout(wait).into()),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(e.into()),
            Ok(Some(Ok(page))) => page,
        };
        if page.rejected > 0 {
            tracing::error!(
                database = %sync.name(),
                after_pcode = page.last_pcode,
                rows = page.rejected,
                "rows without a usable PCODE skipped"
            );
        }
        let n = page.rows.len() as u64;
        let sent_before = sent;
        for (pcode, record) in &page.rows {
            source_id.clear();
            write!(source_id, "{}{pcode}", sync.db.source_id_prefix).expect("writes to a String");
            let version = sync.clock.version(page.read_at);
            if let Some(message) = batches.push_upsert(&source_id, version, page.read_at, record) {
                publisher.send_encoded(&source, message).await?;
                sent += 1;
            }
        }
        if let Some(message) = batches.finish() {
            publisher.send_encoded(&source, message).await?;
            sent += 1;
        }
        pending.push_back((sent, page.last_pcode, n));
        summary.pages += 1;
        // This page is under way; the pages before it are acknowledged
        // before the next page is taken, and checkpointed.
        let this_page = (sent - sent_before) as usize;
        let published = publisher.settle_all_but(this_page).await?;
        checkpoint_acked(sync, &mut pending, published, summary).await?;
    };
    drop(rx);
    // Whatever happened, what was sent and acknowledged is checkpointed.
    let published = publisher.settle().await?;
    checkpoint_acked(sync, &mut pending, published, summary).await?;
    summary.duplicates = published.duplicates;
    match failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Moves the checkpoint to the last page whose every message is acked.
async fn checkpoint_acked(
    sync: &mut DbSync,
    pending: &mut VecDeque<(u64, i64, u64)>,
    published: proto::bus::Published,
    summary: &mut LoadSummary,
) -> Result<(), SyncError> {
    let acked = published.stored + published.duplicates;
    let mut moved = false;
    while let Some(&(end, last_pcode, rows)) = pending.front() {
        if end > acked {
            break;
        }
        pending.pop_front();
        if let Some(load) = sync.checkpoint.state.initial.as_mut() {
            load.after_pcode = last_pcode;
            load.rows += rows;
        }
        summary.rows += rows;
        metrics::counter!("infoclinica_rows_published_total",
            "database" => sync.db.name.clone(), "mode" => "initial")
        .increment(rows);
        moved = true;
    }
    if moved {
        sync.save().await?;
    }
    Ok(())
}

/// The reader thread: pages until the end of the table (then it closes the
/// channel), the first error (sent, then the connection is dropped), or the
/// receiver going away.
fn read_pages(
    db: DatabaseSettings,
    mapper: Arc<Mapper>,
    mut after: i64,
    page_size: usize,
    tx: mpsc::Sender<Result<Page, SourceError>>,
) {
    let mut conn = match firebird::builder(&db).connect() {
        Ok(conn) => conn,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    };
    loop {
        let sql = mapper.page_sql(after, page_size);
        let today = mapping::today();
        let mut rows = Vec::with_capacity(page_size);
        let mut rejected = 0;
        let mut last = after;
        let result = conn.stream_raw(&sql, |row: &[RawValue]| {
            if let Some(RawValue::Integer(p)) = row.first() {
                last = last.max(*p);
            }
            match mapper.map(row, today) {
                Mapped::Record { pcode, record } => rows.push((pcode, record)),
                Mapped::Rejected { .. } => rejected += 1,
            }
            Ok(())
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
        if rows.is_empty() && rejected == 0 {
            return;
        }
        let page = Page {
            rows,
            rejected,
            last_pcode: last,
            read_at: Utc::now(),
        };
        after = last;
        if tx.blocking_send(Ok(page)).is_err() {
            return;
        }
    }
}
