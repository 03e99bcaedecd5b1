//! The initial load: every row of the patients table, in keyset pages by
//! PCODE, resumable.
//!
//! A reader thread of its own (rsfbclient is blocking) reads pages
//! `WHERE PCODE > last ORDER BY PCODE`, each page in its own short read-only
//! transaction, and does nothing else (its round trips with Firebird are the
//! critical path); an encoder thread maps the raw rows and cuts each page
//! into batch messages; this task publishes. Each hand-over is a channel of
//! two pages, so reading, encoding and publishing overlap and memory stays
//! bounded whatever the table's size. Publishing keeps up to `publish_window` acks
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
use etl_runtime::progress::{Progress, Unit};
use proto::batch::{BatchBuilder, BatchLimits, Encoded};
use proto::bus::Publisher;
use rsfbclient::RawValue;
use tokio::sync::mpsc;

use crate::firebird::{self, SourceError};
use crate::mapping::{self, Mapped, Mapper};
use crate::settings::DatabaseSettings;
use crate::state::{InitialLoad, VersionClock};
use crate::sync::{DbSync, SyncError};

/// One page as the reader thread read it: raw rows (their text is
/// refcounted slices of the wire buffers, not copies), one after the other
/// in one `Vec` (`columns` values each: no allocation per row on the
/// reader thread, whose time is the load's critical path).
struct RawPage {
    values: Vec<RawValue>,
    columns: usize,
    last_pcode: i64,
    read_at: DateTime<Utc>,
}

/// One page mapped and cut into messages by the encoder thread.
struct Page {
    messages: Vec<Encoded>,
    rows: u64,
    rejected: u64,
    last_pcode: i64,
    /// The highest version given to a row of this page (or before).
    last_version: i64,
}

/// How far the initial load got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub rows: u64,
    pub pages: u64,
    /// Messages (batches) the stream dropped as re-published.
    pub duplicates: u64,
}

