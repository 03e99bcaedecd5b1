//! The pairwise rules: given two records, link, review, conflict or nothing.
//!
//! The decision depends on the two records alone (never on a third one), so
//! the set of pairwise decisions, and therefore the persons computed from
//! it, is the same whether records arrive one by one or all at once.
//!
//! Order of the rules:
//!
//! 1. **Hard conflicts.** Two different valid SNILS; two different valid
//!    documents of the same type (for internal passports, unless the series
//!    years show a replacement at the ages 14/20/45, see
//!    [`passports_agree`]); birth dates that are clearly different (not
//!    equal, not a day/month swap, not one differing component). A pair with
//!    a hard conflict is never linked by a rule; if an identifier is shared
//!    as well it is stored as a `conflict` (and goes to review).
//! 2. **Deterministic identifier rules**: same valid document (type, series
//!    and number as text), same valid SNILS, same valid OMS number. Each also
//!    needs a compatible birth date and surname; when those disagree, the pair
//!    goes to review instead.
//! 3. **Scored rule**: per-field agreement weights summed into a score;
//!    `score >= link` links, `score >= review` creates a review item.
//!    A replaced passport (different passports, years consistent with a
//!    replacement) only links when a phone, e-mail or OMS number corroborates.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::features::{Doc, Features};

/// Weights and thresholds of the scored rule. Defaults tuned on the truth
/// generator (`synth::truth`); see the README for the figures.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Weights {
    /// Score at or above which a pair is linked.
    pub link_threshold: f32,
    /// Score at or above which (and below `link_threshold`) a pair becomes a
    /// review item.
    pub review_threshold: f32,
    pub last_name_exact: f32,
    /// One half of a double surname equals the other surname.
    pub last_name_part: f32,
    pub last_name_typo: f32,
    pub last_name_differs: f32,
    pub first_name_exact: f32,
    pub first_name_typo: f32,
    pub first_name_differs: f32,
    pub middle_name_exact: f32,
    pub middle_name_typo: f32,
    pub middle_name_differs: f32,
    pub birth_date_exact: f32,
    pub birth_date_swap: f32,
    pub birth_date_typo: f32,
    pub sex_differs: f32,
    pub phone_shared: f32,
    pub email_shared: f32,
    /// Both have valid OMS numbers and they differ (policies are reissued,
    /// so not a hard conflict).
    pub oms_differs: f32,
    /// Both have phones, none in common.
    pub phone_none_shared: f32,
    /// Both have e-mails, none in common.
    pub email_none_shared: f32,
    /// Jaro-Winkler similarity from which two long names (7 letters or more)
    /// two edits apart are a typo of each other; one edit is a typo in names
    /// of 5 letters or more.
    pub typo_similarity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            link_threshold: 15.0,
            review_threshold: 12.0,
            last_name_exact: 4.0,
            last_name_part: 3.0,
            last_name_typo: 3.0,
            last_name_differs: -6.0,
            first_name_exact: 3.0,
            first_name_typo: 1.5,
            first_name_differs: -8.0,
            middle_name_exact: 2.0,
            middle_name_typo: 1.0,
            middle_name_differs: -5.0,
            birth_date_exact: 5.0,
            birth_date_swap: 3.0,
            birth_date_typo: 1.5,
            sex_differs: -4.0,
            phone_shared: 3.0,
            email_shared: 3.0,
            oms_differs: -2.0,
            phone_none_shared: -1.5,
            email_none_shared: -1.0,
            typo_similarity: 0.88,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Link,
    Review,
    Conflict,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Link => "link",
            Decision::Review => "review",
            Decision::Conflict => "conflict",
        }
    }
}

/// How one field of the two records compares. Values never appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Agreement {
    Exact,
    /// One half of a double surname.
    Part,
    Typo,
    /// Birth date with day and month exchanged.
    Swap,
    /// Differs (for identifiers: both valid and different).
    Differs,
    /// Different passports whose series years show a replacement.
    Replaced,
    /// At least one side has no (valid) value.
    Missing,
    /// Both have values, none in common (phones, e-mails).
    None,
}

