//! Graceful shutdown: one cancellation token, cancelled on SIGTERM or SIGINT,
//! that every task watches (as in mini-redis). A second signal exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

/// `[shutdown]`: how long a service may take to stop.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// After SIGTERM, the service finishes the work in hand; past this
    /// deadline it exits anyway (status 1): what was not acknowledged is
    /// redelivered. Keep it under systemd's `TimeoutStopSec` and compose's
    /// `stop_grace_period`.
    #[serde(with = "humantime_serde")]
    pub deadline: std::time::Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            deadline: std::time::Duration::from_secs(45),
        }
    }
}

/// [`on_signals`], and once cancelled: `STOPPING=1` to systemd, and exit
/// after `settings.deadline` if the service has not stopped by then.
///
/// The deadline is kept by a thread of its own, not a task: once `main`
/// returns, the runtime stops its tasks and then waits, without a limit,
/// for its blocking calls to end — and a blocking client library call
/// (rsfbclient has no timeouts) may never end against a server that went
/// silent. The thread still ends the process at the deadline.
pub fn on_signals_with_deadline(settings: &ShutdownSettings) -> CancellationToken {
    let token = on_signals();
    let cancelled = token.clone();
    let deadline = settings.deadline;
    tokio::spawn(async move {
        cancelled.cancelled().await;
        let _ = STOPPING_SINCE.set(std::time::Instant::now());
        crate::observe::stopping();
        std::thread::Builder::new()
            .name("shutdown-deadline".into())
            .spawn(move || {
                std::thread::sleep(deadline);
                tracing::error!(?deadline, "shutdown deadline passed: exiting now");
                std::process::exit(1);
            })
            .expect("a thread for the shutdown deadline");
    });
    token
}

/// When the shutdown began (the token of [`on_signals_with_deadline`] was
/// cancelled).
static STOPPING_SINCE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// What is left of the shutdown deadline: the whole deadline if no shutdown
/// has begun (a one-shot run ending by itself). For the last steps before
/// exit, e.g. flushing the trace exporter.
pub fn time_left(settings: &ShutdownSettings) -> std::time::Duration {
    match STOPPING_SINCE.get() {
        Some(since) => settings.deadline.saturating_sub(since.elapsed()),
        None => settings.deadline,
    }
}
