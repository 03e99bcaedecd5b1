//! The values every part of the engine passes around: a record's name, a
//! stored pairwise decision, what an application changed.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::rules::Decision;

/// A record: (source, source id).
pub type Rec = (String, String);

/// What an application changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changes: u64,
    pub records: u64,
    pub moved: u64,
    pub removed: u64,
    pub persons_created: u64,
    pub persons_retired: u64,
    pub reviews_opened: u64,
    pub reviews_closed: u64,
    /// The batch was full, or stopped at the last change its prepared half
    /// read ([`super::ahead::Prepared::last_change`]): more changes may be
    /// waiting. (Of a sum: the last batch's.)
    pub backlog: bool,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, o: Applied) {
        self.changes += o.changes;
        self.records += o.records;
        self.moved += o.moved;
        self.removed += o.removed;
        self.persons_created += o.persons_created;
        self.persons_retired += o.persons_retired;
        self.reviews_opened += o.reviews_opened;
        self.reviews_closed += o.reviews_closed;
        self.backlog = o.backlog;
    }
}

/// A stored pairwise decision.
#[derive(Debug, Clone)]
pub struct PairRow {
    pub a: Rec,
    pub b: Rec,
    pub decision: Decision,
    pub rule: String,
    pub score: f32,
    pub evidence: Evidence,
}

/// A pair's evidence (`match_pairs.evidence`, JSON). Shared: a batch's new
/// pairs are also cloned into their component.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// Read back from PostgreSQL, or built as a tree (the rules').
    Tree(Arc<Value>),
    /// Serialized where it was built (the model's): a JSON tree of a dozen
    /// maps per pair, built only to be written, cost as much as scoring it.
    Text(Arc<str>),
}

impl Evidence {
    /// As JSON text, to be written.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Evidence::Tree(v) => Cow::Owned(v.to_string()),
            Evidence::Text(t) => Cow::Borrowed(t),
        }
    }

    /// As a JSON tree, to be read.
    pub fn value(&self) -> Cow<'_, Value> {
        match self {
            Evidence::Tree(v) => Cow::Borrowed(v),
            Evidence::Text(t) => Cow::Owned(serde_json::from_str(t).expect("evidence is JSON")),
        }
    }
}

impl Default for Evidence {
    /// JSON `null`.
    fn default() -> Evidence {
        Evidence::Tree(Arc::new(Value::Null))
    }
}

/// The two records in stored order (the smaller first).
pub(super) fn ordered(x: &Rec, y: &Rec) -> (Rec, Rec) {
    if x <= y {
        (x.clone(), y.clone())
    } else {
        (y.clone(), x.clone())
    }
}

/// Sources and source ids as two arrays, for `UNNEST($1::text[], $2::text[])`.
pub(super) fn split(recs: &[Rec]) -> (Vec<&str>, Vec<&str>) {
    recs.iter().map(|(s, i)| (s.as_str(), i.as_str())).unzip()
}
