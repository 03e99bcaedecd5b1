//! What was last published, per his number: the state a full export is
//! compared with to find changes and deletions.
//!
//! Kept outside the process so the extractor can run in a container: one
//! snapshot object in a NATS object store (his number → the first 16 bytes
//! of the content hash last published).
//!
//! The state must never be behind what the stream holds. A sync therefore
//! writes the snapshot twice when it has anything to publish:
//!
//! 1. before its first publish, a *marked* snapshot: every key the sync is
//!    about to upsert or delete, plus every key of the previous state, with
//!    the hash of each touched key replaced by [`UNKNOWN`] and
//!    [`StateInfo::interrupted`] set;
//! 2. after every publish was acknowledged, the new state.
//!
//! A sync that ends between the two (kill -9, crash, NATS outage, shutdown)
//! leaves the marked snapshot in force. Its keys are a superset of
//! everything ever published and not deleted since, so the next sync sends a
//! delete for each one the export no longer has; and no export hash equals
//! [`UNKNOWN`], so it republishes every record the interrupted sync may have
//! changed, whatever the export holds now (a reverted edit included). Keys
//! the interrupted sync did not touch keep their hash: nothing was
//! published for them. The stream and the loader make the repetition
//! harmless.
//!
//! Why not a KV entry per record: a million KV writes per first sync (and a
//! million reads per start) would take minutes; one snapshot of ~27 MB is
//! written in about a second. (A KV checkpoint naming the snapshot was
//! planned; async-nats 0.51 cannot create KV buckets on nats-server 2.9.)
//!
//! Held compactly in memory (one text arena, 32 bytes per entry), so a
//! million records take about 40 MB.

use std::cmp::Ordering;

use anyhow::Context;
use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt;

use crate::settings::StateSettings;

/// Prefix of the content hash kept per record: 128 bits make a missed change
/// by collision impossible in practice.
pub type ShortHash = [u8; 16];

pub fn short(hash: &[u8; 32]) -> ShortHash {
    hash[..16].try_into().expect("16 of 32 bytes")
}

/// The hash of a key whose published content is not known (an interrupted
/// sync may or may not have published it). No record's hash prefix is all
/// zeros in practice (2^-128), so the next sync always finds it changed.
pub const UNKNOWN: ShortHash = [0; 16];

/// One entry: a his number (in the arena), its hash and, for a fresh
/// export, where its record lies in the spill file.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    start: u32,
    len: u32,
    pub hash: ShortHash,
    /// Offset of the record in the spill file; `u64::MAX` when not spilled.
    pub spill_at: u64,
}

/// His numbers with hashes: the last published state, or what one export
/// holds.
#[derive(Debug, Default)]
pub struct Entries {
    arena: String,
    items: Vec<Entry>,
}

impl Entries {
    pub fn with_capacity(records: usize) -> Entries {
        Entries {
            arena: String::with_capacity(records * 12),
            items: Vec::with_capacity(records),
        }
    }

