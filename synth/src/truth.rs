//! Synthetic patients with known truth, for evaluating the matcher.
//!
//! [`TruthGenerator::records`] describes `persons` real people as the records
//! two source systems hold of them, and says which real person each record
//! is. Everything derives from the seed: the same seed and count give the
//! same records.
//!
//! | what | rate |
//! |---|---|
//! | person in qMS only / Infoclinica only / both | 30% / 25% / 45% |
//! | a second record of the person in the same source | 3% per source |
//! | surname typo (letter replaced, dropped or two swapped) | 3% of records |
//! | first-name / patronymic typo | 1% / 1% |
//! | `ё` written as `е` (where the name has `ё`) | 30% of records |
//! | a Latin look-alike letter typed in the surname (normalized back by `proto`) | 3% |
//! | names in capitals | 8% |
//! | patronymic missing | 3% |
//! | day and month swapped (day ≤ 12) | 1% |
//! | documents, SNILS, OMS, phones, e-mail dropped | 5%, 10%, 20%, 10% each, 25% |
//! | format variants of documents, SNILS and phones (normalized by `proto`) | always, varied |
//! | passport replaced (at 20 or 45): some records hold the old one | 10% of adults, 40% of their records |
//! | twins: same surname, patronymic, birth date, other first name, passports of consecutive numbers, often a shared phone | 1% of persons |
//! | namesakes: same full name, birth date and sex, nothing else shared | 0.5% of persons |
//! | family: same surname, shared phone and/or e-mail | 2% of persons |
//!
//! Companions (twins, namesakes, family members) are persons of their own
//! (`<p>t`, `<p>n`, `<p>f`) and carry a `group` (`twin:<p>`, …) shared with
//! the person `<p>`, so an evaluation can count false merges by kind.
//!
//! [`TruthGenerator::with_clerks`] adds the failure classes of clinics' real
//! data (rates in `crate::clerks`): clerks' document layouts, phones with
//! words, one-digit document typos, patronymic initials, foreigners known by
//! name and birth date only, household members (`<p>h`, `household:<p>`),
//! married women whose earlier records hold the maiden surname.

use chrono::{Datelike, NaiveDate};
use proto::{normalize, DocumentType, IdentityDocument, PatientRecord, Sex};

use crate::rng::{mix64, Rng};
use crate::{names, Generator, REFERENCE_DATE};

/// One record of a source, with the real person it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthRecord {
    pub source: &'static str,
    pub source_id: String,
    /// The real person (`17`, or `17t` for 17's twin, `17n`, `17f`).
    pub person: String,
    /// Hard-negative group shared with look-alike persons.
    pub group: Option<String>,
    pub record: PatientRecord,
}

/// The source names records are spread over.
pub const SOURCES: [&str; 2] = ["qms", "infoclinica"];

#[derive(Debug, Clone)]
pub struct TruthGenerator {
    key: u64,
    base: Generator,
    clerks: bool,
}

/// Offset of the indices of companions' own base patients.
const COMPANION_OFFSET: u64 = 1 << 40;

impl TruthGenerator {
    pub fn new(seed: u64) -> Self {
        TruthGenerator {
            key: mix64(seed ^ 0x7247_7247_7247_7247),
            base: Generator::new(seed),
            clerks: false,
        }
    }

    /// Adds the failure classes of clinics' real data (`crate::clerks`:
    /// clerks' document layouts, phones with words, one-digit document
    /// typos, patronymic initials, name-only foreigners, household
    /// members). They draw from random streams of their own, so that a
    /// generator without them makes the same records as before they
    /// existed.
    pub fn with_clerks(mut self) -> Self {
        self.clerks = true;
        self
    }

    fn rng(&self, a: u64, b: u64) -> Rng {
        Rng::from_key(mix64(self.key ^ mix64(a).wrapping_add(mix64(b ^ 0xC0FFEE))))
    }