/// The agreement of each field, the evidence stored with a pair.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub last_name: Agreement,
    pub first_name: Agreement,
    pub middle_name: Agreement,
    pub birth_date: Agreement,
    pub sex: Agreement,
    pub document: Agreement,
    pub snils: Agreement,
    pub oms: Agreement,
    pub phone: Agreement,
    pub email: Agreement,
    /// Why the pair is not linked although a rule matched, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<&'static str>,
}

/// The outcome for one pair; `None` from [`evaluate`] means "nothing".
#[derive(Debug, Clone)]
pub struct PairOutcome {
    pub decision: Decision,
    /// `document`, `snils`, `oms`, `score`, or for conflicts the identifier.
    pub rule: &'static str,
    pub score: f32,
    pub evidence: Evidence,
}

/// Compares two records.
pub fn evaluate(a: &Features, b: &Features, w: &Weights) -> Option<PairOutcome> {
    let evidence = compare_fields(a, b, w);
    let score = score(&evidence, w);
    let identifier = identifier_rule(&evidence);
    // 1. Hard conflicts.
    if let Some(why) = hard_conflict(&evidence) {
        // Only worth an operator's time when an identifier says otherwise.
        return identifier.map(|rule| PairOutcome {
            decision: Decision::Conflict,
            rule,
            score,
            evidence: Evidence {
                blocked_by: Some(why),
                ..evidence
            },
        });
    }
    // 2. Identifier rules, each needing a compatible birth date and surname.
    if let Some(rule) = identifier {
        return Some(identifier_outcome(a, b, rule, score, evidence));
    }
    // 3. The scored rule.
    scored_outcome(score, evidence, w)
}

/// Each field's agreement (no conflict decided yet).
fn compare_fields(a: &Features, b: &Features, w: &Weights) -> Evidence {
    Evidence {
        last_name: compare_last(a, b, w.typo_similarity),
        first_name: compare_name(a.first.as_deref(), b.first.as_deref(), w.typo_similarity),
        middle_name: compare_name(a.middle.as_deref(), b.middle.as_deref(), w.typo_similarity),
        birth_date: compare_birth(a.birth, b.birth),
        sex: match (a.sex, b.sex) {
            (Some(x), Some(y)) if x == y => Agreement::Exact,
            (Some(_), Some(_)) => Agreement::Differs,
            _ => Agreement::Missing,
        },
        document: compare_docs(a, b),
        snils: compare_id(a.snils.as_deref(), b.snils.as_deref()),
        oms: compare_id(a.oms.as_deref(), b.oms.as_deref()),
        phone: compare_sets(&a.phones, &b.phones),
        email: compare_sets(&a.emails, &b.emails),
        blocked_by: None,
    }
}

/// Two different valid SNILS, two different documents of one type (not a
/// replacement), clearly different birth dates.
fn hard_conflict(e: &Evidence) -> Option<&'static str> {
    if e.snils == Agreement::Differs {
        Some("snils_differs")
    } else if e.document == Agreement::Differs {
        Some("document_differs")
    } else if e.birth_date == Agreement::Differs {
        Some("birth_date_differs")
    } else {
        None
    }
}

/// The strongest identifier the pair shares, as the rule that links it.
fn identifier_rule(e: &Evidence) -> Option<&'static str> {
    if e.document == Agreement::Exact {
        Some("document")
    } else if e.snils == Agreement::Exact {
        Some("snils")
    } else if e.oms == Agreement::Exact {
        Some("oms")
    } else {
        None
    }
}

/// A shared identifier links when both have a birth date and the surnames
/// are compatible; otherwise it is a review item.
fn identifier_outcome(
    a: &Features,
    b: &Features,
    rule: &'static str,
    score: f32,
    mut evidence: Evidence,
) -> PairOutcome {
    // With an identifier in common a surname only has to be a typo
    // (two edits at most, whatever its length) or a half of the other.
    let surname_ok = match evidence.last_name {
        Agreement::Differs => match (a.last.as_deref(), b.last.as_deref()) {
            (Some(x), Some(y)) => strsim::damerau_levenshtein(x, y) <= 2,
            _ => true,
        },
        _ => true,
    };
    let birth_ok = evidence.birth_date != Agreement::Missing;
    let decision = if surname_ok && birth_ok {
        Decision::Link
    } else {
        evidence.blocked_by = Some(if surname_ok {
            "birth_date_missing"
        } else {
            "surname_differs"
        });
        Decision::Review
    };
    PairOutcome {
        decision,
        rule,
        score,
        evidence,
    }
}

