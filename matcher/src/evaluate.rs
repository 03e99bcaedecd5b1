//! Scores the persons in PostgreSQL against a known truth (the truth
//! generator's `truth.csv`): pairwise precision, recall and F1, false merges
//! (overall; pairs of twins, of namesakes, of family members, of other
//! persons; persons holding conflicting identifiers) and the review queue.
//!
//! Pairwise: every unordered pair of live records is "same" or "different"
//! in the truth and in the matcher's persons. Precision = true same-pairs
//! found / same-pairs found; recall = true same-pairs found / true same-pairs.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgPool;

/// One record's truth.
#[derive(Debug, Clone)]
pub struct TruthRow {
    pub source: String,
    pub source_id: String,
    /// The real person.
    pub person: String,
    /// A hard-negative group the person belongs to (`twin:12`,
    /// `namesake:40`, `family:7`): other persons of the same group look
    /// alike but are different people.
    pub group: Option<String>,
}

/// Reads `source,source_id,person,group` lines (a header line is skipped).
pub fn parse_truth(text: &str) -> anyhow::Result<Vec<TruthRow>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || (n == 0 && line.starts_with("source,")) {
            continue;
        }
        let mut f = line.splitn(4, ',');
        let (Some(source), Some(source_id), Some(person)) = (f.next(), f.next(), f.next()) else {
            anyhow::bail!("truth line {} has fewer than 3 fields", n + 1);
        };
        rows.push(TruthRow {
            source: source.into(),
            source_id: source_id.into(),
            person: person.into(),
            group: f.next().filter(|g| !g.is_empty()).map(str::to_string),
        });
    }
    Ok(rows)
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub records: u64,
    pub true_persons: u64,
    pub found_persons: u64,
    pub true_pairs: u64,
    pub found_pairs: u64,
    pub correct_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Persons holding records of more than one real person.
    pub false_merges: u64,
    /// Wrongly joined record pairs whose real persons are twins / namesakes /
    /// family of each other (family: any other group, such as `family:` and
    /// `household:`).
    pub twin_pairs_merged: u64,
    pub namesake_pairs_merged: u64,
    pub family_pairs_merged: u64,
    /// Wrongly joined record pairs whose real persons share no group: look
    /// alike by chance (all of FEBRL's false merges are of this kind).
    pub other_pairs_merged: u64,
    /// Persons holding two different valid SNILS (must be zero).
    pub persons_with_conflicting_snils: u64,
    pub open_review_items: u64,
    /// Open review items per record, in percent.
    pub review_queue_percent: f64,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// A current membership of a live record.
#[derive(sqlx::FromRow)]
struct Member {
    source: String,
    source_id: String,
    person_id: i64,
}

pub async fn evaluate(pool: &PgPool, truth: &[TruthRow]) -> anyhow::Result<Report> {
    let members: Vec<Member> = sqlx::query_as(
        "SELECT m.source, m.source_id, m.person_id FROM person_memberships m
         JOIN source_records r USING (source, source_id)
         WHERE m.valid_to IS NULL AND r.deleted_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let found: HashMap<(&str, &str), i64> = members
        .iter()
        .map(|m| ((m.source.as_str(), m.source_id.as_str()), m.person_id))
        .collect();
    let mut r = score(truth, &found);
    r.persons_with_conflicting_snils = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM (SELECT m.person_id FROM person_memberships m
             JOIN source_records s USING (source, source_id)
             WHERE m.valid_to IS NULL AND s.deleted_at IS NULL AND s.snils_valid
             GROUP BY m.person_id HAVING count(DISTINCT s.snils) > 1) x",
    )
    .fetch_one(pool)
    .await? as u64;
    r.open_review_items =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM review_items WHERE status = 'open'")
            .fetch_one(pool)
            .await? as u64;
    r.review_queue_percent = if r.records == 0 {
        0.0
    } else {
        100.0 * r.open_review_items as f64 / r.records as f64
    };
    Ok(r)
}