    /// The records of persons `0..persons` (and their companions), in a fixed
    /// order: by person, then source.
    pub fn records(&self, persons: u64) -> Vec<TruthRecord> {
        let mut out = Vec::with_capacity(persons as usize * 2);
        let mut counters = [0u64; 2];
        for p in 0..persons {
            let base = self.base.patient(p).record;
            let mut people = vec![(p.to_string(), None, base.clone())];
            let roll = self.rng(p, 1).below(1000);
            if roll < 10 {
                people.push((
                    format!("{p}t"),
                    Some(format!("twin:{p}")),
                    self.twin(p, &base),
                ));
                people[0].1 = Some(format!("twin:{p}"));
            } else if roll < 15 {
                people.push((
                    format!("{p}n"),
                    Some(format!("namesake:{p}")),
                    self.namesake(p, &base),
                ));
                people[0].1 = Some(format!("namesake:{p}"));
            } else if roll < 35 {
                people.push((
                    format!("{p}f"),
                    Some(format!("family:{p}")),
                    self.family(p, &base),
                ));
                people[0].1 = Some(format!("family:{p}"));
            }
            // A married woman's records from before her wedding.
            let mut maiden = None;
            if self.clerks && people.len() == 1 {
                let mut r = self.rng(p, 7);
                let roll = r.below(100);
                if roll < 3 {
                    let other = self.base.patient(COMPANION_OFFSET + p).record;
                    people.push((
                        format!("{p}h"),
                        Some(format!("household:{p}")),
                        crate::clerks::household(&mut r, &base, other),
                    ));
                    people[0].1 = Some(format!("household:{p}"));
                } else if roll < 6 {
                    people[0].2 = crate::clerks::foreigner(&mut r, &base);
                } else if r.percent(25) {
                    if let Some(m) = crate::clerks::married(&mut r, &base) {
                        people[0].2 = m.now;
                        maiden = Some(m.before);
                    }
                }
            }
            for (n, (person, group, record)) in people.into_iter().enumerate() {
                let salt = p.wrapping_mul(4).wrapping_add(n as u64);
                let old_passport = self.old_passport(salt, &record);
                let mut r = self.rng(salt, 2);
                let presence = r.below(100);
                let present = [presence < 75, presence >= 30];
                for (s, source) in SOURCES.iter().enumerate() {
                    if !present[s] {
                        continue;
                    }
                    let copies = if r.percent(3) { 2 } else { 1 };
                    for c in 0..copies {
                        let mut vr = self.rng(salt, 10 + s as u64 * 2 + c);
                        let before = maiden.as_ref().filter(|_| n == 0 && vr.percent(40));
                        let mut rec =
                            vary(&mut vr, before.unwrap_or(&record), old_passport.as_ref());
                        if self.clerks {
                            let mut cr = self.rng(salt, 40 + s as u64 * 2 + c);
                            crate::clerks::vary(&mut cr, &mut rec);
                        }
                        counters[s] += 1;
                        out.push(TruthRecord {
                            source,
                            source_id: source_id(s, counters[s]),
                            person: person.clone(),
                            group: group.clone(),
                            record: rec,
                        });
                    }
                }
            }
        }
        out
    }

    /// A twin: same surname, patronymic, birth date and sex, another first
    /// name; documents of the same series with the next number; own SNILS
    /// and OMS; often the family phone.
    fn twin(&self, p: u64, base: &PatientRecord) -> PatientRecord {
        let mut r = self.rng(p, 3);
        let other = self.base.patient(COMPANION_OFFSET + p).record;
        let mut twin = base.clone();
        let male = base.sex == Some(Sex::Male);
        loop {
            let first = if male {
                r.pick(names::MALE_NAMES).0
            } else {
                *r.pick(names::FEMALE_NAMES)
            };
            if Some(first) != base.first_name.as_deref() {
                twin.first_name = Some(first.to_string());
                break;
            }
        }
        for d in &mut twin.documents {
            let n: u64 = d.number.parse().unwrap_or(0);
            if d.number.len() == 6 && d.number.bytes().all(|b| b.is_ascii_digit()) {
                d.number = format!("{:06}", (n + 1) % 1_000_000);
            } else {
                d.number = other
                    .documents
                    .first()
                    .map(|o| o.number.clone())
                    .unwrap_or_else(|| format!("{:06}", r.below(1_000_000)));
            }
        }
        twin.snils = other.snils;
        twin.oms_policy = other.oms_policy;
        twin.emails = other.emails;
        if !r.percent(60) {
            twin.phones = other.phones;
        }
        twin
    }

