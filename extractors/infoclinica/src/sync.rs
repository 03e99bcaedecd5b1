//! What every sync mode of one database shares: the bus, the checkpoint,
//! the version clock, errors and the backoff between attempts.

use std::sync::Arc;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use etl_runtime::checkpoint::CheckpointError;
use etl_runtime::retry::Attempts;
use etl_runtime::shutdown::Shutdown;
use proto::bus::{PublishFailed, StreamSettings};
use proto::{Envelope, PatientRecord};

use crate::firebird::{Source, SourceError};
use crate::mapping::Mapper;
use crate::settings::{DatabaseSettings, ExtractorSettings};
use crate::state::{Checkpoint, VersionClock};

/// Why a step of a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Publish(#[from] PublishFailed),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("stopped by shutdown")]
    Stopped,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl SyncError {
    /// Worth another attempt of the same step after a backoff: the source or
    /// the bus is down, slow or refusing us. A checkpoint conflict is not
    /// (the step's revision is stale: the daemon starts the database's sync
    /// again from the stored checkpoint), nor a permanent error.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Source(e) => !e.is_permanent(),
            SyncError::Publish(_) | SyncError::Unexpected(_) => true,
            SyncError::Checkpoint(CheckpointError::Unexpected(_)) => true,
            SyncError::Checkpoint(CheckpointError::Conflict { .. }) | SyncError::Stopped => false,
        }
    }

    /// Not cured by waiting or starting over (the configuration names a
    /// table or column the database lacks): the extractor stops with it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SyncError::Source(e) if e.is_permanent())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Source(e) => e.kind(),
            SyncError::Publish(_) => "publish",
            SyncError::Checkpoint(_) => "checkpoint",
            SyncError::Stopped => "stopped",
            SyncError::Unexpected(_) => "unexpected",
        }
    }
}

/// The shared parts of every database's sync.
#[derive(Clone)]
pub struct Bus {
    pub js: jetstream::Context,
    pub stream: StreamSettings,
}

/// One database's sync: its source, mapping, checkpoint and clock.
pub struct DbSync {
    pub bus: Bus,
    pub settings: ExtractorSettings,
    pub db: DatabaseSettings,
    pub source: Source,
    pub mapper: Arc<Mapper>,
    pub checkpoint: Checkpoint,
    pub clock: VersionClock,
    pub shutdown: Shutdown,
    /// Reconciliation mode: the keys and versions of the last pass.
    pub snapshot: Option<crate::state::Snapshot>,
    /// Failed attempts so far (each followed by a backoff).
    pub failures: u64,
    /// A one-shot run (`--initial-load`, `--delta-sync`, `--reconcile`):
    /// see [`DbSync::retries`].
    pub one_shot: bool,
}

impl DbSync {
    pub fn new(
        bus: Bus,
        settings: ExtractorSettings,
        db: DatabaseSettings,
        checkpoint: Checkpoint,
        shutdown: Shutdown,
    ) -> DbSync {
        let source = Source::new(db.clone(), settings.connect_timeout, settings.query_timeout);
        let clock = VersionClock::new(checkpoint.state.last_version);
        DbSync {
            bus,
            mapper: Arc::new(Mapper::new(&db)),
            source,
            db,
            settings,
            checkpoint,
            clock,
            shutdown,
            snapshot: None,
            failures: 0,
            one_shot: false,
        }
    }

    /// Whether a failed step is tried again after a backoff: a transient
    /// failure is, but a one-shot run (cron, an operator at a terminal)
    /// stops at a refused login with a clear message rather than wait for a
    /// password to change by itself. The daemon retries it (the login may
    /// be fixed on the server while it runs).
    pub fn retries(&self, error: &SyncError) -> bool {
        error.is_transient()
            && !(self.one_shot && matches!(error, SyncError::Source(SourceError::LoginRefused)))
    }

    pub fn name(&self) -> &str {
        &self.db.name
    }

    /// Records a successful pass for `etl status` under the stream, the
    /// source and the database's name (never fails the pass).
    pub async fn record_status(&self, kind: &str, published: u64, deleted: u64) {
        let sync = etl_runtime::sync_status::Sync {
            kind,
            published,
            deleted,
        };
        etl_runtime::sync_status::record_in(
            &self.bus.js,
            self.bus.stream.replicas,
            &self.bus.stream.name,
            &self.settings.source,
            Some(&self.db.name),
            sync,
        )
        .await;
    }