/// The scored rule: link at the link threshold (a replaced passport only
/// with a shared phone, e-mail or OMS number), review at the review
/// threshold, else nothing.
fn scored_outcome(score: f32, mut evidence: Evidence, w: &Weights) -> Option<PairOutcome> {
    let decision = if score >= w.link_threshold {
        let e = &evidence;
        if e.document == Agreement::Replaced
            && e.phone != Agreement::Exact
            && e.email != Agreement::Exact
            && e.oms != Agreement::Exact
        {
            evidence.blocked_by = Some("replaced_passport_uncorroborated");
            Decision::Review
        } else {
            Decision::Link
        }
    } else if score >= w.review_threshold {
        Decision::Review
    } else {
        return None;
    };
    Some(PairOutcome {
        decision,
        rule: "score",
        score,
        evidence,
    })
}

fn score(e: &Evidence, w: &Weights) -> f32 {
    let mut s = 0.0;
    s += match e.last_name {
        Agreement::Exact => w.last_name_exact,
        Agreement::Part => w.last_name_part,
        Agreement::Typo => w.last_name_typo,
        Agreement::Differs => w.last_name_differs,
        _ => 0.0,
    };
    s += match e.first_name {
        Agreement::Exact => w.first_name_exact,
        Agreement::Typo => w.first_name_typo,
        Agreement::Differs => w.first_name_differs,
        _ => 0.0,
    };
    s += match e.middle_name {
        Agreement::Exact => w.middle_name_exact,
        Agreement::Typo => w.middle_name_typo,
        Agreement::Differs => w.middle_name_differs,
        _ => 0.0,
    };
    s += match e.birth_date {
        Agreement::Exact => w.birth_date_exact,
        Agreement::Swap => w.birth_date_swap,
        Agreement::Typo => w.birth_date_typo,
        _ => 0.0,
    };
    if e.sex == Agreement::Differs {
        s += w.sex_differs;
    }
    if e.phone == Agreement::Exact {
        s += w.phone_shared;
    }
    if e.email == Agreement::Exact {
        s += w.email_shared;
    }
    if e.oms == Agreement::Differs {
        s += w.oms_differs;
    }
    if e.phone == Agreement::None {
        s += w.phone_none_shared;
    }
    if e.email == Agreement::None {
        s += w.email_none_shared;
    }
    s
}

/// One edit (letter replaced, dropped, added, or two swapped) in a name of
/// five letters or more; two edits in a name of seven or more that is also
/// similar by Jaro-Winkler. Short names differing by a letter (Анна, Инна)
/// are different names.
fn is_typo(a: &str, b: &str, similarity: f64) -> bool {
    let len = a.chars().count().min(b.chars().count());
    match strsim::damerau_levenshtein(a, b) {
        1 => len >= 5,
        2 => len >= 7 && strsim::jaro_winkler(a, b) >= similarity,
        _ => false,
    }
}

fn compare_name(a: Option<&str>, b: Option<&str>, similarity: f64) -> Agreement {
    match (a, b) {
        (Some(a), Some(b)) if a == b => Agreement::Exact,
        (Some(a), Some(b)) if is_typo(a, b, similarity) => Agreement::Typo,
        (Some(_), Some(_)) => Agreement::Differs,
        _ => Agreement::Missing,
    }
}

fn compare_last(a: &Features, b: &Features, similarity: f64) -> Agreement {
    match compare_name(a.last.as_deref(), b.last.as_deref(), similarity) {
        Agreement::Differs => {
            let shares_part = a.last_parts.len() + b.last_parts.len() > 2
                && a.last_parts.iter().any(|p| b.last_parts.contains(p));
            if shares_part {
                Agreement::Part
            } else {
                Agreement::Differs
            }
        }
        other => other,
    }
}

