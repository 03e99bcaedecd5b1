//! What decides a pair and names the engine in the audit log: the pure part
//! of matching, shared by the incremental path and the full re-match.

use std::sync::Arc;

use sqlx::PgConnection;

use crate::cluster::Guards;
use crate::features::Features;
use crate::model::{self, Model, Thresholds};
use crate::rules::{self, Weights};

use super::types::{Evidence, PairRow};

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
        // Most pairs have no decision: the ends are copied only for one
        // that has.
        let a = || (x.source.clone(), x.source_id.clone());
        let b = || (y.source.clone(), y.source_id.clone());
        match &self.scoring {
            Scoring::Rules(weights) => {
                let o = rules::evaluate(x, y, weights)?;
                Some(PairRow {
                    a: a(),
                    b: b(),
                    decision: o.decision,
                    rule: o.rule.to_string(),
                    score: o.score,
                    evidence: Evidence::Tree(Arc::new(
                        serde_json::to_value(&o.evidence).expect("evidence serializes"),
                    )),
                })
            }
            Scoring::Model { model, thresholds } => {
                let o = model.decide(x, y, thresholds)?;
                Some(PairRow {
                    a: a(),
                    b: b(),
                    decision: o.decision,
                    rule: o.rule.to_string(),
                    score: o.scored.weight as f32,
                    evidence: Evidence::Text(model::params::evidence(model.version, &o).into()),
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::features::Features;
    use crate::rules::Decision;

    fn record(source_id: &str) -> Features {
        Features {
            source: "qms".into(),
            source_id: source_id.into(),
            last: Some("иванов".into()),
            last_parts: vec!["иванов".into()],
            first: Some("петр".into()),
            middle: Some("сергеевич".into()),
            birth: NaiveDate::from_ymd_opt(1990, 5, 3),
            sex: Some('M'),
            docs: vec![],
            snils: Some("11223344595".into()),
            oms: None,
            phones: vec![],
            emails: vec![],
        }
    }

    fn setups() -> [Setup; 2] {
        let setup = |scoring| Setup {
            scoring,
            max_block_size: 100,
            actor: "matcher".into(),
        };
        [
            setup(Scoring::Rules(Weights::default())),
            setup(Scoring::Model {
                model: Arc::new(Model::priors()),
                thresholds: Thresholds::default(),
            }),
        ]
    }

    #[test]
    fn a_pair_is_stored_as_its_scoring_decides_it() {
        let (a, b) = (record("1"), record("2"));
        let rules = rules::evaluate(&a, &b, &Weights::default()).expect("decided");
        let [by_rules, by_model] = setups().map(|s| s.evaluate(&a, &b).expect("decided"));
        for p in [&by_rules, &by_model] {
            assert_eq!(p.a, ("qms".to_string(), "1".to_string()));
            assert_eq!(p.b, ("qms".to_string(), "2".to_string()));
            assert_eq!(p.decision, Decision::Link);
        }
        assert_eq!(by_rules.rule, rules.rule);
        assert_eq!(by_rules.score, rules.score);
        assert_eq!(
            *by_rules.evidence.value(),
            serde_json::to_value(&rules.evidence).unwrap()
        );
        // The model's evidence: probability, weight and each field's level
        // and contribution, no values.
        assert_eq!(by_model.rule, "model");
        let evidence = by_model.evidence.value();
        assert!(evidence["probability"].as_f64().unwrap() > 0.99);
        assert_eq!(evidence["fields"]["snils"]["level"], "exact");
        assert!(!by_model.evidence.text().contains("иванов"));
    }

    #[test]
    fn the_same_pair_gives_the_same_row_every_time() {
        let (a, mut b) = (record("1"), record("2"));
        b.first = Some("пётр".into());
        b.snils = None;
        for setup in setups() {
            let first = setup.evaluate(&a, &b);
            let again = setup.evaluate(&a, &b);
            assert_eq!(format!("{first:?}"), format!("{again:?}"));
        }
    }

    #[test]
    fn records_with_nothing_in_common_are_no_pair() {
        let a = record("1");
        let b = Features {
            source_id: "2".into(),
            last: Some("сидорова".into()),
            last_parts: vec!["сидорова".into()],
            first: Some("анна".into()),
            middle: Some("олеговна".into()),
            birth: NaiveDate::from_ymd_opt(1971, 11, 20),
            sex: Some('F'),
            snils: None,
            ..record("2")
        };
        for setup in setups() {
            assert!(setup.evaluate(&a, &b).is_none(), "{:?}", setup.scoring);
        }
    }

    #[test]
    fn each_scoring_has_its_guards() {
        let [rules, model] = setups();
        assert_eq!(rules.guards(), Guards::Rules);
        assert_eq!(model.guards(), Guards::Model);
    }
}
