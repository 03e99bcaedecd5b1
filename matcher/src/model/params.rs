//! The model's parameters and what they make of a pair: the match weight
//! (log2 of the odds that the two records are one person), its probability,
//! each field's contribution, and the decision with the guards.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::compare::{compare, twins, Field, Levels, FIELDS};
use crate::features::Features;
use crate::rules::Decision;

/// m and u of each level of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// P(level | same person), per level.
    pub m: Vec<f64>,
    /// P(level | different persons), per level.
    pub u: Vec<f64>,
}

/// How often each name occurs among the people the model was trained on:
/// an exact agreement on a common name is weaker evidence than on a rare one.
///
/// A person's duplicate records would make their names look more common
/// than they are (one person with six records counts like six people), so
/// a name is counted once per distinct birth date among the records holding
/// it: the records of one person agree on both (a record without a birth
/// date counts on its own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frequencies {
    /// Live records counted (stored with the model version).
    #[serde(skip)]
    pub records: u64,
    /// Per name field (`last_name`, `first_name`, `middle_name`): value →
    /// the distinct birth dates among the records holding it.
    #[serde(skip)]
    pub counts: HashMap<String, HashMap<String, u32>>,
    /// Per name field, the sum of its counts: the people a value's count is
    /// a share of. A field without a total (a model stored before totals
    /// were kept) takes the records.
    #[serde(default)]
    pub totals: HashMap<String, u64>,
}

impl Frequencies {
    /// The people `field`'s counts are a share of.
    pub fn total(&self, field: Field) -> u64 {
        self.totals
            .get(field.name())
            .copied()
            .unwrap_or(self.records)
            .max(1)
    }
}

/// The Fellegi–Sunter model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `None` for the shipped priors (no model trained yet).
    #[serde(skip)]
    pub version: Option<i64>,
    /// Prior probability that two records taken at random are one person.
    pub lambda: f64,
    /// Per field, in the order of [`FIELDS`].
    pub fields: Vec<FieldParams>,
    /// Name counts are stored in their own table; only the totals travel
    /// with the parameters.
    #[serde(default)]
    pub frequencies: Frequencies,
    /// Whether the records trained on hold namesakes; `None` for the
    /// shipped priors (and a model stored before it was counted): the
    /// namesake rule applies.
    #[serde(default)]
    pub namesakes: Option<Namesakes>,
}

/// What the training records say about namesakes: among the compared pairs
/// that agree exactly on every name both records have (surname and first
/// name at least) and on the birth date, those where both records hold a
/// valid SNILS or an internal passport, and of these the ones that are two
/// people beyond doubt (the SNILS differ, or the passports differ by more
/// than a typo and are not a replacement).
///
/// Records of one person agree like that; two people do only where people
/// with the same names and birth date exist among the records (or were put
/// there on purpose). Where none is found, nothing tells a pair known by
/// names and birth date alone from one person, and the model's probability
/// decides it like any pair; where one is found, such a pair also needs
/// rare names (the namesake rule, [`Thresholds::uncorroborated_margin_bits`]),
/// rarer than those of every namesake pair found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Namesakes {
    /// Pairs agreeing on names and birth date whose SNILS or internal
    /// passports could be compared.
    pub compared: u64,
    /// Of those, pairs that are two people.
    pub apart: u64,
    /// The most that the names of those two-people pairs weigh (bits, see
    /// [`full_name_bits`]): where namesakes are found among names this rare, a
    /// rare name is no sign of one person up to there. `None` for a model
    /// stored before it was counted.
    #[serde(default)]
    pub rarest_name_bits: Option<f64>,
}

impl Namesakes {
    /// Counts `levels` (a compared pair's) if it agrees on names and birth
    /// date and its SNILS or passports could be compared.
    pub fn count(&mut self, levels: &Levels, pairs: u64) {
        let Some(apart) = Self::apart(levels) else {
            return;
        };
        self.compared += pairs;
        if apart {
            self.apart += pairs;
        }
    }

