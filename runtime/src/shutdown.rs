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