    pub fn push(&mut self, his: &str, hash: ShortHash, spill_at: u64) {
        let start = self.arena.len() as u32;
        self.arena.push_str(his);
        self.items.push(Entry {
            start,
            len: his.len() as u32,
            hash,
            spill_at,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn key(&self, e: &Entry) -> &str {
        &self.arena[e.start as usize..(e.start + e.len) as usize]
    }

    pub fn items(&self) -> &[Entry] {
        &self.items
    }

    /// Sorts by his number and keeps, of records listed twice, the one that
    /// came last in the export; returns how many were dropped so. In place:
    /// no second copy of the entries (peak memory).
    pub fn sort_dedup(&mut self) -> u64 {
        let arena = &self.arena;
        let key = |e: &Entry| &arena[e.start as usize..(e.start + e.len) as usize];
        self.items
            .sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.spill_at.cmp(&b.spill_at)));
        let before = self.items.len();
        // Keep the last of each run of equal keys: `dedup_by` keeps the
        // first, so the later entry is copied over it first.
        self.items.dedup_by(|later, kept| {
            let same = key(later) == key(kept);
            if same {
                *kept = *later;
            }
            same
        });
        (before - self.items.len()) as u64
    }

    /// Compares his numbers of two sorted entry sets.
    pub fn cmp_keys(&self, a: &Entry, other: &Entries, b: &Entry) -> Ordering {
        self.key(a).cmp(other.key(b))
    }

    /// Appends the entry count (u64 LE), then per entry the his-number
    /// length (u16 LE), its UTF-8 bytes and the 16-byte hash.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(8 + self.items.len() * 2 + self.arena.len() + self.items.len() * 16);
        out.extend_from_slice(&(self.items.len() as u64).to_le_bytes());
        for e in &self.items {
            let key = self.key(e).as_bytes();
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&e.hash);
        }
    }

    pub fn decode(bytes: &[u8]) -> anyhow::Result<Entries> {
        let mut r = bytes;
        let mut take = |n: usize| -> anyhow::Result<&[u8]> {
            anyhow::ensure!(r.len() >= n, "state snapshot is truncated");
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let n = u64::from_le_bytes(take(8)?.try_into()?) as usize;
        let fixed = n.saturating_mul(18);
        anyhow::ensure!(fixed <= bytes.len() - 8, "state snapshot is truncated");
        // Exact sizes: the arena is what remains after the fixed part.
        let mut entries = Entries {
            arena: String::with_capacity(bytes.len() - 8 - fixed),
            items: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let len = u16::from_le_bytes(take(2)?.try_into()?) as usize;
            let key = std::str::from_utf8(take(len)?).context("his number in state")?;
            let hash: ShortHash = take(16)?.try_into()?;
            entries.push(key, hash, u64::MAX);
        }
        Ok(entries)
    }
}

const MAGIC: &[u8; 8] = b"QMSSTATE";
/// Format 3 adds the flags word; format 2 snapshots (no flags, never
/// interrupted) are still read.
const FORMAT: u32 = 3;
const FLAG_INTERRUPTED: u32 = 1;

/// What the snapshot says about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateInfo {
    /// Increases with every saved sync.
    pub generation: u64,
    /// Records in the last complete export (the baseline of the row-count
    /// plausibility rule).
    pub export_records: u64,
    /// Version (µs) of the last sync's messages; the next sync uses a
    /// higher one even if the clock went back.
    pub version: i64,
    /// Written before a sync's first publish: that sync may have ended
    /// early, and the hashes of the keys it touched are [`UNKNOWN`].
    pub interrupted: bool,
}

/// The stored state and where to save the next.
pub struct StateStore {
    objects: object_store::ObjectStore,
    key: String,
}

/// The state in force when a sync starts.
pub struct Loaded {
    pub info: StateInfo,
    pub entries: Entries,
    /// Id of the snapshot's chunks as read (changes with every write).
    pub nuid: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the state was changed by another extractor instance (same state.key)")]
    Conflict,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Snapshot layout: `QMSSTATE`, format (u32 LE), generation (u64 LE),
/// export records (u64 LE), version (i64 LE), flags (u32 LE), then the
/// entries ([`Entries::encode_into`]).
fn encode(info: &StateInfo, entries: &Entries) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&info.generation.to_le_bytes());
    out.extend_from_slice(&info.export_records.to_le_bytes());
    out.extend_from_slice(&info.version.to_le_bytes());
    let flags = if info.interrupted {
        FLAG_INTERRUPTED
    } else {
        0
    };
    out.extend_from_slice(&flags.to_le_bytes());
    entries.encode_into(&mut out);
    out
}

fn decode(bytes: &[u8]) -> anyhow::Result<(StateInfo, Entries)> {
    anyhow::ensure!(bytes.len() >= 36, "state snapshot is truncated");
    anyhow::ensure!(&bytes[..8] == MAGIC, "not a state snapshot");
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let format = u32::from_le_bytes(bytes[8..12].try_into()?);
    let (flags, entries_at) = match format {
        2 => (0, 36),
        3 => {
            anyhow::ensure!(bytes.len() >= 40, "state snapshot is truncated");
            (u32::from_le_bytes(bytes[36..40].try_into()?), 40)
        }
        _ => anyhow::bail!("unknown state snapshot format {format}"),
    };
    let info = StateInfo {
        generation: u64_at(12),
        export_records: u64_at(20),
        version: u64_at(28) as i64,
        interrupted: flags & FLAG_INTERRUPTED != 0,
    };
    Ok((info, Entries::decode(&bytes[entries_at..])?))
}

