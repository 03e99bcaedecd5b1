//! What decides a pair and names the engine in the audit log: the pure part
//! of matching, shared by the incremental path and the full re-match.

use std::sync::Arc;

use sqlx::PgConnection;

use crate::cluster::Guards;
use crate::features::Features;
use crate::model::{self, Model, Thresholds};
use crate::rules::{self, Weights};

use super::types::PairRow;

/// How pairs are scored.
#[derive(Debug, Clone)]
pub enum Scoring {
    /// The fixed rules and weights of [`crate::rules`].
    Rules(Weights),
    /// The Fellegi–Sunter model in use ([`crate::model`]).
    Model {
        model: Arc<Model>,
        thresholds: Thresholds,
    },
}

/// How pairs are decided: the same for every path, so that they give the
/// same persons.
#[derive(Debug, Clone)]
pub struct Setup {
    pub scoring: Scoring,
    /// Blocking keys held by more records than this are not used.
    pub max_block_size: i64,
    /// Who the audit log names for automatic decisions.
    pub actor: String,
}

impl Setup {
    /// The stored decision for a pair, if any: a pure function of the two
    /// records.
    pub fn evaluate(&self, x: &Features, y: &Features) -> Option<PairRow> {
        let a = (x.source.clone(), x.source_id.clone());
        let b = (y.source.clone(), y.source_id.clone());
        match &self.scoring {
            Scoring::Rules(weights) => {
                let o = rules::evaluate(x, y, weights)?;
                Some(PairRow {
                    a,
                    b,
                    decision: o.decision,
                    rule: o.rule.to_string(),
                    score: o.score,
                    evidence: serde_json::to_value(&o.evidence).expect("evidence serializes"),
                })
            }
            Scoring::Model { model, thresholds } => {
                let o = model.decide(x, y, thresholds)?;
                Some(PairRow {
                    a,
                    b,
                    decision: o.decision,
                    rule: o.rule.to_string(),
                    score: o.scored.weight as f32,
                    evidence: model::params::evidence(model.version, &o),
                })
            }
        }
    }

    /// The chaining guard that goes with the scoring.
    pub fn guards(&self) -> Guards {
        match self.scoring {
            Scoring::Rules(_) => Guards::Rules,
            Scoring::Model { .. } => Guards::Model,
        }
    }

    /// This setup with the model in use now (read on `conn`), if it scores
    /// by the model.
    pub async fn reloaded(&self, conn: &mut PgConnection) -> sqlx::Result<Setup> {
        let mut setup = self.clone();
        if let Scoring::Model { model, .. } = &mut setup.scoring {
            *model = Arc::new(model::store::load_active(conn).await?);
        }
        Ok(setup)
    }
}
