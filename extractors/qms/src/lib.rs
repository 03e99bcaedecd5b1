//! Reads qMS's full patient export over HTTP and publishes what changed (and
//! deletions) to the bus.
//!
//! Where things happen:
//!
//! * [`parse`]: bytes → lines → records (wrapped lines rejoined) → fields →
//!   normalized [`proto::PatientRecord`].
//! * [`export`]: one download attempt, streamed and parsed as it arrives,
//!   checked for completeness; changed records wait in a spill file.
//! * [`sync`]: retries, comparison with the last published state, the
//!   deletion brake, publishing, saving the state.
//! * [`state`]: the last published state (his number → content hash) in a
//!   NATS object store, named by a KV checkpoint.
//! * [`settings`]: the configuration (user documentation in doc comments).

pub mod export;
pub mod parse;
pub mod settings;
pub mod state;
pub mod sync;

use std::time::{Duration, Instant};

pub use settings::Settings;
pub use sync::{Extractor, RunOptions, SyncError, SyncReport};

use etl_runtime::retry::{retry, GaveUp};
use etl_runtime::shutdown::Shutdown;

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One sync, then return (`--no-daemon`).
    Once,
    /// A sync every `qms.interval` until shut down.
    Daemon,
}

/// Runs the extractor. In [`Mode::Once`] the result is that of the sync.
pub async fn run(
    settings: Settings,
    mode: Mode,
    mut options: RunOptions,
    shutdown: Shutdown,
) -> anyhow::Result<Option<SyncReport>> {
    let interval = settings.qms.interval;
    let backoff = settings.qms.retry_backoff;
    let failed_delay = settings.qms.failed_sync_delay.min(interval);
    let Some(extractor) = connect(settings, mode, &shutdown).await? else {
        return Ok(None);
    };
    etl_runtime::observe::ready();
    if options.reset_state {
        reset_state(&extractor, &backoff, mode, &shutdown).await?;
    }
    loop {
        let started = Instant::now();
        let result = extractor.sync(options, &shutdown).await;
        let wait = match &result {
            Ok(report) => {
                log_report(report, started.elapsed());
                metrics::counter!("qms_syncs_total", "outcome" => "complete").increment(1);
                options.confirm_deletions = false;
                interval.saturating_sub(started.elapsed())
            }
            Err(SyncError::Cancelled) => return Ok(None),
            Err(e) => {
                metrics::counter!("qms_syncs_total", "outcome" => "failed").increment(1);
                tracing::error!(error = %e, "sync failed; nothing changed downstream");
                failed_delay
            }
        };
        if mode == Mode::Once {
            return match result {
                Ok(report) => Ok(Some(report)),
                Err(e) => Err(e.into()),
            };
        }
        tracing::info!(next_in = ?wait, "waiting for the next sync");
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {},
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Connects to the bus. A daemon never exits because NATS is down or slow
/// to answer: it retries with backoff until it is back. Settings that can
/// never work (bad source name, unknown encoding) stop it at once.
async fn connect(
    settings: Settings,
    mode: Mode,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Extractor>> {
    Extractor::check(&settings)?;
    let backoff = settings.qms.retry_backoff;
    let connected = retry(
        "connecting to the bus",
        &backoff,
        shutdown,
        |_| mode == Mode::Daemon,
        || Extractor::connect(settings.clone()),
    )
    .await;
    gave_up_when_stopped(connected)
}

/// `--reset-state`: a daemon retries while NATS is unreachable instead of
/// exiting; a one-shot run reports the failure.
async fn reset_state(
    extractor: &Extractor,
    backoff: &etl_runtime::backoff::Backoff,
    mode: Mode,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let reset = retry(
        "resetting the state",
        backoff,
        shutdown,
        |_| mode == Mode::Daemon,
        || extractor.reset_state(),
    )
    .await;
    gave_up_when_stopped(reset).map(|_| ())
}

/// The value, `None` if shutdown came first, or the permanent error.
fn gave_up_when_stopped<T>(result: Result<T, GaveUp<anyhow::Error>>) -> anyhow::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(GaveUp::Stopped) => Ok(None),
        Err(GaveUp::Permanent(e)) => Err(e),
    }
}

fn log_report(r: &SyncReport, took: Duration) {
    metrics::gauge!("qms_export_records").set(r.records as f64);
    tracing::info!(
        took = ?took,
        attempts = r.attempts,
        bytes = r.bytes,
        lines = r.lines,
        records = r.records,
        rejects = r.rejects,
        duplicates = r.duplicates,
        upserts = r.upserts,
        deletes = r.deletes,
        unchanged = r.unchanged,
        withheld_deletes = r.withheld_deletes,
        stored = r.stored,
        "sync complete"
    );
}
