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
//! * [`check`]: `--check-config`'s check of each database's tables and
//!   columns.
//!
//! [`run`] starts one task per configured database; each has its own
//! connection, checkpoint and clock, and retries its own failures with
//! backoff, so one branch being down never stops the others.

pub mod check;
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
use etl_runtime::retry::{retry, Attempts};
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
///
/// Transient failures never end the daemon: each step is retried, and a
/// database whose sync failed anyway is started again from its stored
/// checkpoint. A permanent failure of one database (see
/// [`SyncError::is_permanent`]) stops the daemon, the other databases
/// included, with that error.
pub async fn run(
    settings: Settings,
    mode: Mode,
    shutdown: Shutdown,
) -> anyhow::Result<Vec<DatabaseSummary>> {
    settings.validate()?;
    let client = settings.nats.connect("infoclinica-extractor").await?;
    let js = async_nats::jetstream::new(client.clone());
    let Some(checkpoints) = wait_for_bus(&js, &settings, &shutdown).await else {
        return Ok(Vec::new());
    };
    etl_runtime::observe::watch_nats(&client);
    etl_runtime::observe::watch_stream(&js, &settings.stream.name);
    sync::watch_firebird();
    etl_runtime::observe::ready();
    let bus = Bus {
        js,
        stream: settings.stream.clone(),
    };
    // Cancelled by a permanent failure of one database in the daemon.
    let stop = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for db in settings.databases.clone() {
        let bus = bus.clone();
        let extractor = settings.extractor.clone();
        let checkpoints = checkpoints.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let name = db.name.clone();
            let result = run_database(bus, extractor, db, checkpoints, mode, stop).await;
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
                failed.push(format!("{name}: {e}"));
                if mode == Mode::Daemon {
                    stop.cancel();
                }
            }
        }
    }
    let _ = client.flush().await;
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    if failed.is_empty() {
        Ok(summaries)
    } else {
        anyhow::bail!("sync failed for database(s) {}", failed.join("; "))
    }
}

/// Waits (with backoff) until the stream and the checkpoint bucket are
/// usable; `None` on shutdown. Every failure is retried.
async fn wait_for_bus(
    js: &async_nats::jetstream::Context,
    settings: &Settings,
    shutdown: &Shutdown,
) -> Option<Checkpoints> {
    let ready = || async move {
        proto::bus::ensure_stream(js, &settings.stream)
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", settings.stream.name))?;
        Checkpoints::open(
            js,
            &settings.extractor.checkpoint_bucket,
            settings.stream.replicas,
        )
        .await
    };
    let what = "preparing the stream and the checkpoint bucket";
    retry(what, &settings.extractor.retry, shutdown, |_| true, ready)
        .await
        .ok()
}

/// One database's sync. In the daemon, a failure that is not permanent
/// (a checkpoint conflict: an operator deleted the checkpoint, or a second
/// instance writes it) starts the sync again from the stored checkpoint
/// after a backoff, so the database is never left stopped.
async fn run_database(
    bus: Bus,
    extractor: settings::ExtractorSettings,
    db: settings::DatabaseSettings,
    checkpoints: Checkpoints,
    mode: Mode,
    shutdown: Shutdown,
) -> Result<DatabaseSummary, SyncError> {
    let mut summary = DatabaseSummary {
        name: db.name.clone(),
        ..Default::default()
    };
    // What the previous attempt published: versions never go back.
    let mut last_version = 0;
    // Across restarts: a restart after a pass that went through waits the
    // shortest delay again, one that keeps failing waits longer each time.
    let mut restarts = Attempts::new(extractor.retry, shutdown.clone());
    loop {
        let Some(mut checkpoint) =
            load_checkpoint(&checkpoints, &db.name, &extractor, &shutdown).await
        else {
            return Ok(summary);
        };
        checkpoint.state.last_version = checkpoint.state.last_version.max(last_version);
        let mut sync = DbSync::new(
            bus.clone(),
            extractor.clone(),
            db.clone(),
            checkpoint,
            shutdown.clone(),
        );
        sync.one_shot = mode != Mode::Daemon;
        let passes = summary.passes;
        let result = run_mode(&mut sync, mode, &mut summary).await;
        last_version = sync.clock.last();
        let restart = match result {
            Ok(()) | Err(SyncError::Stopped) => None,
            Err(e) if mode == Mode::Daemon && !e.is_permanent() => Some(e),
            Err(e) => {
                summary.failures += sync.failures;
                return Err(e);
            }
        };
        if let Some(e) = restart {
            if summary.passes > passes {
                restarts.succeeded();
            }
            sync.attempt_failed(&e);
            // The next attempt starts the sync again from the checkpoint.
            let what = sync.describe_step("sync", &e);
            if restarts.wait(&what, &e).await.is_ok() {
                summary.failures += sync.failures;
                continue;
            }
        }
        summary.failures += sync.failures;
        return Ok(summary);
    }
}

/// The database's checkpoint, retried with backoff; `None` on shutdown.
async fn load_checkpoint(
    checkpoints: &Checkpoints,
    name: &str,
    extractor: &settings::ExtractorSettings,
    shutdown: &Shutdown,
) -> Option<Checkpoint> {
    let what = format!("reading the checkpoint of database {name}");
    let load = || Checkpoint::load(checkpoints.clone(), name);
    retry(&what, &extractor.retry, shutdown, |_| true, load)
        .await
        .ok()
}

/// Runs `mode` on one database, adding what it did to `summary`.
async fn run_mode(
    sync: &mut DbSync,
    mode: Mode,
    summary: &mut DatabaseSummary,
) -> Result<(), SyncError> {
    match mode {
        Mode::InitialLoad => summary
            .initial
            .add(initial::run(sync, initial::Start::ResumeOrNew).await?),
        Mode::InitialLoadFromScratch => summary
            .initial
            .add(initial::run(sync, initial::Start::FromScratch).await?),
        Mode::DeltaOnce => {
            let mode = sync.db.sync;
            summary.delta.add(one_pass(sync, mode).await?);
            summary.passes += 1;
        }
        Mode::ReconcileOnce => {
            summary
                .delta
                .add(one_pass(sync, settings::SyncMode::Reconcile).await?);
            summary.passes += 1;
        }
        Mode::Daemon => {
            summary
                .initial
                .add(initial::run(sync, initial::Start::UnlessFinished).await?);
            let interval = sync.settings.delta_interval;
            loop {
                let mode = sync.db.sync;
                summary.delta.add(one_pass(sync, mode).await?);
                summary.passes += 1;
                tokio::select! {
                    _ = sync.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    }
    Ok(())
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
