//! The deletion brake every extractor shares.
//!
//! A pass (a qMS sync, an Infoclinica reconciliation or change-log pass)
//! that would delete more than `max_share` of the records its source had,
//! or more than `max_count` records, sends none of its deletions: it is
//! *held*. Its other changes still go out. The hold is an entry in the NATS
//! KV bucket [`BUCKET`], one key per stream, source and database, which
//! `etl status` and `etl brake list` show; the gauge
//! `etl_deletion_brake_held{source, database}` is 1 while it holds. Every
//! following pass finds the same deletions and holds them again, until an
//! operator runs `etl brake release <source> [<database>]`: the next pass
//! then sends its deletions (if they are not more than the released number
//! plus what the brake lets through anyway) and removes the entry once the
//! stream has acknowledged them. A pass whose deletions are back under the
//! limits (the source was repaired) removes the entry too.
//!
//! Entries hold counts, names and times only (no personal data).

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The KV bucket of held passes.
pub const BUCKET: &str = "etl_brakes";

/// The limits of one source's deletion brake.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct BrakeSettings {
    /// Largest share of the records the source had (before the pass) that
    /// one pass may delete without an operator (0.05 = 5 %). 1 turns the
    /// share limit off.
    pub max_share: f64,
    /// Most deletions one pass may send without an operator, whatever the
    /// share. 0 turns the count limit off.
    pub max_count: u64,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        BrakeSettings {
            max_share: 0.05,
            max_count: 10_000,
        }
    }
}

impl BrakeSettings {
    /// Whether a pass deleting `deletions` of `known` records goes through
    /// without an operator.
    pub fn allows(&self, deletions: u64, known: u64) -> bool {
        if deletions == 0 {
            return true;
        }
        if self.max_count > 0 && deletions > self.max_count {
            return false;
        }
        let share = if known == 0 {
            1.0
        } else {
            deletions as f64 / known as f64
        };
        share <= self.max_share
    }
}

/// A held pass, as stored in [`BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub stream: String,
    pub source: String,
    /// The source's database (Infoclinica), `None` for a source of one.
    pub database: Option<String>,
    /// What kind of pass: `sync`, `reconcile`, `changelog`.
    pub pass: String,
    /// Deletions the latest held pass would have sent.
    pub deletions: u64,
    /// Records the source had before that pass.
    pub known: u64,
    /// The limits in force.
    pub max_share: f64,
    pub max_count: u64,
    /// When the brake first held.
    pub held_at: DateTime<Utc>,
    /// The latest pass that held.
    pub checked_at: DateTime<Utc>,
    /// Set by an operator's release; the next pass sends the deletions.
    pub released: Option<Release>,
}

/// An operator's release of a held pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub at: DateTime<Utc>,
    /// Who released it (`ETL_OPERATOR`, else the login name).
    pub by: String,
    /// The deletions the operator saw and released.
    pub deletions: u64,
}

/// What a pass does with its deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Under the limits: send them.
    Send,
    /// Beyond the limits but released by an operator: send them, then call
    /// [`Brake::released_sent`].
    SendReleased,
    /// Beyond the limits: send none.
    Hold,
}

impl Decision {
    pub fn sends(self) -> bool {
        self != Decision::Hold
    }
}

/// The KV key of a brake or a sync status: `<source>[.<database>].<stream>`
/// (stream names and database names hold no dot).
pub fn key(stream: &str, source: &str, database: Option<&str>) -> String {
    match database {
        Some(db) => format!("{source}.{db}.{stream}"),
        None => format!("{source}.{stream}"),
    }
}

async fn open_store(js: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    crate::checkpoint::open_bucket(js, BUCKET, 1, replicas).await
}

/// Keys this process found without a hold: a pass with no deletion then
/// needs no request to the bucket (the extractor is the only writer of a
/// new hold; an operator can only release an existing one).
fn clear_keys() -> &'static std::sync::Mutex<std::collections::HashSet<String>> {
    static CLEAR: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    CLEAR.get_or_init(Default::default)
}