    /// For a pair that agrees on names and birth date and whose SNILS or
    /// passports could be compared, whether it is two people beyond doubt;
    /// `None` for any other pair.
    pub fn apart(levels: &Levels) -> Option<bool> {
        let at = |f: Field| levels[f.index()];
        let exact = |f: Field| at(f) == Some(0);
        let names = exact(Field::LastName)
            && exact(Field::FirstName)
            && matches!(at(Field::MiddleName), None | Some(0))
            && exact(Field::BirthDate);
        let (snils, passport) = (at(Field::Snils), at(Field::Passport));
        if !names || (snils.is_none() && passport.is_none()) {
            return None;
        }
        Some(snils == Some(Field::Snils.differs()) || passport == Some(Field::Passport.differs()))
    }
}

/// Probability thresholds of the model's decision.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// A pair whose match probability is at least this is linked (unless a
    /// guard says otherwise). At the default, a pair linked at the margin
    /// is two people one time in 2,000, and most links lie far above it;
    /// the pairs that are most often two people in fact (twins,
    /// namesakes, relatives) are held back by the guards and the namesake
    /// rule, not by this threshold.
    pub link_probability: f64,
    /// A pair whose match probability is at least this (and under
    /// `link_probability`) becomes a review item with its probability.
    pub review_probability: f64,
    /// A pair that agrees on names and birth date but shares no
    /// identifier, phone or e-mail (two namesakes look exactly like that)
    /// is linked only if its names are rare among the records the model
    /// was trained on: their contributions, adjusted by the names'
    /// frequencies, less the contributions of fields that differ, exceed
    /// log2 of the number of those records by at least this many bits (so that another person with the same names and
    /// birth date among them is unlikely), and its names weigh more than
    /// those of every namesake pair the training found; else it is a
    /// review item. With the shipped priors (no frequencies) no pair
    /// qualifies.
    pub uncorroborated_margin_bits: f64,
    /// When the namesake rule above applies: `"when_found"` (the default)
    /// where the records trained on hold people with the same names and
    /// birth date (two such records whose valid SNILS or internal passports
    /// differ: see `etl model show`), else the pair's probability decides;
    /// `"always"` on every model.
    pub namesake_rule: NamesakeRule,
}

/// When the namesake rule applies (see [`Thresholds::namesake_rule`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamesakeRule {
    #[default]
    WhenFound,
    Always,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            link_probability: 0.9995,
            review_probability: 0.9,
            uncorroborated_margin_bits: 8.0,
            namesake_rule: NamesakeRule::WhenFound,
        }
    }
}

/// A pair as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub levels: Levels,
    /// Each field's contribution to the match weight (bits); `None` when
    /// missing.
    pub contributions: [Option<f64>; 11],
    /// log2 of the prior odds plus every contribution.
    pub weight: f64,
    pub probability: f64,
}

/// The model's decision on a pair; `None` from [`Model::decide`] means
/// "nothing".
#[derive(Debug, Clone)]
pub struct ModelOutcome {
    pub decision: Decision,
    /// `model`, or for a conflict the shared identifier (`passport`,
    /// `document`, `snils`, `oms`).
    pub rule: &'static str,
    /// The guard that keeps the pair apart, if one does.
    pub blocked_by: Option<&'static str>,
    pub scored: Scored,
}

