//! What the harness checks once the chaos is over: that the pipeline has
//! caught up with the sources, that PostgreSQL holds what an undisturbed
//! run of the same binaries over the same sources produces (record by
//! record: live records and their content, removed ones deleted), and that
//! a full re-match moves nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use sqlx::PgPool;

/// A stored record as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub deleted: bool,
    pub content_hash: Vec<u8>,
    /// md5 of every content column as PostgreSQL stores it.
    pub content: String,
}

/// `(source, source_id)` → record.
pub type Records = BTreeMap<(String, String), Stored>;

#[derive(sqlx::FromRow)]
struct Row {
    source: String,
    source_id: String,
    deleted: bool,
    content_hash: Vec<u8>,
    content: String,
}

/// Every record of `source_records`.
pub async fn records(pool: &PgPool) -> anyhow::Result<Records> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT source, source_id, deleted_at IS NOT NULL AS deleted, content_hash,
                md5(concat_ws('|', business_unit, last_name, first_name, middle_name,
                    birth_date::text, sex, documents::text, snils, oms_policy,
                    phones::text, emails::text, issues::text)) AS content
         FROM source_records",
    )
    .fetch_all(pool)
    .await
    .context("reading source_records")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.source, r.source_id),
                Stored {
                    deleted: r.deleted,
                    content_hash: r.content_hash,
                    content: r.content,
                },
            )
        })
        .collect())
}

/// The live source ids of `source`.
pub async fn live_keys(pool: &PgPool, source: &str) -> anyhow::Result<BTreeSet<String>> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT source_id FROM source_records WHERE source = $1 AND deleted_at IS NULL",
    )
    .bind(source)
    .fetch_all(pool)
    .await?;
    Ok(keys.into_iter().collect())
}

/// Change-feed rows the matcher has not consumed.
pub async fn pending_changes(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(pool)
        .await?)
}

/// Person events written but not yet acknowledged by the stream.
pub async fn unpublished_events(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT coalesce(max(event_id), 0) FROM person_events)
              - (SELECT published_up_to FROM person_event_relay)",
    )
    .fetch_one(pool)
    .await?)
}

/// The person events on the bus, and what they got wrong against the
/// outbox and the persons (`crate::person_events::problems`).
#[derive(Debug, Default)]
pub struct EventsSeen {
    pub bus: Vec<crate::person_events::BusEvent>,
    pub problems: Vec<String>,
}

/// The person events of stream `stream` (subjects under `subject_prefix`),
/// checked.
pub async fn events(
    pool: &PgPool,
    url: &str,
    stream: &str,
    subject_prefix: &str,
) -> anyhow::Result<EventsSeen> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let bus = crate::person_events::on_stream(&js, stream).await;
    let problems = crate::person_events::problems(pool, &bus, subject_prefix).await?;
    Ok(EventsSeen { bus, problems })
}

/// Messages of `stream` the consumer has not delivered or not had acked.
pub async fn consumer_lag(url: &str, stream: &str, consumer: &str) -> anyhow::Result<u64> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await?;
    let info = stream.consumer_info(consumer).await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Differences between a source's keys and what PostgreSQL holds live.
#[derive(Debug, Default, Clone)]
pub struct KeyDiff {
    /// In the source, not live in PostgreSQL.
    pub missing: usize,
    /// Live in PostgreSQL, gone from the source.
    pub extra: usize,
}

impl KeyDiff {
    pub fn of(source: &BTreeSet<String>, stored: &BTreeSet<String>) -> KeyDiff {
        KeyDiff {
            missing: source.difference(stored).count(),
            extra: stored.difference(source).count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }
}

/// Record-by-record comparison of the chaos run's PostgreSQL with the
/// reference run's (only live records: the reference saw no deletions).
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    pub records: usize,
    pub live: usize,
    pub deleted: usize,
    pub reference: usize,
    /// Live in the reference, absent from the chaos run.
    pub missing: Vec<String>,
    /// Live in the reference, deleted in the chaos run.
    pub wrongly_deleted: Vec<String>,
    /// Live in both with different content.
    pub content_differs: Vec<String>,
    /// Live in the chaos run, not in the sources any more.
    pub not_deleted: Vec<String>,
}

