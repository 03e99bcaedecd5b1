//! The one retry loop: an operation is attempted again, with backoff, only
//! while its error is known to be transient, and never past shutdown.
//!
//! Every service retries through [`retry`], so that a source or sink that
//! is down is waited for in the same way everywhere (doubling delays with
//! jitter, a warning per attempt, an immediate stop on SIGTERM), and an
//! error that can never go away (bad credentials, a missing column) is
//! returned at once instead of being retried forever.

use std::fmt::Display;
use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// Why [`retry`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum GaveUp<E> {
    /// The operation failed with an error that is not transient.
    Permanent(E),
    /// Shutdown was signalled before the operation succeeded.
    Stopped,
}

impl<E: Display> Display for GaveUp<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaveUp::Permanent(error) => error.fmt(f),
            GaveUp::Stopped => f.write_str("stopped before it succeeded"),
        }
    }
}

impl<E: std::fmt::Debug + Display> std::error::Error for GaveUp<E> {}

/// Runs `operation` until it succeeds, waiting `backoff.delay(n)` after the
/// n-th transient failure (`is_transient`) and logging a warning that names
/// `what`, the attempt and the error. The error's `Display` goes into the
/// log, so it must carry no personal data (every error of this project is
/// built that way).
pub async fn retry<T, E, F, Fut>(
    what: &str,
    backoff: &Backoff,
    shutdown: &CancellationToken,
    is_transient: impl Fn(&E) -> bool,
    mut operation: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let mut attempt = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return Err(GaveUp::Stopped);
        }
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) => error,
            Err(error) => return Err(GaveUp::Permanent(error)),
        };
        attempt += 1;
        let delay = backoff.delay(attempt);
        tracing::warn!(
            %error,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "{what} failed; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Err(GaveUp::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = retry(
            "test",
            &quick(),
            &CancellationToken::new(),
            |_| true,
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err("down"),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(
            "test",
            &quick(),
            &CancellationToken::new(),
            |e: &&str| *e == "down",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("no such column")
            },
        )
        .await;
        assert_eq!(result, Err(GaveUp::Permanent("no such column")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let shutdown = CancellationToken::new();
        let slow = Backoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stop.cancel();
        });
        let result: Result<(), _> =
            retry("test", &slow, &shutdown, |_| true, || async { Err("down") }).await;
        assert_eq!(result, Err(GaveUp::Stopped));
    }
}