impl Model {
    /// The model used until one is trained: levels' m and u set by hand
    /// from what is known of Russian patient records (a name shared by a
    /// few percent of people, one birth date in some 30,000, identifiers
    /// unique).
    pub fn priors() -> Model {
        let p = |m: &[f64], u: &[f64]| FieldParams {
            m: m.to_vec(),
            u: u.to_vec(),
        };
        Model {
            version: None,
            // About one other record of the same person per record in a
            // million.
            lambda: 1e-6,
            fields: vec![
                // Another surname: most changes of surname are women's,
                // and about a quarter of random pairs are two women.
                p(
                    &[0.88, 0.03, 0.05, 0.01, 0.02, 0.01],
                    &[0.003, 0.0005, 0.002, 0.001, 0.25, 0.7435],
                ),
                p(
                    &[0.90, 0.03, 0.04, 0.01, 0.02],
                    &[0.02, 0.003, 0.005, 0.002, 0.97],
                ),
                p(
                    &[0.88, 0.05, 0.04, 0.01, 0.02],
                    &[0.02, 0.003, 0.005, 0.002, 0.97],
                ),
                p(
                    &[0.92, 0.01, 0.05, 0.02],
                    &[0.00005, 0.000005, 0.003, 0.997],
                ),
                p(&[0.98, 0.02], &[0.5, 0.5]),
                p(&[0.85, 0.05, 0.05, 0.05], &[0.000001, 0.00001, 0.05, 0.95]),
                p(&[0.85, 0.1, 0.05], &[0.000001, 0.00001, 0.999989]),
                p(&[0.98, 0.02], &[0.000001, 0.999999]),
                p(&[0.85, 0.15], &[0.000001, 0.999999]),
                p(&[0.7, 0.3], &[0.0005, 0.9995]),
                p(&[0.6, 0.4], &[0.00001, 0.99999]),
            ],
            frequencies: Frequencies::default(),
            namesakes: None,
        }
    }

    /// The model with every field's current levels. A model stored before
    /// a field gained a level (the surname's `differs_both_women`) weighs
    /// each level it lacks as its "differs": its decisions stay the ones it
    /// was trained to give until the next training learns the new level.
    pub fn with_current_levels(mut self) -> Model {
        for field in FIELDS {
            let p = &mut self.fields[field.index()];
            while p.m.len() < field.levels().len() {
                let differs = p.m.len() - 1;
                p.m.insert(differs, p.m[differs]);
                p.u.insert(differs, p.u[differs]);
            }
        }
        self
    }

    /// The u of an exact agreement on a name `value`: its share of the
    /// people counted (at least one person's), or the field's u for a value
    /// not counted (one that arrived after training: no adjustment).
    fn exact_u(&self, field: Field, value: Option<&str>) -> f64 {
        let base = self.fields[field.index()].u[0];
        let (Some(value), Some(counts)) = (value, self.frequencies.counts.get(field.name())) else {
            return base;
        };
        let people = self.frequencies.total(field) as f64;
        match counts.get(value) {
            Some(&n) => (n as f64 / people).max(1.0 / people),
            None => base,
        }
    }

    /// The match weight and probability of two records.
    pub fn score(&self, a: &Features, b: &Features) -> Scored {
        let levels = compare(a, b);
        self.score_levels(a, &levels)
    }

    /// The weight of `levels`; `a` gives the values of exact name
    /// agreements for the frequency adjustment.
    pub fn score_levels(&self, a: &Features, levels: &Levels) -> Scored {
        let mut contributions = [None; 11];
        let mut weight = (self.lambda / (1.0 - self.lambda)).log2();
        for field in FIELDS {
            let Some(level) = levels[field.index()] else {
                continue;
            };
            let p = &self.fields[field.index()];
            let m = p.m[level as usize];
            let u = match (field, level) {
                (Field::LastName, 0) => self.exact_u(field, a.last.as_deref()),
                (Field::FirstName, 0) => self.exact_u(field, a.first.as_deref()),
                (Field::MiddleName, 0) => self.exact_u(field, a.middle.as_deref()),
                _ => p.u[level as usize],
            };
            let w = (m / u).log2();
            contributions[field.index()] = Some(w);
            weight += w;
        }
        Scored {
            levels: *levels,
            contributions,
            weight,
            probability: probability(weight),
        }
    }