fn set_clear(key: &str, clear: bool) {
    let mut keys = clear_keys().lock().unwrap();
    if clear {
        keys.insert(key.to_string());
    } else {
        keys.remove(key);
    }
}

/// One source's (or one database's) brake.
#[derive(Clone)]
pub struct Brake {
    js: jetstream::Context,
    replicas: usize,
    stream: String,
    source: String,
    database: Option<String>,
    pub settings: BrakeSettings,
}

impl Brake {
    /// The brake; its bucket is opened (created on first use, with
    /// `replicas` copies: the service's `stream.replicas`) when a pass needs
    /// it.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        stream: &str,
        source: &str,
        database: Option<&str>,
        settings: BrakeSettings,
    ) -> anyhow::Result<Brake> {
        Ok(Brake {
            js: js.clone(),
            replicas,
            stream: stream.into(),
            source: source.into(),
            database: database.map(Into::into),
            settings,
        })
    }

    fn key(&self) -> String {
        key(&self.stream, &self.source, self.database.as_deref())
    }

    fn gauge(&self, held: bool) {
        metrics::gauge!("etl_deletion_brake_held",
            "source" => self.source.clone(),
            "database" => self.database.clone().unwrap_or_default())
        .set(if held { 1.0 } else { 0.0 });
    }

    /// Decides whether a pass of kind `pass` that would delete `deletions`
    /// of `known` records sends them, recording a hold (or clearing one that
    /// no longer applies). An error (NATS unreachable) is for the caller to
    /// retry: the brake never lets deletions through unchecked.
    pub async fn check(&self, pass: &str, deletions: u64, known: u64) -> anyhow::Result<Decision> {
        let key = self.key();
        if deletions == 0 && clear_keys().lock().unwrap().contains(&key) {
            self.gauge(false);
            return Ok(Decision::Send);
        }
        let store = open_store(&self.js, self.replicas).await?;
        let entry = store
            .entry(key.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("reading deletion brake {key}: {e}"))?
            .filter(|e| e.operation == kv::Operation::Put);
        let current: Option<(Hold, u64)> = entry
            .as_ref()
            .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision)));
        if self.settings.allows(deletions, known) {
            if entry.is_some() {
                self.clear(&key).await?;
            }
            set_clear(&key, true);
            self.gauge(false);
            return Ok(Decision::Send);
        }
        set_clear(&key, false);
        if let Some((hold, _)) = &current {
            if let Some(release) = &hold.released {
                let beyond = deletions.saturating_sub(release.deletions);
                if self.settings.allows(beyond, known) {
                    tracing::warn!(
                        source = %self.source,
                        database = self.database.as_deref().unwrap_or(""),
                        deletions,
                        released_by = %release.by,
                        "deletions beyond the brake released by an operator: sending them"
                    );
                    return Ok(Decision::SendReleased);
                }
            }
        }
        if let Some((hold, _)) = &current {
            let unchanged = hold.released.is_none()
                && (hold.pass.as_str(), hold.deletions, hold.known) == (pass, deletions, known);
            if unchanged {
                // Already shown as held: no write every pass (and none to
                // race with an operator's release).
                self.gauge(true);
                return Ok(Decision::Hold);
            }
        }
        let now = Utc::now();
        let hold = Hold {
            stream: self.stream.clone(),
            source: self.source.clone(),
            database: self.database.clone(),
            pass: pass.into(),
            deletions,
            known,
            max_share: self.settings.max_share,
            max_count: self.settings.max_count,
            held_at: current.as_ref().map_or(now, |(h, _)| h.held_at),
            checked_at: now,
            released: None,
        };
        let value = serde_json::to_vec(&hold)?.into();
        let written = match &current {
            Some((_, revision)) => store
                .update(key.as_str(), value, *revision)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => store
                .put(key.as_str(), value)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = written {
            anyhow::bail!("writing deletion brake {key}: {e}");
        }
        self.gauge(true);
        tracing::error!(
            source = %self.source,
            database = self.database.as_deref().unwrap_or(""),
            pass,
            deletions,
            known,
            share = format!("{:.1}%", share(deletions, known) * 100.0),
            max_share = format!("{:.1}%", self.settings.max_share * 100.0),
            max_count = self.settings.max_count,
            "deletion brake: this pass would delete too many records; no deletion sent. \
             If the deletions are real: etl brake release {} {}",
            self.source,
            self.database.as_deref().unwrap_or("")
        );
        Ok(Decision::Hold)
    }

    /// After the deletions of a [`Decision::SendReleased`] pass were
    /// acknowledged by the stream: the hold is over.
    pub async fn released_sent(&self) -> anyhow::Result<()> {
        let key = self.key();
        self.clear(&key).await?;
        set_clear(&key, true);
        self.gauge(false);
        Ok(())
    }

    async fn clear(&self, key: &str) -> anyhow::Result<()> {
        open_store(&self.js, self.replicas)
            .await?
            .delete(key)
            .await
            .map_err(|e| anyhow::anyhow!("clearing deletion brake {key}: {e}"))
    }
}