    /// A namesake: same full name, birth date and sex; documents, SNILS,
    /// OMS, phones, e-mail of their own (passport of the same period).
    fn namesake(&self, p: u64, base: &PatientRecord) -> PatientRecord {
        let mut r = self.rng(p, 4);
        let other = self.base.patient(COMPANION_OFFSET + p).record;
        let birth = base.birth_date.expect("generated birth date");
        let age = crate::age_at(birth, REFERENCE_DATE);
        let (_, documents) = crate::documents(&mut r, birth, age);
        PatientRecord {
            documents,
            snils: other.snils,
            oms_policy: other.oms_policy,
            phones: other.phones,
            emails: other.emails,
            business_unit: other.business_unit,
            ..base.clone()
        }
    }

    /// A family member: someone else with the same surname (in their sex's
    /// form) sharing the phone and/or the e-mail.
    fn family(&self, p: u64, base: &PatientRecord) -> PatientRecord {
        let mut r = self.rng(p, 5);
        let mut other = self.base.patient(COMPANION_OFFSET + p).record;
        if let Some(pair) = names::SURNAMES.iter().find(|(m, f)| {
            Some(*m) == base.last_name.as_deref() || Some(*f) == base.last_name.as_deref()
        }) {
            other.last_name = Some(
                if other.sex == Some(Sex::Male) {
                    pair.0
                } else {
                    pair.1
                }
                .to_string(),
            );
        }
        let phone = r.percent(70) && !base.phones.is_empty();
        if phone {
            other.phones = base.phones.clone();
        }
        if !phone || r.percent(40) {
            other.emails = base.emails.clone();
        }
        other
    }

    /// For 10% of adults with a passport: the passport they had before the
    /// last replacement (at 14 before 20, at 20 before 45), if it was issued
    /// after 1997 (when this passport started).
    fn old_passport(&self, salt: u64, record: &PatientRecord) -> Option<IdentityDocument> {
        let mut r = self.rng(salt, 6);
        if !r.percent(10) {
            return None;
        }
        let birth = record.birth_date?;
        let current = record
            .documents
            .iter()
            .find(|d| d.doc_type == DocumentType::PASSPORT)?;
        let age = crate::age_at(birth, REFERENCE_DATE);
        let previous = match age {
            45.. => 20,
            20..=44 => 14,
            _ => return None,
        };
        let year = birth.year() + previous + r.below(2) as i32;
        if year < 1997 {
            return None;
        }
        let region = current
            .series
            .as_deref()
            .map_or("45", |s| &s[..2])
            .to_string();
        Some(IdentityDocument {
            series: Some(format!("{region}{:02}", year.rem_euclid(100))),
            number: format!("{:06}", r.between(1, 999_999)),
            ..current.clone()
        })
    }
}

fn source_id(source: usize, n: u64) -> String {
    match source {
        0 => format!(
            "{}/{}{:02}",
            10_000 + n,
            char::from(b'A' + (mix64(n) % 26) as u8),
            n % 100
        ),
        _ => n.to_string(),
    }
}