impl Comparison {
    pub fn of(chaos: &Records, reference: &Records) -> Comparison {
        let key = |(source, id): &(String, String)| format!("{source}:{id}");
        let mut c = Comparison {
            records: chaos.len(),
            live: chaos.values().filter(|r| !r.deleted).count(),
            deleted: chaos.values().filter(|r| r.deleted).count(),
            reference: reference.values().filter(|r| !r.deleted).count(),
            ..Default::default()
        };
        for (k, want) in reference.iter().filter(|(_, r)| !r.deleted) {
            match chaos.get(k) {
                None => c.missing.push(key(k)),
                Some(got) if got.deleted => c.wrongly_deleted.push(key(k)),
                Some(got)
                    if got.content_hash != want.content_hash || got.content != want.content =>
                {
                    c.content_differs.push(key(k))
                }
                Some(_) => {}
            }
        }
        for k in chaos.iter().filter(|(_, r)| !r.deleted).map(|(k, _)| k) {
            // Live in the chaos run, but deleted or absent in the reference.
            if reference.get(k).is_none_or(|r| r.deleted) {
                c.not_deleted.push(key(k));
            }
        }
        c
    }

    pub fn mismatches(&self) -> usize {
        self.missing.len()
            + self.wrongly_deleted.len()
            + self.content_differs.len()
            + self.not_deleted.len()
    }
}

/// What `etl rematch` reported.
#[derive(Debug, Clone)]
pub struct Rematch {
    pub line: String,
    /// moved, persons created, retired, review items opened, closed.
    pub counts: Vec<u64>,
}

impl Rematch {
    /// Reads `etl rematch`'s report line ("full re-match of N records in T
    /// s: M moved, P persons created, R retired, O review items opened, C
    /// closed").
    pub fn parse(line: &str) -> Rematch {
        let counts = line
            .split_once(": ")
            .map(|(_, tail)| {
                tail.split(", ")
                    .filter_map(|part| part.split_whitespace().next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Rematch {
            line: line.to_string(),
            counts,
        }
    }

    pub fn moves_nothing(&self) -> bool {
        self.counts.len() == 5 && self.counts.iter().all(|&n| n == 0)
    }
}

/// Runs `etl rematch` with `env` and reads its report line.
pub async fn rematch(etl: &Path, env: &[(String, String)]) -> anyhow::Result<Rematch> {
    let out = tokio::process::Command::new(etl)
        .arg("rematch")
        .envs(env.iter().cloned())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "etl rematch: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("")
    );
    Ok(Rematch::parse(String::from_utf8_lossy(&out.stdout).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(deleted: bool, content: &str) -> Stored {
        Stored {
            deleted,
            content_hash: content.as_bytes().to_vec(),
            content: content.into(),
        }
    }

    fn key(id: &str) -> (String, String) {
        ("qms".into(), id.into())
    }

    #[test]
    fn comparison_names_every_kind_of_difference() {
        let reference: Records = [
            (key("same"), stored(false, "a")),
            (key("missing"), stored(false, "b")),
            (key("deleted"), stored(false, "c")),
            (key("changed"), stored(false, "d")),
        ]
        .into();
        let chaos: Records = [
            (key("same"), stored(false, "a")),
            (key("deleted"), stored(true, "c")),
            (key("changed"), stored(false, "D")),
            (key("removed"), stored(true, "e")),
            (key("left"), stored(false, "f")),
        ]
        .into();
        let c = Comparison::of(&chaos, &reference);
        assert_eq!(c.missing, ["qms:missing"]);
        assert_eq!(c.wrongly_deleted, ["qms:deleted"]);
        assert_eq!(c.content_differs, ["qms:changed"]);
        assert_eq!(c.not_deleted, ["qms:left"]);
        assert_eq!((c.records, c.live, c.deleted, c.reference), (5, 3, 2, 4));
        assert_eq!(c.mismatches(), 4);
        assert_eq!(Comparison::of(&reference, &reference).mismatches(), 0);
    }

    #[test]
    fn key_diff_counts_both_sides() {
        let source: BTreeSet<String> = ["1", "2", "3"].map(String::from).into();
        let stored: BTreeSet<String> = ["2", "3", "4", "5"].map(String::from).into();
        let diff = KeyDiff::of(&source, &stored);
        assert_eq!((diff.missing, diff.extra), (1, 2));
        assert!(KeyDiff::of(&source, &source).is_empty());
    }

    #[test]
    fn a_rematch_that_moves_nothing_is_all_zeros() {
        let line = "full re-match of 2005 records in 0.2 s: 0 moved, 0 persons created, \
                    0 retired, 0 review items opened, 0 closed";
        let parse = Rematch::parse;
        assert!(parse(line).moves_nothing());
        assert!(!parse(&line.replace("0 moved", "3 moved")).moves_nothing());
        assert!(!parse("did not run: no database").moves_nothing());
    }
}