fn share(deletions: u64, known: u64) -> f64 {
    if known == 0 {
        1.0
    } else {
        deletions as f64 / known as f64
    }
}

/// The holds of `stream`'s pipeline, by key. Empty when nothing is held (or
/// the bucket does not exist yet).
pub async fn list(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<(Hold, u64)>> {
    use futures::StreamExt;
    let Ok(store) = js.get_key_value(BUCKET).await else {
        return Ok(Vec::new());
    };
    let suffix = format!(".{stream}");
    let mut keys = match store.keys().await {
        Ok(keys) => keys.boxed(),
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| anyhow::anyhow!("listing deletion brakes: {e}"))?;
        if !key.ends_with(&suffix) {
            continue;
        }
        let entry = store
            .entry(key.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("reading deletion brake {key}: {e}"))?;
        if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
            if let Ok(hold) = serde_json::from_slice::<Hold>(&entry.value) {
                if hold.stream == stream {
                    out.push((hold, entry.revision));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.0.source, &a.0.database).cmp(&(&b.0.source, &b.0.database)));
    Ok(out)
}

/// An operator's release of the hold of `source` (and `database`) on
/// `stream`: the extractor's next pass sends the deletions. Returns the
/// released hold; an error when nothing is held there.
pub async fn release(
    js: &jetstream::Context,
    stream: &str,
    source: &str,
    database: Option<&str>,
    by: &str,
) -> anyhow::Result<Hold> {
    let store = js
        .get_key_value(BUCKET)
        .await
        .map_err(|e| anyhow::anyhow!("no deletion brake is held (bucket {BUCKET}: {e})"))?;
    let key = key(stream, source, database);
    let entry = store
        .entry(key.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("reading deletion brake {key}: {e}"))?
        .filter(|e| e.operation == kv::Operation::Put)
        .ok_or_else(|| anyhow::anyhow!("no deletion brake is held for {key}"))?;
    let mut hold: Hold = serde_json::from_slice(&entry.value)
        .map_err(|e| anyhow::anyhow!("deletion brake {key} unreadable: {e}"))?;
    hold.released = Some(Release {
        at: Utc::now(),
        by: by.into(),
        deletions: hold.deletions,
    });
    store
        .update(
            key.as_str(),
            serde_json::to_vec(&hold)?.into(),
            entry.revision,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("releasing deletion brake {key} (changed meanwhile? try again): {e}")
        })?;
    Ok(hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let b = BrakeSettings {
            max_share: 0.05,
            max_count: 100,
        };
        assert!(b.allows(0, 0));
        assert!(b.allows(5, 100));
        assert!(!b.allows(6, 100), "share");
        assert!(!b.allows(101, 1_000_000), "count");
        let no_count = BrakeSettings { max_count: 0, ..b };
        assert!(no_count.allows(40_000, 1_000_000));
        assert_eq!(
            key("S", "infoclinica", Some("north")),
            "infoclinica.north.S"
        );
        assert_eq!(key("S", "qms", None), "qms.S");
    }
}