impl StateStore {
    /// Opens (creating if missing) the object-store bucket.
    pub async fn open(js: &jetstream::Context, s: &StateSettings) -> anyhow::Result<StateStore> {
        let objects = match js.get_object_store(&s.object_bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: s.object_bucket.clone(),
                    description: Some("qms-extractor state snapshots".into()),
                    num_replicas: s.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating object store {}: {e}", s.object_bucket))?,
        };
        Ok(StateStore {
            objects,
            key: s.key.clone(),
        })
    }

    /// The state in force (empty before the first complete sync).
    pub async fn load(&self) -> anyhow::Result<Loaded> {
        let mut object = match self.objects.get(&self.key).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Ok(Loaded {
                    info: StateInfo::default(),
                    entries: Entries::default(),
                    nuid: None,
                })
            }
            Err(e) => anyhow::bail!("reading state snapshot {}: {e}", self.key),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading state snapshot {}", self.key))?;
        let nuid = Some(object.info().nuid.clone());
        let (info, entries) = decode(&bytes)?;
        Ok(Loaded {
            info,
            entries,
            nuid,
        })
    }

    /// Removes the snapshot: the next sync publishes every record again (an
    /// operator's "start over", e.g. after the stream was recreated).
    pub async fn reset(&self) -> anyhow::Result<()> {
        match self.objects.delete(&self.key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => anyhow::bail!("removing state snapshot {}: {e}", self.key),
        }
    }

    /// Replaces the snapshot with `entries` and `info`, if the snapshot is
    /// still the one named `expected` (the nuid [`load`](Self::load) or the
    /// previous save returned; `None` when there was none). Returns the new
    /// snapshot's nuid. The object store writes the chunks first and the
    /// object's metadata (which names them) last, so a reader, or a crash,
    /// sees either the old snapshot or the new one. The check just before
    /// the write detects a second instance that saved in the meantime (not a
    /// true compare-and-set: run one instance per `state.key`).
    pub async fn save(
        &self,
        expected: Option<&str>,
        info: &StateInfo,
        entries: &Entries,
    ) -> Result<String, SaveError> {
        let current = match self.objects.info(&self.key).await {
            Ok(info) if info.deleted => None,
            Ok(info) => Some(info.nuid),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => None,
            Err(e) => {
                return Err(anyhow::anyhow!("reading state snapshot {}: {e}", self.key).into())
            }
        };
        if current.as_deref() != expected {
            return Err(SaveError::Conflict);
        }
        let bytes = encode(info, entries);
        let written = self
            .objects
            .put(self.key.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| anyhow::anyhow!("writing state snapshot {}: {e}", self.key))?;
        Ok(written.nuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_dedup() {
        let mut e = Entries::default();
        e.push("2/B", [2; 16], 10);
        e.push("1/A", [1; 16], 5);
        e.push("2/B", [3; 16], 20);
        assert_eq!(e.sort_dedup(), 1);
        assert_eq!(e.len(), 2);
        assert_eq!(e.key(&e.items()[0]), "1/A");
        assert_eq!(e.items()[1].hash, [3; 16], "the later one wins");
        let info = StateInfo {
            generation: 3,
            export_records: 2,
            version: 99,
            interrupted: true,
        };
        let (i, back) = decode(&encode(&info, &e)).unwrap();
        assert_eq!(i, info);
        assert_eq!(back.len(), 2);
        assert_eq!(back.key(&back.items()[1]), "2/B");
        assert_eq!(back.items()[1].hash, [3; 16]);
        assert!(decode(&encode(&info, &e)[..50]).is_err());
    }

    #[test]
    fn format_2_snapshots_are_read_as_complete() {
        let mut e = Entries::default();
        e.push("1/A", [1; 16], u64::MAX);
        let mut old = Vec::new();
        old.extend_from_slice(MAGIC);
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        old.extend_from_slice(&42i64.to_le_bytes());
        e.encode_into(&mut old);
        let (info, back) = decode(&old).unwrap();
        assert_eq!(info.generation, 7);
        assert_eq!(info.version, 42);
        assert!(!info.interrupted);
        assert_eq!(back.key(&back.items()[0]), "1/A");
    }
}