    /// Whether a pair known by names and birth date alone may link: when
    /// the records trained on hold no namesakes, or when its names are rare
    /// enough.
    fn may_link_uncorroborated(&self, s: &Scored, t: &Thresholds) -> bool {
        let no_namesakes = t.namesake_rule == NamesakeRule::WhenFound && !self.holds_namesakes();
        no_namesakes || self.rare_names(s, t)
    }

    /// Whether the records trained on hold namesakes (or nothing was
    /// counted: the shipped priors), so that the namesake rule applies.
    pub fn holds_namesakes(&self) -> bool {
        self.namesakes.is_none_or(|n| n.apart > 0)
    }

    /// Whether the names of a pair are rare enough to link it on names and
    /// birth date alone: rare among the records, and rarer than those of
    /// every namesake pair the training found.
    fn rare_names(&self, s: &Scored, t: &Thresholds) -> bool {
        let records = self.frequencies.records;
        let rarer_than_namesakes = self
            .namesakes
            .and_then(|n| n.rarest_name_bits)
            .is_none_or(|rarest| full_name_bits(s) > rarest);
        records > 0
            && name_bits(s) >= (records as f64).log2() + t.uncorroborated_margin_bits
            && rarer_than_namesakes
    }

    /// The decision on a pair. Guards first, each a near-certain sign of
    /// two people: two different valid SNILS; birth dates that are neither
    /// equal, swapped nor one component apart; the twin pattern (same birth
    /// date, surname and patronymic, another first name); two internal
    /// passports that differ by more than a typo and cannot be a
    /// replacement. A guarded pair is never linked; if it shares an
    /// identifier it is a conflict (a review item), else nothing. Then the
    /// thresholds: link, review, or nothing.
    pub fn decide(&self, a: &Features, b: &Features, t: &Thresholds) -> Option<ModelOutcome> {
        self.decide_scored(a, b, self.score(a, b), t)
    }

    /// [`Model::decide`] on a pair already scored by this model.
    pub fn decide_scored(
        &self,
        a: &Features,
        b: &Features,
        scored: Scored,
        t: &Thresholds,
    ) -> Option<ModelOutcome> {
        let blocked_by = guard(a, b, &scored.levels);
        if blocked_by.is_some() {
            let rule = shared_identifier(&scored.levels)?;
            return Some(ModelOutcome {
                decision: Decision::Conflict,
                rule,
                blocked_by,
                scored,
            });
        }
        let mut blocked_by = None;
        let decision = if scored.probability >= t.link_probability {
            if corroborated(&scored.levels) || self.may_link_uncorroborated(&scored, t) {
                Decision::Link
            } else {
                blocked_by = Some("uncorroborated_namesake");
                Decision::Review
            }
        } else if scored.probability >= t.review_probability {
            Decision::Review
        } else {
            return None;
        };
        Some(ModelOutcome {
            decision,
            rule: "model",
            blocked_by,
            scored,
        })
    }
}

/// 2^w / (1 + 2^w).
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

/// The guard that keeps two records apart, if one does (also the chaining
/// guard's test between clusters).
pub fn guard(a: &Features, b: &Features, levels: &Levels) -> Option<&'static str> {
    let at = |f: Field| levels[f.index()];
    if at(Field::Snils) == Some(Field::Snils.differs()) {
        Some("snils_differs")
    } else if at(Field::BirthDate) == Some(Field::BirthDate.differs()) && !same_named_holder(levels)
    {
        Some("birth_date_differs")
    } else if at(Field::Passport) == Some(Field::Passport.differs()) {
        Some("passport_differs")
    } else if twins(a, b, levels) {
        Some("twins")
    } else {
        None
    }
}