/// Birth dates: equal; day and month exchanged; one of year, month, day
/// different (a typo); otherwise clearly different.
pub fn compare_birth(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Agreement {
    let (Some(a), Some(b)) = (a, b) else {
        return Agreement::Missing;
    };
    if a == b {
        return Agreement::Exact;
    }
    if a.year() == b.year() && a.day() == b.month() && a.month() == b.day() {
        return Agreement::Swap;
    }
    let same = [
        a.year() == b.year(),
        a.month() == b.month(),
        a.day() == b.day(),
    ];
    let year_typo = !same[0] && (a.year() - b.year()).abs() <= 10 && same[1] && same[2];
    if (same[0] && (same[1] || same[2])) || year_typo {
        Agreement::Typo
    } else {
        Agreement::Differs
    }
}

fn compare_id(a: Option<&str>, b: Option<&str>) -> Agreement {
    match (a, b) {
        (Some(a), Some(b)) if a == b => Agreement::Exact,
        (Some(_), Some(_)) => Agreement::Differs,
        _ => Agreement::Missing,
    }
}

fn compare_sets(a: &[String], b: &[String]) -> Agreement {
    if a.is_empty() || b.is_empty() {
        Agreement::Missing
    } else if a.iter().any(|x| b.contains(x)) {
        Agreement::Exact
    } else {
        Agreement::None
    }
}

/// Documents: `Exact` if a valid document is shared; `Differs` if two
/// documents of the same type differ and cannot be a replacement; `Replaced`
/// if the only differences are internal passports whose years show one;
/// `Missing` if no type is held by both.
fn compare_docs(a: &Features, b: &Features) -> Agreement {
    if a.docs.iter().any(|d| b.docs.contains(d)) {
        // A shared document; a second, contradicting document of another
        // type would still be a conflict.
        return if docs_conflict(a, b) {
            Agreement::Differs
        } else {
            Agreement::Exact
        };
    }
    let mut replaced = false;
    let mut compared = false;
    for x in &a.docs {
        for y in b.docs.iter().filter(|y| y.doc_type == x.doc_type) {
            compared = true;
            if x.doc_type == proto::DocumentType::PASSPORT.0
                && passports_agree(x, y, a.birth, b.birth, surname_changed(a, b))
            {
                replaced = true;
            } else {
                return Agreement::Differs;
            }
        }
    }
    match (compared, replaced) {
        (true, true) => Agreement::Replaced,
        _ => Agreement::Missing,
    }
}

/// Whether two records hold two different documents of one type that are
/// not a plausible passport replacement.
fn docs_conflict(a: &Features, b: &Features) -> bool {
    a.docs.iter().any(|x| {
        !b.docs.contains(x)
            && b.docs.iter().any(|y| {
                y.doc_type == x.doc_type
                    && !a.docs.contains(y)
                    && !(x.doc_type == proto::DocumentType::PASSPORT.0
                        && passports_agree(x, y, a.birth, b.birth, surname_changed(a, b)))
            })
    })
}

/// Two different internal passports of one person are plausible when
/// each blank's year falls near a different replacement age (14, 20, 45;
/// issued within two years after the birthday, or from 1997, when this
/// passport started, until the exchange ended in 2004), or, where the
/// surname changed (`surname_changed`: a new passport is issued for a new
/// surname, most often a woman's at her wedding, at any age), when the
/// blanks were made in different years after the holder turned 14. Two
/// passports of the same period, or with the surname unchanged one made
/// off those windows, mean two people.
pub fn passports_agree(
    x: &Doc,
    y: &Doc,
    bx: Option<NaiveDate>,
    by: Option<NaiveDate>,
    surname_changed: bool,
) -> bool {
    let birth = bx.or(by);
    let (Some(b), Some(yx), Some(yy)) = (birth, x.passport_year(birth), y.passport_year(birth))
    else {
        return false;
    };
    let age = |year: i32| year - b.year();
    if surname_changed {
        return yx != yy && age(yx) >= 14 && age(yy) >= 14;
    }
    let period = |year: i32| -> Option<i32> {
        let milestone = [45, 20, 14].into_iter().find(|&m| age(year) >= m)?;
        let exchange = (1997..=2004).contains(&year);
        (exchange || age(year) <= milestone + 2).then_some(milestone)
    };
    match (period(yx), period(yy)) {
        (Some(px), Some(py)) => px != py,
        _ => false,
    }
}

/// Whether two records' surnames differ beyond a typo, a gender form or
/// half of a double surname: a change of surname.
pub fn surname_changed(a: &Features, b: &Features) -> bool {
    compare_last(a, b, Weights::default().typo_similarity) == Agreement::Differs
}

#[cfg(test)]
mod tests;