/// One source's record of a person: typos, spelling and format variants,
/// missing fields, the old passport.
fn vary(
    r: &mut Rng,
    base: &PatientRecord,
    old_passport: Option<&IdentityDocument>,
) -> PatientRecord {
    let mut rec = base.clone();
    let upper = r.percent(8);
    let yo = r.percent(30);
    let name = |s: &Option<String>, typo: bool, r: &mut Rng| -> Option<String> {
        let mut s = s.clone()?;
        if typo {
            s = misspell(r, &s);
        }
        if yo {
            s = s.replace('ё', "е").replace('Ё', "Е");
        }
        if upper {
            s = s.to_uppercase();
        }
        Some(s)
    };
    let last_typo = r.percent(3);
    rec.last_name = name(&base.last_name, last_typo, r);
    if r.percent(3) {
        // A Latin look-alike typed into the name; the extractor's
        // normalization folds it back.
        if let Some(l) = &rec.last_name {
            let raw = l.replacen('о', "o", 1).replacen('а', "a", 1);
            rec.last_name = normalize::name(&raw);
        }
    }
    let first_typo = r.percent(1);
    rec.first_name = name(&base.first_name, first_typo, r);
    let middle_typo = r.percent(1);
    rec.middle_name = if r.percent(3) {
        None
    } else {
        name(&base.middle_name, middle_typo, r)
    };
    if let Some(b) = base.birth_date {
        if r.percent(1) && b.day() <= 12 && b.day() != b.month() {
            rec.birth_date = NaiveDate::from_ymd_opt(b.year(), b.day(), b.month());
        }
    }
    // Documents, written in one of the ways sources write them, through the
    // shared normalization.
    rec.documents = if r.percent(5) {
        Vec::new()
    } else {
        let use_old = old_passport.is_some() && r.percent(40);
        base.documents
            .iter()
            .map(|d| match old_passport {
                Some(old) if use_old && d.doc_type == DocumentType::PASSPORT => old.clone(),
                _ => d.clone(),
            })
            .filter_map(|d| reformat_document(r, &d))
            .collect()
    };
    rec.snils = if r.percent(10) {
        None
    } else {
        base.snils.as_ref().and_then(|s| {
            let v = &s.value;
            let raw = if v.len() == 11 && r.percent(50) {
                format!("{}-{}-{} {}", &v[..3], &v[3..6], &v[6..9], &v[9..])
            } else {
                v.clone()
            };
            normalize::snils(&raw)
        })
    };
    if r.percent(20) {
        rec.oms_policy = None;
    }
    rec.phones = base
        .phones
        .iter()
        .filter_map(|p| {
            if r.percent(10) {
                return None;
            }
            let v = &p.number.value;
            let raw = match r.below(3) {
                0 if v.len() == 11 => {
                    format!("+7 ({}) {}-{}-{}", &v[1..4], &v[4..7], &v[7..9], &v[9..])
                }
                1 if v.len() == 11 => {
                    format!("8-{}-{}-{}-{}", &v[1..4], &v[4..7], &v[7..9], &v[9..])
                }
                _ => v.clone(),
            };
            Some(proto::Phone {
                number: normalize::phone(&raw)?,
                preferred: p.preferred,
            })
        })
        .collect();
    rec.emails = base
        .emails
        .iter()
        .filter_map(|e| {
            if r.percent(25) {
                return None;
            }
            let raw = if r.percent(20) {
                e.address.value.to_uppercase()
            } else {
                e.address.value.clone()
            };
            Some(proto::Email {
                address: normalize::email(&raw)?,
                kind: e.kind,
            })
        })
        .collect();
    rec
}

fn reformat_document(r: &mut Rng, d: &IdentityDocument) -> Option<IdentityDocument> {
    let series = d.series.clone().unwrap_or_default();
    let (raw_series, raw_number) = match (d.doc_type, r.below(3)) {
        (DocumentType::PASSPORT, 0) if series.len() == 4 => (
            Some(format!("{} {}", &series[..2], &series[2..])),
            d.number.clone(),
        ),
        (DocumentType::PASSPORT, 1) => (None, format!("{series} {}", d.number)),
        (DocumentType::BIRTH_CERTIFICATE, 0) => (Some(series.replace('-', " ")), d.number.clone()),
        (DocumentType::BIRTH_CERTIFICATE, 1) => (Some(series.to_lowercase()), d.number.clone()),
        _ => (d.series.clone(), d.number.clone()),
    };
    normalize::document(d.doc_type, None, raw_series.as_deref(), Some(&raw_number))
}