impl LoadSummary {
    pub fn add(&mut self, other: LoadSummary) {
        self.rows += other.rows;
        self.pages += other.pages;
        self.duplicates += other.duplicates;
    }
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
    let progress = start_progress(sync).await?;
    // A retried attempt resumes from the checkpoint's position.
    crate::retry!(
        sync,
        "initial load",
        attempt_load(sync, &mut summary, &progress)
    )?;
    progress.finish();
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

/// Progress of the load out of the table's rows (counted once), from the
/// rows a resumed load had published.
async fn start_progress(sync: &mut DbSync) -> Result<Progress, SyncError> {
    let total = crate::retry!(sync, "count rows", crate::delta::count_table(sync))?;
    let progress = Progress::start(
        format!("initial load of {}", sync.name()),
        Unit::Items("rows"),
        Some(total),
    );
    progress.set(loaded_rows(sync));
    Ok(progress)
}

fn loaded_rows(sync: &DbSync) -> u64 {
    sync.checkpoint.state.initial.as_ref().map_or(0, |l| l.rows)
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
async fn attempt_load(
    sync: &mut DbSync,
    summary: &mut LoadSummary,
    progress: &Progress,
) -> Result<(), SyncError> {
    let after = load_position(sync);
    // Reader thread → encoder thread → this task, two pages in each channel.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel(2);
    let (tx, mut rx) = mpsc::channel(2);
    let db = sync.db.clone();
    let page_size = sync.settings.page_size;
    let mapper = sync.mapper.clone();
    std::thread::Builder::new()
        .name(format!("fb-read-{}", sync.db.name))
        .spawn(move || read_pages(db, mapper, after, page_size, raw_tx))
        .map_err(anyhow::Error::from)?;
    let encoder = Encoder {
        mapper: sync.mapper.clone(),
        source: sync.settings.source.clone(),
        source_id_prefix: sync.db.source_id_prefix.clone(),
        limits: sync.settings.batch_limits(),
        clock: sync.clock,
    };
    std::thread::Builder::new()
        .name(format!("encode-{}", sync.db.name))
        .spawn(move || encoder.run(raw_rx, tx))
        .map_err(anyhow::Error::from)?;

    let bus = sync.bus.clone();
    // Up to `publish_window` acks in flight, and at most one page: once
    // page k+1 is sent, the acks of page k are collected, so the checkpoint
    // trails the publishing by one page.
    let window = sync.settings.publish_window.min(sync.settings.page_size);
    let source = sync.settings.source.clone();
    let mut publisher = Publisher::new(&bus.js, &bus.stream, window);
    // Pages sent but not yet checkpointed: (messages sent up to its end,
    // its last PCODE, its rows).
    let mut pending: VecDeque<(u64, i64, u64)> = VecDeque::new();
    let mut sent = 0u64;
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
        // The checkpoint's version watermark covers what is published.
        sync.clock = VersionClock::new(sync.clock.last().max(page.last_version));
        // One trace per page (exported traces only).
        let span = tracing::info_span!(
            "infoclinica.initial_page",
            database = %sync.db.name,
            rows = page.rows
        );
        publisher.set_traceparent(etl_runtime::telemetry::traceparent_of(&span));
        let this_page = page.messages.len();
        for message in page.messages {
            publisher.send_encoded(&source, message).await?;
        }
        sent += this_page as u64;
        pending.push_back((sent, page.last_pcode, page.rows));
        summary.pages += 1;
        sync.step_succeeded();
        // This page is under way; the pages before it are acknowledged
        // before the next page is taken, and checkpointed.
        let published = publisher.settle_all_but(this_page).await?;
        checkpoint_acked(sync, &mut pending, published, summary).await?;
        progress.set(loaded_rows(sync));
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

/// The encoder thread: maps each raw page's rows to records and cuts the
/// page into batch messages (each record serialized once, straight into its
/// message), off the reader thread (whose round trips with Firebird are
/// the load's critical path) and off the async runtime. Records are
/// dropped on the thread that allocated them.
struct Encoder {
    mapper: Arc<Mapper>,
    source: String,
    source_id_prefix: String,
    limits: BatchLimits,
    /// A copy of the database's clock; each page reports its last version
    /// back so that the checkpoint's watermark follows.
    clock: VersionClock,
}

impl Encoder {
    fn run(
        mut self,
        pages: std::sync::mpsc::Receiver<Result<RawPage, SourceError>>,
        tx: mpsc::Sender<Result<Page, SourceError>>,
    ) {
        // Each page is cut into batch messages of its own (never across
        // pages: the checkpoint moves per page), the same way whenever it
        // is re-read.
        let mut batches = BatchBuilder::new(self.source.as_str(), self.limits);
        let mut source_id = String::new();
        for page in pages {
            let page = page.map(|raw| self.encode(raw, &mut batches, &mut source_id));
            if tx.blocking_send(page).is_err() {
                return;
            }
        }
    }

    fn encode(&mut self, raw: RawPage, batches: &mut BatchBuilder, source_id: &mut String) -> Page {
        let today = mapping::today();
        let mut page = Page {
            messages: Vec::new(),
            rows: 0,
            rejected: 0,
            last_pcode: raw.last_pcode,
            last_version: 0,
        };
        for row in raw.values.chunks_exact(raw.columns) {
            match self.mapper.map(row, today) {
                Mapped::Record { pcode, record } => {
                    source_id.clear();
                    write!(source_id, "{}{pcode}", self.source_id_prefix)
                        .expect("writes to a String");
                    let version = self.clock.version(raw.read_at);
                    page.messages.extend(batches.push_upsert(
                        source_id,
                        version,
                        raw.read_at,
                        &record,
                    ));
                    page.rows += 1;
                }
                Mapped::Rejected { .. } => page.rejected += 1,
            }
        }
        page.messages.extend(batches.finish());
        page.last_version = self.clock.last();
        page
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

/// The reader thread: raw pages until the end of the table (then it closes
/// the channel), the first error (sent, then the connection is dropped), or
/// the receiver going away. It only reads: mapping is the encoder's.
fn read_pages(
    db: DatabaseSettings,
    mapper: Arc<Mapper>,
    mut after: i64,
    page_size: usize,
    tx: std::sync::mpsc::SyncSender<Result<RawPage, SourceError>>,
) {
    let mut conn = match firebird::builder(&db).connect() {
        Ok(conn) => conn,
        Err(e) => {
            let _ = tx.send(Err(e.into()));
            return;
        }
    };
    let columns = mapper.columns();
    loop {
        let sql = mapper.page_sql(after, page_size);
        let mut values = Vec::with_capacity(page_size * columns);
        let mut last = after;
        let result = conn.stream_raw(&sql, |row: &[RawValue]| {
            if let Some(RawValue::Integer(p)) = row.first() {
                last = last.max(*p);
            }
            debug_assert_eq!(row.len(), columns, "the SELECT list's columns");
            values.extend_from_slice(row);
            Ok(())
        });
        if let Err(e) = result {
            let _ = tx.send(Err(e.into()));
            return;
        }
        if values.is_empty() {
            return;
        }
        let page = RawPage {
            values,
            columns,
            last_pcode: last,
            read_at: Utc::now(),
        };
        after = last;
        if tx.send(Ok(page)).is_err() {
            return;
        }
    }
}
