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
use std::time::Duration;

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

/// Shutdown was signalled while waiting for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// The state of one retry loop: the failures so far, the backoff between
/// attempts and the shutdown that ends the wait.
///
/// [`retry`] runs on it, and so does every loop whose step cannot be
/// passed as a closure (it borrows the caller's state mutably from one
/// attempt to the next, or a spawned task needs its future to be `Send`):
/// such a loop attempts the step itself and calls [`Attempts::wait`] after
/// a failure it retries, so the delay, the jitter, the warning and the
/// shutdown cut are the same everywhere. It owns what it needs (the
/// backoff is `Copy`, the token a clone), so it borrows nothing from the
/// caller.
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    shutdown: CancellationToken,
    failed: u32,
}

impl Attempts {
    pub fn new(backoff: Backoff, shutdown: CancellationToken) -> Attempts {
        Attempts {
            backoff,
            shutdown,
            failed: 0,
        }
    }

    /// Whether shutdown was signalled: no further attempt is made.
    pub fn stopped(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Failed attempts since the start or the last [`Attempts::succeeded`].
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// An attempt succeeded: the next failure waits the shortest delay
    /// again (a loop that runs for ever, one step after another).
    pub fn succeeded(&mut self) {
        self.failed = 0;
    }

    /// After a failed attempt that is retried: counts it, logs one warning
    /// naming `what`, the attempt, the delay and the error, and waits
    /// `backoff.delay(n)` for the n-th failure; `Err(Stopped)` once
    /// shutdown is signalled (before or during the wait). The error's
    /// `Display` goes into the log, so it must carry no personal data
    /// (every error of this project is built that way).
    pub fn wait(
        &mut self,
        what: &str,
        error: &dyn Display,
    ) -> impl Future<Output = Result<(), Stopped>> + Send + '_ {
        self.wait_at_least(what, error, Duration::ZERO)
    }

    /// [`Attempts::wait`], but at least `floor` (a server's `Retry-After`).
    ///
    /// The warning is logged before the future is returned, so the future
    /// holds neither `what` nor `error`: it stays `Send` whatever the
    /// error type, and a spawned task can await it.
    pub fn wait_at_least(
        &mut self,
        what: &str,
        error: &dyn Display,
        floor: Duration,
    ) -> impl Future<Output = Result<(), Stopped>> + Send + '_ {
        self.failed = self.failed.saturating_add(1);
        let delay = self.backoff.delay(self.failed).max(floor);
        let attempt = self.failed;
        tracing::warn!(
            %error,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "{what} failed; retrying"
        );
        let shutdown = &self.shutdown;
        async move {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(Stopped),
                _ = tokio::time::sleep(delay) => Ok(()),
            }
        }
    }
}

/// Runs `operation` until it succeeds, waiting with [`Attempts::wait`]
/// after each transient failure (`is_transient`); any other error is
/// returned at once.
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
    let mut attempts = Attempts::new(*backoff, shutdown.clone());
    loop {
        if attempts.stopped() {
            return Err(GaveUp::Stopped);
        }
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) => error,
            Err(error) => return Err(GaveUp::Permanent(error)),
        };
        if attempts.wait(what, &error).await.is_err() {
            return Err(GaveUp::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

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

    #[tokio::test]
    async fn attempts_are_counted_and_reset() {
        let mut attempts = Attempts::new(quick(), CancellationToken::new());
        assert_eq!(attempts.failed(), 0);
        for n in 1..=3 {
            assert_eq!(attempts.wait("test", &"down").await, Ok(()));
            assert_eq!(attempts.failed(), n);
        }
        attempts.succeeded();
        assert_eq!(attempts.failed(), 0);
    }

    #[tokio::test]
    async fn attempts_stop_on_shutdown() {
        let shutdown = CancellationToken::new();
        let slow = Backoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        };
        let mut attempts = Attempts::new(slow, shutdown.clone());
        assert!(!attempts.stopped());
        let stop = shutdown.clone();
        // Spawned: the wait is `Send`, and holds no borrow of the error.
        let waited = tokio::spawn(async move {
            let error = String::from("down");
            let wait = attempts.wait("test", &error);
            drop(error);
            (wait.await, attempts.failed())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        assert_eq!(waited.await.unwrap(), (Err(Stopped), 1));
        // Already stopped: no wait at all, whatever the backoff.
        let mut attempts = Attempts::new(slow, shutdown);
        assert!(attempts.stopped());
        assert_eq!(attempts.wait("test", &"down").await, Err(Stopped));
    }

    #[tokio::test]
    async fn a_floor_lengthens_the_wait() {
        let mut attempts = Attempts::new(quick(), CancellationToken::new());
        let started = std::time::Instant::now();
        let floor = Duration::from_millis(30);
        assert_eq!(attempts.wait_at_least("test", &"busy", floor).await, Ok(()));
        assert!(started.elapsed() >= floor);
    }
}