/// The pairwise figures and the false merges of the persons `found` (by
/// record) against `truth`.
fn score(truth: &[TruthRow], found: &HashMap<(&str, &str), i64>) -> Report {
    let mut r = Report::default();
    let mut truth_sizes: HashMap<&str, u64> = HashMap::new();
    let mut found_sizes: HashMap<i64, u64> = HashMap::new();
    let mut cells: HashMap<(&str, i64), u64> = HashMap::new();
    let mut person_group: HashMap<&str, Option<&str>> = HashMap::new();
    let mut by_found: HashMap<i64, Vec<&TruthRow>> = HashMap::new();
    for t in truth {
        // A record the matcher has not placed counts as a person of its own.
        let p = match found.get(&(t.source.as_str(), t.source_id.as_str())) {
            Some(&p) => p,
            None => -(1 + r.records as i64),
        };
        r.records += 1;
        *truth_sizes.entry(&t.person).or_default() += 1;
        *found_sizes.entry(p).or_default() += 1;
        *cells.entry((&t.person, p)).or_default() += 1;
        person_group.insert(&t.person, t.group.as_deref());
        by_found.entry(p).or_default().push(t);
    }
    r.true_persons = truth_sizes.len() as u64;
    r.found_persons = found_sizes.len() as u64;
    r.true_pairs = truth_sizes.values().map(|&n| pairs(n)).sum();
    r.found_pairs = found_sizes.values().map(|&n| pairs(n)).sum();
    r.correct_pairs = cells.values().map(|&n| pairs(n)).sum();
    r.precision = if r.found_pairs == 0 {
        1.0
    } else {
        r.correct_pairs as f64 / r.found_pairs as f64
    };
    r.recall = if r.true_pairs == 0 {
        1.0
    } else {
        r.correct_pairs as f64 / r.true_pairs as f64
    };
    r.f1 = if r.precision + r.recall == 0.0 {
        0.0
    } else {
        2.0 * r.precision * r.recall / (r.precision + r.recall)
    };
    for rows in by_found.values() {
        count_false_merge(rows, &person_group, &mut r);
    }
    r
}

/// If the records of one found person belong to more than one real person:
/// a false merge, and each wrongly joined pair counted by the group the two
/// real persons share (none: `other`).
fn count_false_merge(
    rows: &[&TruthRow],
    person_group: &HashMap<&str, Option<&str>>,
    r: &mut Report,
) {
    let mut persons: Vec<&str> = rows.iter().map(|t| t.person.as_str()).collect();
    persons.sort();
    persons.dedup();
    if persons.len() < 2 {
        return;
    }
    r.false_merges += 1;
    for (i, x) in rows.iter().enumerate() {
        for y in &rows[i + 1..] {
            if x.person == y.person {
                continue;
            }
            let (gx, gy) = (
                person_group[x.person.as_str()],
                person_group[y.person.as_str()],
            );
            match gx.filter(|_| gx == gy) {
                Some(g) if g.starts_with("twin") => r.twin_pairs_merged += 1,
                Some(g) if g.starts_with("namesake") => r.namesake_pairs_merged += 1,
                Some(_) => r.family_pairs_merged += 1,
                None => r.other_pairs_merged += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{score, TruthRow};

    fn row(id: &str, person: &str, group: Option<&str>) -> TruthRow {
        TruthRow {
            source: "qms".into(),
            source_id: id.into(),
            person: person.into(),
            group: group.map(str::to_string),
        }
    }

    #[test]
    fn pairs_found_and_merges_by_kind() {
        // p1 has two records, found as one person with twin p2's record;
        // p3 (no group) is found alone; p4's record is not placed.
        let truth = [
            row("1", "p1", Some("twin:1")),
            row("2", "p1", Some("twin:1")),
            row("3", "p2", Some("twin:1")),
            row("4", "p3", None),
            row("5", "p4", None),
        ];
        let found = HashMap::from([
            (("qms", "1"), 10),
            (("qms", "2"), 10),
            (("qms", "3"), 10),
            (("qms", "4"), 11),
        ]);
        let r = score(&truth, &found);
        assert_eq!((r.records, r.true_persons, r.found_persons), (5, 4, 3));
        assert_eq!((r.true_pairs, r.found_pairs, r.correct_pairs), (1, 3, 1));
        assert!((r.precision - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.recall, 1.0);
        assert_eq!((r.false_merges, r.twin_pairs_merged), (1, 2));
        assert_eq!(
            (
                r.namesake_pairs_merged,
                r.family_pairs_merged,
                r.other_pairs_merged
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn nothing_found_is_full_precision_and_no_recall() {
        let truth = [row("1", "p1", None), row("2", "p1", None)];
        let r = score(&truth, &HashMap::new());
        assert_eq!((r.precision, r.recall, r.f1), (1.0, 0.0, 0.0));
        assert_eq!(r.false_merges, 0);
    }
}
