//! What decides a pair and names the engine in the audit log: the pure part
//! of matching, shared by the incremental path and the full re-match.

use crate::features::Features;
use crate::rules::{self, Weights};

use super::types::PairRow;

/// How pairs are decided: the same for every path, so that they give the
/// same persons.
#[derive(Debug, Clone)]
pub struct Setup {
    pub weights: Weights,
    /// Blocking keys held by more records than this are not used.
    pub max_block_size: i64,
    /// Who the audit log names for automatic decisions.
    pub actor: String,
}

impl Setup {
    /// The stored decision for a pair, if any: a pure function of the two
    /// records.
    pub fn evaluate(&self, x: &Features, y: &Features) -> Option<PairRow> {
        let o = rules::evaluate(x, y, &self.weights)?;
        Some(PairRow {
            a: (x.source.clone(), x.source_id.clone()),
            b: (y.source.clone(), y.source_id.clone()),
            decision: o.decision,
            rule: o.rule.to_string(),
            score: o.score,
            evidence: serde_json::to_value(&o.evidence).expect("evidence serializes"),
        })
    }
}