    /// The record's source id: the PCODE, after the database's prefix.
    pub fn source_id(&self, pcode: i64) -> String {
        format!("{}{pcode}", self.db.source_id_prefix)
    }

    pub fn upsert(
        &mut self,
        pcode: i64,
        record: PatientRecord,
        read_at: DateTime<Utc>,
    ) -> Envelope {
        let version = self.clock.version(read_at);
        Envelope::upsert(
            self.settings.source.as_str(),
            self.source_id(pcode),
            version,
            read_at,
            record,
        )
    }

    pub fn delete(&mut self, pcode: i64, read_at: DateTime<Utc>) -> Envelope {
        let version = self.clock.version(read_at);
        Envelope::delete(
            self.settings.source.as_str(),
            self.source_id(pcode),
            version,
            read_at,
        )
    }

    /// Saves the checkpoint with the current version watermark.
    pub async fn save(&mut self) -> Result<(), SyncError> {
        self.checkpoint.state.last_version = self.clock.last();
        self.checkpoint.save().await?;
        Ok(())
    }

    /// The retry state of one step: the extractor's backoff, cut short by
    /// this sync's shutdown. [`retry!`] makes one per step.
    pub fn attempts(&self) -> Attempts {
        Attempts::new(self.settings.retry, self.shutdown.clone())
    }

    /// What a failed attempt, retried, does besides the shared warning and
    /// wait of [`Attempts::wait`]: counts it (in the summary and a metric),
    /// and for a Firebird error drops the connection (the next attempt
    /// connects again) and fails the `firebird` readiness check until a
    /// step reaches Firebird again.
    pub fn attempt_failed(&mut self, error: &SyncError) {
        self.failures += 1;
        metrics::counter!(
            "infoclinica_errors_total",
            "database" => self.db.name.clone(),
            "kind" => error.kind(),
        )
        .increment(1);
        if matches!(error, SyncError::Source(_)) {
            self.source.disconnect();
            firebird_failures()
                .lock()
                .unwrap()
                .insert(self.db.name.clone(), error.kind());
        }
    }

    /// How the shared warning names a failed step: the step, the database
    /// (a configured name, no personal data) and the error's kind.
    pub fn describe_step(&self, what: &str, error: &SyncError) -> String {
        format!("{what} ({}, database {})", error.kind(), self.db.name)
    }
}

impl DbSync {
    /// A step succeeded: if Firebird had failed, the step retried after it
    /// (the same step) reached it, so it is usable again.
    pub fn step_succeeded(&self) {
        let mut failures = firebird_failures().lock().unwrap();
        if !failures.is_empty() {
            failures.remove(&self.db.name);
        }
    }
}

/// Databases whose latest Firebird step failed, with the error's kind.
fn firebird_failures() -> &'static std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>
{
    static FAILURES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>,
    > = std::sync::OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// Readiness check `firebird`: fails while the latest Firebird step of a
/// database failed (the sync is retrying it), naming the database and the
/// error's kind. It follows the sync's own work (no extra connection per
/// probe): between two delta passes an outage shows at the next pass.
pub fn watch_firebird() {
    etl_runtime::observe::watch("firebird", || {
        let failures = firebird_failures().lock().unwrap().clone();
        async move {
            if failures.is_empty() {
                Ok(())
            } else {
                let list: Vec<String> = failures
                    .iter()
                    .map(|(db, kind)| format!("{db}: {kind}"))
                    .collect();
                Err(format!("Firebird not usable ({})", list.join(", ")))
            }
        }
    });
}

/// Evaluates `$step` (a future, re-created on every attempt) until it
/// succeeds, retrying what [`DbSync::retries`] with [`Attempts::wait`].
///
/// A macro, not [`etl_runtime::retry::retry`]: the step borrows the sync
/// mutably from one attempt to the next, which a closure returning the
/// step's future cannot express.
#[macro_export]
macro_rules! retry {
    ($sync:expr, $what:expr, $step:expr) => {{
        let mut attempts = $sync.attempts();
        loop {
            if attempts.stopped() {
                break Err($crate::sync::SyncError::Stopped);
            }
            match $step.await {
                Ok(value) => {
                    $sync.step_succeeded();
                    break Ok(value);
                }
                Err(e) if $sync.retries(&e) => {
                    $sync.attempt_failed(&e);
                    let what = $sync.describe_step($what, &e);
                    if attempts.wait(&what, &e).await.is_err() {
                        break Err($crate::sync::SyncError::Stopped);
                    }
                }
                Err(e) => break Err(e),
            }
        }
    }};
}
