//! `infoclinica-extractor`: reads patients from Infoclinica Firebird
//! databases and publishes normalized records to `patients.infoclinica`.
//!
//! * [`settings`]: the configuration (one `[[databases]]` per database).
//! * [`firebird`]: connections, read-only transactions, blocking calls off
//!   the async runtime, errors safe to log.
//! * [`mapping`]: where a `CLIENTS` row becomes a `PatientRecord`.
//! * [`initial`]: the initial load, keyset pages by PCODE, resumable.
//! * [`delta`]: delta sync from the trigger-filled change log.
//! * [`reconcile`]: delta sync without triggers (key and row-version scan).
//! * [`state`]: the checkpoint of each database and the version clock.
//! * [`sample`]: a sample database for the demo, tests and benchmark.
//!
//! [`run`] starts one task per configured database; each has its own
//! connection, checkpoint and clock, and retries its own failures with
//! backoff, so one branch being down never stops the others.

pub mod delta;
pub mod firebird;
pub mod initial;
pub mod mapping;
pub mod reconcile;
pub mod sample;
pub mod settings;
pub mod state;
pub mod sync;

use etl_runtime::checkpoint::Checkpoints;
use etl_runtime::shutdown::Shutdown;

pub use settings::Settings;

use crate::state::Checkpoint;
use crate::sync::{Bus, DbSync, SyncError};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Finish (or do) the initial load if it never finished, then a delta or
    /// reconciliation pass every `extractor.delta_interval`, until shutdown.
    Daemon,
    /// An initial load: resumes an unfinished one, else starts a new one.
    InitialLoad,
    /// An initial load from the first PCODE, even if one is unfinished.
    InitialLoadFromScratch,
    /// One delta pass (or reconciliation pass for `sync = "reconcile"`).
    DeltaOnce,
    /// One reconciliation pass, whatever `sync` says.
    ReconcileOnce,
}

/// What one database's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseSummary {
    pub name: String,
    pub initial: initial::LoadSummary,
    pub delta: delta::PassSummary,
    pub passes: u64,
    /// Failed attempts that were retried after a backoff.
    pub failures: u64,
}

/// Runs `mode` for every configured database until done or `shutdown`.
pub async fn run(
    settings: Settings,
    mode: Mode,
    shutdown: Shutdown,
) -> anyhow::Result<Vec<DatabaseSummary>> {
    settings.validate()?;
    let client = settings.nats.connect("infoclinica-extractor").await?;
    let js = async_nats::jetstream::new(client.clone());
    let backoff = settings.extractor.retry;
    let mut attempt = 0;
    let checkpoints = loop {
        let ready = async {
            proto::bus::ensure_stream(&js, &settings.stream)
                .await
                .map_err(|e| anyhow::anyhow!("stream {}: {e}", settings.stream.name))?;
            Checkpoints::open(&js, &settings.extractor.checkpoint_bucket).await
        };
        match ready.await {
            Ok(cp) => break cp,
            Err(e) => {
                attempt += 1;
                let delay = backoff.delay(attempt);
                tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64,
                    "NATS not ready; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Vec::new()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    etl_runtime::observe::watch_nats(&client);
    etl_runtime::observe::watch_stream(&js, &settings.stream.name);
    sync::watch_firebird();
    etl_runtime::observe::ready();
    let bus = Bus {
        js,
        stream: settings.stream.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for db in settings.databases.clone() {
        let bus = bus.clone();
        let extractor = settings.extractor.clone();
        let checkpoints = checkpoints.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let name = db.name.clone();
            let result = run_database(bus, extractor, db, checkpoints, mode, shutdown).await;
            (name, result)
        });
    }
    let mut summaries = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined?;
        match result {
            Ok(summary) => summaries.push(summary),
            Err(e) => {
                tracing::error!(database = %name, error = %e, "database sync stopped");
                failed.push(name);
            }
        }
    }
    let _ = client.flush().await;
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    if failed.is_empty() {
        Ok(summaries)
    } else {
        anyhow::bail!("sync failed for database(s) {}", failed.join(", "))
    }
}

async fn run_database(
    bus: Bus,
    extractor: settings::ExtractorSettings,
    db: settings::DatabaseSettings,
    checkpoints: Checkpoints,
    mode: Mode,
    shutdown: Shutdown,
) -> Result<DatabaseSummary, SyncError> {
    let mut attempt = 0;
    let checkpoint = loop {
        match Checkpoint::load(checkpoints.clone(), &db.name).await {
            Ok(cp) => break cp,
            Err(e) => {
                attempt += 1;
                let delay = extractor.retry.delay(attempt);
                tracing::warn!(database = %db.name, error = %e, "checkpoint not readable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(DatabaseSummary::default()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    let interval = extractor.delta_interval;
    let mut sync = DbSync::new(bus, extractor, db, checkpoint, shutdown.clone());
    let mut summary = DatabaseSummary {
        name: sync.db.name.clone(),
        ..Default::default()
    };
    let result = async {
        match mode {
            Mode::InitialLoad => {
                summary.initial = initial::run(&mut sync, initial::Start::ResumeOrNew).await?
            }
            Mode::InitialLoadFromScratch => {
                summary.initial = initial::run(&mut sync, initial::Start::FromScratch).await?
            }
            Mode::DeltaOnce => {
                let mode = sync.db.sync;
                summary.delta = one_pass(&mut sync, mode).await?;
                summary.passes = 1;
            }
            Mode::ReconcileOnce => {
                summary.delta = one_pass(&mut sync, settings::SyncMode::Reconcile).await?;
                summary.passes = 1;
            }
            Mode::Daemon => {
                summary.initial = initial::run(&mut sync, initial::Start::UnlessFinished).await?;
                loop {
                    let mode = sync.db.sync;
                    let pass = one_pass(&mut sync, mode).await?;
                    summary.delta.add(pass);
                    summary.passes += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            }
        }
        Ok::<_, SyncError>(())
    }
    .await;
    summary.failures = sync.failures;
    match result {
        Ok(()) | Err(SyncError::Stopped) => Ok(summary),
        Err(e) => Err(e),
    }
}

async fn one_pass(
    sync: &mut DbSync,
    mode: settings::SyncMode,
) -> Result<delta::PassSummary, SyncError> {
    match mode {
        settings::SyncMode::Changelog => delta::pass(sync).await,
        settings::SyncMode::Reconcile => reconcile::pass(sync).await,
    }
}