/// A typo: one inner letter replaced by a neighbouring letter of the
/// alphabet, dropped, or swapped with the next.
fn misspell(r: &mut Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 4 {
        return s.to_string();
    }
    let i = 1 + r.below(chars.len() as u64 - 2) as usize;
    match r.below(3) {
        0 => {
            let c = chars[i];
            chars[i] = match c {
                'а'..='ю' => char::from_u32(c as u32 + 1).unwrap_or(c),
                'я' => 'ю',
                other => other,
            };
        }
        1 => {
            chars.remove(i);
        }
        _ => chars.swap(i, i + 1),
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_has_every_kind() {
        let g = TruthGenerator::new(7);
        let a = g.records(3000);
        assert_eq!(a, g.records(3000));
        let groups = |k: &str| {
            a.iter()
                .filter(|r| r.group.as_deref().is_some_and(|g| g.starts_with(k)))
                .count()
        };
        assert!(groups("twin") > 0 && groups("namesake") > 0 && groups("family") > 0);
        let mut ids: Vec<_> = a.iter().map(|r| (r.source, r.source_id.clone())).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len(), "source ids are unique");
        assert!(a.len() > 4000);
    }

    #[test]
    fn clerks_add_every_failure_class() {
        let plain = TruthGenerator::new(7).records(3000);
        let g = TruthGenerator::new(7).with_clerks();
        let a = g.records(3000);
        assert_eq!(a, g.records(3000));
        assert_ne!(a, plain);
        let count = |f: &dyn Fn(&TruthRecord) -> bool| a.iter().filter(|r| f(r)).count();
        let household = count(&|r| {
            r.group
                .as_deref()
                .is_some_and(|g| g.starts_with("household"))
        });
        let initials = count(&|r| {
            r.record
                .middle_name
                .as_deref()
                .is_some_and(|m| m.chars().count() <= 2)
        });
        let name_only = count(&|r| {
            r.record.middle_name.is_none()
                && r.record.phones.is_empty()
                && r.record.emails.is_empty()
                && r.record.snils.is_none()
        });
        let unreadable = count(&|r| r.record.documents.iter().any(|d| d.problem.is_some()));
        assert!(
            household > 50 && initials > 50 && name_only > 100,
            "{household} {initials} {name_only}"
        );
        assert!(unreadable > 0);
        // One-digit typos: two records of one person holding passports whose
        // numbers differ in exactly one digit (same series).
        let mut by_person: std::collections::HashMap<&str, Vec<&IdentityDocument>> =
            Default::default();
        for r in &a {
            let passports = r
                .record
                .documents
                .iter()
                .filter(|d| d.doc_type == DocumentType::PASSPORT);
            by_person.entry(&r.person).or_default().extend(passports);
        }
        let typos = by_person
            .values()
            .filter(|docs| {
                docs.iter().any(|x| {
                    docs.iter().any(|y| {
                        x.series == y.series
                            && x.number.len() == y.number.len()
                            && x.number
                                .bytes()
                                .zip(y.number.bytes())
                                .filter(|(p, q)| p != q)
                                .count()
                                == 1
                    })
                })
            })
            .count();
        assert!(typos > 10, "{typos}");
        // Married women: one person's records under two surnames that begin
        // differently, with passports of different series.
        let mut of_person: std::collections::HashMap<&str, Vec<&PatientRecord>> =
            Default::default();
        for r in a.iter().filter(|r| r.record.sex == Some(Sex::Female)) {
            of_person.entry(&r.person).or_default().push(&r.record);
        }
        let surname = |r: &PatientRecord| r.last_name.as_deref().map(|l| l.to_lowercase());
        let series = |r: &PatientRecord| {
            r.documents
                .iter()
                .find(|d| d.doc_type == DocumentType::PASSPORT)
                .and_then(|d| d.series.clone())
        };
        let married = of_person
            .values()
            .filter(|records| {
                records.iter().any(|x| {
                    records.iter().any(|y| {
                        surname(x)
                            .zip(surname(y))
                            .is_some_and(|(p, q)| p.get(..4) != q.get(..4))
                            && series(x).zip(series(y)).is_some_and(|(p, q)| p != q)
                    })
                })
            })
            .count();
        assert!(married > 5, "{married}");
    }
}
