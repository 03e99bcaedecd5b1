//! From pairs to persons, shared by the incremental path and the full
//! re-match: the state of a set of records (its component: [`load`]), the
//! clustering with the chaining guard, stable person ids, and the
//! difference written (memberships, persons, review items, audit:
//! [`apply`]).

mod apply;
mod load;

use std::collections::{HashMap, HashSet};

use super::types::{Evidence, PairRow, Rec};
use crate::features::Features;
use crate::rules::Decision;

/// Everything needed to recompute the persons of a set of records.
pub struct Component {
    /// Live records of the set, sorted by key.
    nodes: Vec<Features>,
    /// Records of the set that are deleted or gone.
    leaving: Vec<Rec>,
    links: Vec<PairRow>,
    /// Review and conflict pairs with at least one end in the set.
    reviews: Vec<PairRow>,
    /// Active operator decisions touching the set.
    decisions: Vec<OperatorDecision>,
    /// Current person of every record of the set and of review partners.
    person_of: HashMap<Rec, i64>,
    locked: HashSet<i64>,
    /// Open review items touching the set.
    open_items: Vec<OpenItem>,
}

impl Component {
    /// The live records of the component (each gets a person).
    pub(super) fn records(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .map(|f| (f.source.as_str(), f.source_id.as_str()))
    }
}

/// An active operator decision (`match_decisions`).
#[derive(Debug)]
struct OperatorDecision {
    id: i64,
    /// `link` or `keep_apart`.
    kind: String,
    a: Rec,
    b: Rec,
}

impl OperatorDecision {
    fn is_link(&self) -> bool {
        self.kind == "link"
    }
}

/// A row of `match_decisions`.
#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: i64,
    kind: String,
    #[sqlx(flatten)]
    ends: StoredEnds,
}

impl From<DecisionRow> for OperatorDecision {
    fn from(d: DecisionRow) -> OperatorDecision {
        let (a, b) = d.ends.into_recs();
        OperatorDecision {
            id: d.id,
            kind: d.kind,
            a,
            b,
        }
    }
}

/// An open review item (`review_items`).
#[derive(Debug)]
struct OpenItem {
    id: i64,
    a: Rec,
    b: Rec,
}

/// A row of `review_items`.
#[derive(sqlx::FromRow)]
struct ItemRow {
    id: i64,
    #[sqlx(flatten)]
    ends: StoredEnds,
}

impl From<ItemRow> for OpenItem {
    fn from(r: ItemRow) -> OpenItem {
        let (a, b) = r.ends.into_recs();
        OpenItem { id: r.id, a, b }
    }
}

/// The two records a stored pair, decision or review item names.
#[derive(sqlx::FromRow)]
struct StoredEnds {
    a_source: String,
    a_source_id: String,
    b_source: String,
    b_source_id: String,
}

impl StoredEnds {
    fn into_recs(self) -> (Rec, Rec) {
        (
            (self.a_source, self.a_source_id),
            (self.b_source, self.b_source_id),
        )
    }
}

/// A row of `match_pairs`.
#[derive(sqlx::FromRow)]
struct StoredPair {
    #[sqlx(flatten)]
    ends: StoredEnds,
    decision: String,
    rule: String,
    score: f32,
    evidence: serde_json::Value,
}

impl From<StoredPair> for PairRow {
    fn from(p: StoredPair) -> PairRow {
        let decision = match p.decision.as_str() {
            "link" => Decision::Link,
            "review" => Decision::Review,
            _ => Decision::Conflict,
        };
        let (a, b) = p.ends.into_recs();
        PairRow {
            a,
            b,
            decision,
            rule: p.rule,
            score: p.score,
            evidence: Evidence::Tree(std::sync::Arc::new(p.evidence)),
        }
    }
}

/// A current membership and its person's lock.
#[derive(sqlx::FromRow)]
struct Member {
    source: String,
    source_id: String,
    person_id: i64,
    locked: bool,
}

impl Member {
    fn rec(self) -> Rec {
        (self.source, self.source_id)
    }
}
