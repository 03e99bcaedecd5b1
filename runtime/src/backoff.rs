//! Exponential backoff with jitter, for sources and sinks that are down.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Backoff {
    /// First delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before attempt `attempt` (1 = first retry): doubling from
    /// `initial`, capped at `max`, with ±25% jitter so that several instances
    /// do not retry in lock-step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        base.mul_f64(jitter).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert!(b.delay(1) <= Duration::from_millis(125));
        assert!(b.delay(3) >= Duration::from_millis(300));
        assert!(b.delay(30) <= Duration::from_secs(2));
    }
}
