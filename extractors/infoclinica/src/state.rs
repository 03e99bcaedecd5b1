//! What one database's sync remembers, kept in the NATS KV checkpoint
//! bucket under the database's name; the version clock; and the
//! reconciliation snapshot (kept in the snapshot store).
//!
//! One key per database holds the initial load's position and the version
//! watermark. Every write is compare-and-set on the key's revision, so a
//! second extractor started by mistake on the same database fails with a
//! conflict instead of interleaving its progress with the first one's.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use etl_runtime::checkpoint::{CheckpointError, Checkpoints};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The initial load in progress or last finished.
    pub initial: Option<InitialLoad>,
    /// The highest `Envelope::version` published so far (see [`VersionClock`]).
    pub last_version: i64,
    /// Delta (or reconciliation) passes completed.
    pub passes: u64,
    /// The highest change-log ID published and marked processed.
    pub last_change_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialLoad {
    /// Every row with PCODE ≤ this is published and acknowledged.
    pub after_pcode: i64,
    pub done: bool,
    /// Rows published by this load (across restarts).
    pub rows: u64,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A database's checkpoint, with the revision of its last write.
pub struct Checkpoint {
    store: Checkpoints,
    key: String,
    revision: Option<u64>,
    pub state: State,
}

impl Checkpoint {
    pub async fn load(store: Checkpoints, key: &str) -> anyhow::Result<Checkpoint> {
        let (state, revision) = match store.load(key).await? {
            Some(cp) => (
                serde_json::from_slice(&cp.value)
                    .map_err(|e| anyhow::anyhow!("checkpoint {key} does not decode: {e}"))?,
                Some(cp.revision),
            ),
            None => (State::default(), None),
        };
        Ok(Checkpoint {
            store,
            key: key.to_string(),
            revision,
            state,
        })
    }

    /// Writes the state (compare-and-set on the last revision).
    pub async fn save(&mut self) -> Result<(), CheckpointError> {
        let value = serde_json::to_vec(&self.state).map_err(anyhow::Error::from)?;
        self.revision = Some(self.store.save(&self.key, value, self.revision).await?);
        Ok(())
    }
}

/// Versions of published envelopes: the time the row was read, in µs since
/// the epoch, and strictly increasing per database (never below the stored
/// watermark, so a clock stepped back cannot reorder).
///
/// Why read time and not the change log's sequence: every message carries a
/// row's state as read *now*, not the state of one change, and with one
/// reader per database a later read never sees an older state (read
/// committed). A sequence value would break that between the initial load
/// and the delta: a change whose sequence number was drawn before the
/// initial load read its row, but which committed after, would come with a
/// lower version than the initial load's row and be ignored by the loader.
#[derive(Debug, Clone, Copy)]
pub struct VersionClock {
    last: i64,
}

impl VersionClock {
    pub fn new(last: i64) -> Self {
        VersionClock { last }
    }

    /// The version of rows read (their statement finished) at `read_at`.
    pub fn version(&mut self, read_at: DateTime<Utc>) -> i64 {
        self.last = read_at.timestamp_micros().max(self.last + 1);
        self.last
    }

    pub fn last(&self) -> i64 {
        self.last
    }
}

/// Keys and row versions seen by one reconciliation pass: kept in the
/// snapshot store between passes, so that the next pass can tell which keys
/// disappeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub versions: HashMap<i64, i64>,
}

impl Snapshot {
    pub(crate) fn max_version(&self) -> Option<i64> {
        self.versions.values().copied().max()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.versions.len() * 16);
        for (k, v) in &self.versions {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Snapshot {
        let versions = bytes
            .chunks_exact(16)
            .map(|c| {
                (
                    i64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                    i64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
                )
            })
            .collect();
        Snapshot { versions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_grow() {
        let mut clock = VersionClock::new(0);
        let t = Utc::now();
        let a = clock.version(t);
        let b = clock.version(t - chrono::Duration::seconds(10));
        assert!(b > a, "a clock stepped back does not reorder");
        let mut restarted = VersionClock::new(b);
        assert!(restarted.version(t - chrono::Duration::seconds(20)) > b);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut s = Snapshot::default();
        s.versions.insert(1, 10);
        s.versions.insert(i64::MAX, -5);
        assert_eq!(Snapshot::decode(&s.encode()), s);
    }
}