/// Whether two records with birth dates far apart may still be one person
/// with a birth date typed wrong: they hold one identifier exactly
/// (document, SNILS, OMS number) and agree on the names — surname and
/// first name equal or a typo apart, the patronymic not different. A
/// parent's document on a child's record comes with the child's first
/// name (or, a son named after his father, another patronymic), so it
/// stays a conflict. The model then weighs the birth date like any field:
/// where birth dates of one person rarely differ, a different one still
/// outweighs the rest.
pub(crate) fn same_named_holder(levels: &Levels) -> bool {
    let at = |f: Field| levels[f.index()];
    let close = |f: Field| matches!(at(f), Some(l) if l < f.differs());
    shared_identifier(levels).is_some()
        && matches!(at(Field::LastName), Some(0..=3))
        && close(Field::FirstName)
        && at(Field::MiddleName) != Some(Field::MiddleName.differs())
}

/// Whether something besides names and birth date says "one person": an
/// identifier equal or one typo apart, a shared phone or e-mail.
fn corroborated(levels: &Levels) -> bool {
    let at = |f: Field| levels[f.index()];
    matches!(at(Field::Passport), Some(0 | 1))
        || matches!(at(Field::OtherDocument), Some(0 | 1))
        || at(Field::Snils) == Some(0)
        || at(Field::Oms) == Some(0)
        || at(Field::Phone) == Some(0)
        || at(Field::Email) == Some(0)
}

/// What a pair without corroboration has besides its birth date: the
/// names' contributions (bits) less whatever contradicts them (an
/// identifier of one type that differs, no phone in common, another sex).
fn name_bits(s: &Scored) -> f64 {
    FIELDS
        .iter()
        .filter(|&&f| f != Field::BirthDate)
        .filter_map(|f| s.contributions[f.index()])
        .sum()
}

/// What the full name of a pair weighs: the contributions of surname,
/// first name and patronymic (unlike `name_bits`, nothing else).
pub fn full_name_bits(s: &Scored) -> f64 {
    [Field::LastName, Field::FirstName, Field::MiddleName]
        .iter()
        .filter_map(|f| s.contributions[f.index()])
        .sum()
}

fn shared_identifier(levels: &Levels) -> Option<&'static str> {
    let at = |f: Field| levels[f.index()];
    if at(Field::Passport) == Some(0) {
        Some("passport")
    } else if at(Field::OtherDocument) == Some(0) {
        Some("document")
    } else if at(Field::Snils) == Some(0) {
        Some("snils")
    } else if at(Field::Oms) == Some(0) {
        Some("oms")
    } else {
        None
    }
}

/// What a pair's evidence stores: the probability, the weight and each
/// field's level and contribution (no values), as JSON text. Serialized
/// straight from these structs: a JSON tree (a dozen maps) built for every
/// stored pair only to be written cost as much as scoring it. Fields in
/// alphabetical order, so that the text is the one a tree would give.
#[derive(Serialize)]
struct StoredEvidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked_by: Option<&'static str>,
    fields: BTreeMap<&'static str, FieldEvidence>,
    model_version: Option<i64>,
    probability: f64,
    weight: f64,
}

/// One field of [`StoredEvidence`].
#[derive(Serialize)]
struct FieldEvidence {
    level: &'static str,
    weight: f64,
}

/// Weights are stored to two decimals.
fn rounded(w: f64) -> f64 {
    (w * 100.0).round() / 100.0
}

/// The evidence stored for a pair the model decided ([`StoredEvidence`]).
pub fn evidence(version: Option<i64>, o: &ModelOutcome) -> String {
    let fields = FIELDS
        .iter()
        .filter_map(|field| {
            let level = o.scored.levels[field.index()]?;
            let w = o.scored.contributions[field.index()]?;
            let level = field.levels()[level as usize];
            Some((
                field.name(),
                FieldEvidence {
                    level,
                    weight: rounded(w),
                },
            ))
        })
        .collect();
    serde_json::to_string(&StoredEvidence {
        blocked_by: o.blocked_by,
        fields,
        model_version: version,
        probability: o.scored.probability,
        weight: rounded(o.scored.weight),
    })
    .expect("evidence serializes")
}
