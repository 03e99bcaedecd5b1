//! How long each phase of a batch or re-match took.

/// Logs how long each phase of a batch or re-match took: `info` for the
/// re-match and large batches (an operator reads them), `debug` otherwise.
pub(super) struct Phases {
    what: &'static str,
    pub records: usize,
    loud: bool,
    started: std::time::Instant,
    last: std::time::Instant,
}

impl Phases {
    pub fn new(what: &'static str, records: usize, loud: bool) -> Phases {
        Self::since(what, records, loud, std::time::Instant::now())
    }

    /// Phases whose first one began at `now`.
    pub fn since(
        what: &'static str,
        records: usize,
        loud: bool,
        now: std::time::Instant,
    ) -> Phases {
        Phases {
            what,
            records,
            loud,
            started: now,
            last: now,
        }
    }

    pub fn mark(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        let (ms, total_ms) = (
            (now - self.last).as_millis() as u64,
            (now - self.started).as_millis() as u64,
        );
        self.last = now;
        if self.loud {
            tracing::info!(
                what = self.what,
                records = self.records,
                phase,
                ms,
                total_ms,
                "phase"
            );
        } else {
            tracing::debug!(
                what = self.what,
                records = self.records,
                phase,
                ms,
                total_ms,
                "phase"
            );
        }
    }
}
