//! The failure classes found in clinics' real data, for
//! [`TruthGenerator::with_clerks`](crate::truth::TruthGenerator::with_clerks):
//! records written as clerks type them, persons with nothing but a name and
//! a birth date, household members. Every raw value goes through
//! `proto::normalize`, as an extractor's would: what it recovers is
//! canonical, what it cannot read stays raw with its problem.
//!
//! | what | rate |
//! |---|---|
//! | a sibling in the household: same surname and patronymic (in their sex's form), own first name, born 1–6 years apart, same phone and e-mail | 3% of persons (group `household:<p>`) |
//! | a woman married after her records began: 40% of her records hold her maiden surname and her passport of 20, the rest the married surname and the passport issued at the wedding (at 23 or later) | 25% of women aged 24–44 with a passport |
//! | a foreigner known by name and birth date only: no patronymic, phone, e-mail, SNILS or OMS; half hold a foreign passport (`KA3394495` glued, `KA` + `3394495` split, the series in Cyrillic look-alikes) | 3% of persons |
//! | the patronymic as an initial (`С.` or `С`) | 4% of records with one |
//! | a phone with words or an extension (`8(925)123-45-67 мобильный`, `моб. …`, `… (мама)`, `… доб. 12`) | 10% of phones |
//! | a passport in a clerk's layout: `№ 845922`, the whole passport in the series field, both glued in the number field, the series split across the fields (`97` + `20 520880`) | 15% of passports |
//! | a passport with a letter `О` typed for a zero (unreadable, kept raw) | 0.5% of passports with a zero |
//! | one digit of a document's number mistyped | 2% of records with a passport |

use chrono::Datelike;
use proto::{normalize, DocumentType, IdentityDocument, PatientRecord, Phone, Sex};

use crate::names;
use crate::rng::Rng;

/// A sibling of `base` living in the same household, made from `other` (a
/// generated stranger): `base`'s surname and father, `other`'s sex, first
/// name (another than `base`'s), documents and identifiers; born one to six
/// years apart; the household's phone and e-mail.
pub(crate) fn household(r: &mut Rng, base: &PatientRecord, other: PatientRecord) -> PatientRecord {
    let male = other.sex == Some(Sex::Male);
    let mut sibling = other;
    if let Some(pair) = names::SURNAMES.iter().find(|(m, f)| {
        Some(*m) == base.last_name.as_deref() || Some(*f) == base.last_name.as_deref()
    }) {
        sibling.last_name = Some(if male { pair.0 } else { pair.1 }.to_string());
    }
    if let Some(father) = names::MALE_NAMES.iter().find(|(_, m, f)| {
        Some(*m) == base.middle_name.as_deref() || Some(*f) == base.middle_name.as_deref()
    }) {
        sibling.middle_name = Some(if male { father.1 } else { father.2 }.to_string());
    }
    if let Some(b) = base.birth_date {
        // One to six years apart; a younger sibling not yet born by the
        // reference date is an older one.
        let apart = chrono::Duration::days((365 * r.between(1, 5) + r.below(365)) as i64);
        let younger = b + apart;
        sibling.birth_date = Some(if r.percent(50) && younger < crate::REFERENCE_DATE {
            younger
        } else {
            b - apart
        });
    }
    // Parents do not give two children one name.
    while sibling.first_name == base.first_name {
        let name = if male {
            r.pick(names::MALE_NAMES).0
        } else {
            *r.pick(names::FEMALE_NAMES)
        };
        sibling.first_name = Some(name.to_string());
    }
    sibling.phones = base.phones.clone();
    sibling.emails = base.emails.clone();
    sibling
}

/// A woman who took her husband's surname at marriage: her records from
/// before hold her maiden surname and the passport of 20, the later ones the
/// married surname and the passport issued for it (a replacement off the
/// ages of 14, 20 and 45, as one after a loss is).
pub(crate) struct Married {
    pub(crate) now: PatientRecord,
    pub(crate) before: PatientRecord,
}

/// `base` as a woman married at 23 or later, if she is a woman of 24–44
/// with a passport and a surname of the lists (`None` otherwise).
pub(crate) fn married(r: &mut Rng, base: &PatientRecord) -> Option<Married> {
    let birth = base.birth_date?;
    let age = crate::age_at(birth, crate::REFERENCE_DATE);
    if base.sex != Some(Sex::Female) || !(24..=44).contains(&age) {
        return None;
    }
    let passport = base
        .documents
        .iter()
        .position(|d| d.doc_type == DocumentType::PASSPORT)?;
    let region = base.documents[passport]
        .series
        .clone()?
        .get(..2)?
        .to_string();
    let year_of = |y: i32| format!("{region}{:02}", y.rem_euclid(100));
    let at_20 = crate::passport_issue_year(r, birth.year(), 20);
    // The wedding: past the window of the passport of 20, before today.
    let first = (birth.year() + 23).max(at_20 + 1);
    let last = crate::REFERENCE_DATE.year() - 1;
    if first > last {
        return None;
    }
    let wed = r.between(first as u64, last as u64) as i32;
    let mut before = base.clone();
    before.last_name = Some(
        names::SURNAMES[r.below(names::SURNAMES.len() as u64) as usize]
            .1
            .to_string(),
    );
    before.documents[passport].series = Some(year_of(at_20));
    before.documents[passport].number = format!("{:06}", r.between(1, 999_999));
    let mut now = base.clone();
    now.documents[passport].series = Some(year_of(wed));
    (before.last_name != base.last_name).then_some(Married { now, before })
}

/// A foreigner as clinics know one: names and birth date; no patronymic,
/// phone, e-mail, SNILS or OMS policy; in half of the cases a foreign
/// passport (two Latin letters, seven digits).
pub(crate) fn foreigner(r: &mut Rng, base: &PatientRecord) -> PatientRecord {
    let documents = if r.percent(50) {
        let mut number = String::with_capacity(9);
        number.push(char::from(b'A' + r.below(26) as u8));
        number.push(char::from(b'A' + r.below(26) as u8));
        number.push_str(&format!("{:07}", r.below(10_000_000)));
        normalize::document(DocumentType::FOREIGN_PASSPORT, None, None, Some(&number))
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    PatientRecord {
        middle_name: None,
        documents,
        snils: None,
        oms_policy: None,
        phones: Vec::new(),
        emails: Vec::new(),
        ..base.clone()
    }
}

/// One record as a clerk typed it: applied to a record already varied by
/// the truth generator (typos, formats, dropped fields).
pub(crate) fn vary(r: &mut Rng, rec: &mut PatientRecord) {
    if let Some(m) = &rec.middle_name {
        if r.percent(4) {
            let initial = m.chars().next().map(String::from).unwrap_or_default();
            let raw = if r.percent(70) {
                initial + "."
            } else {
                initial
            };
            rec.middle_name = normalize::name(&raw);
        }
    }
    for p in &mut rec.phones {
        if r.percent(10) {
            if let Some(raw) = phone_with_words(r, &p.number.value) {
                *p = Phone {
                    number: normalize::phone(&raw).unwrap_or(p.number.clone()),
                    preferred: p.preferred,
                };
            }
        }
    }
    let typo = r.percent(2);
    let mut documents = Vec::with_capacity(rec.documents.len());
    for d in &rec.documents {
        let d = if typo && d.doc_type == DocumentType::PASSPORT {
            one_digit_typo(r, d)
        } else {
            d.clone()
        };
        documents.extend(clerk_layout(r, &d));
    }
    rec.documents = documents;
}

/// A valid canonical phone (`7` + 10 digits) written with words around it
/// or an extension.
fn phone_with_words(r: &mut Rng, v: &str) -> Option<String> {
    if v.len() != 11 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (code, a, b, c) = (&v[1..4], &v[4..7], &v[7..9], &v[9..]);
    Some(match r.below(4) {
        0 => format!("8({code}){a}-{b}-{c} мобильный"),
        1 => format!("моб. 8-{code}-{a}-{b}-{c}"),
        2 => format!("+7 {code} {a} {b} {c} (мама)"),
        _ => format!("8 ({code}) {a}-{b}-{c} доб. {}", r.between(1, 999)),
    })
}

/// The document with one digit of its number replaced by another.
fn one_digit_typo(r: &mut Rng, d: &IdentityDocument) -> IdentityDocument {
    let mut digits: Vec<u8> = d.number.bytes().collect();
    let positions: Vec<usize> = (0..digits.len())
        .filter(|&i| digits[i].is_ascii_digit())
        .collect();
    if positions.is_empty() || d.problem.is_some() {
        return d.clone();
    }
    let i = positions[r.below(positions.len() as u64) as usize];
    digits[i] = b'0' + ((digits[i] - b'0') + 1 + r.below(9) as u8) % 10;
    IdentityDocument {
        number: String::from_utf8(digits).expect("ASCII digits"),
        ..d.clone()
    }
}

/// A canonical document typed again in one of the layouts clerks use, and
/// read back through the shared normalization.
fn clerk_layout(r: &mut Rng, d: &IdentityDocument) -> Option<IdentityDocument> {
    let series = d.series.clone().unwrap_or_default();
    let n = &d.number;
    let raw: (Option<String>, Option<String>) = match d.doc_type {
        DocumentType::PASSPORT if d.problem.is_none() && series.len() == 4 => {
            if n.contains('0') && r.per_mille(5) {
                (Some(series), Some(n.replacen('0', "О", 1)))
            } else if r.percent(15) {
                match r.below(4) {
                    0 => (Some(series), Some(format!("№ {n}"))),
                    1 => (Some(format!("{series} {n}")), None),
                    2 => (None, Some(format!("{series}{n}"))),
                    _ => (
                        Some(series[..2].to_string()),
                        Some(format!("{} {n}", &series[2..])),
                    ),
                }
            } else {
                return Some(d.clone());
            }
        }
        DocumentType::FOREIGN_PASSPORT if d.problem.is_none() && n.len() > 2 => {
            let (letters, digits) = n.split_at(2);
            match r.below(3) {
                0 => (Some(letters.to_string()), Some(digits.to_string())),
                1 => (
                    Some(
                        normalize::fold_lookalikes_to_cyrillic(&format!("Ж{letters}"))[2..]
                            .to_string(),
                    ),
                    Some(digits.to_string()),
                ),
                _ => return Some(d.clone()),
            }
        }
        _ => return Some(d.clone()),
    };
    normalize::document(
        d.doc_type,
        d.source_type_code.as_deref(),
        raw.0.as_deref(),
        raw.1.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    /// A sibling made from a stranger with the person's own first name, or
    /// with a birth year after the reference date, is still a sibling:
    /// another first name, born a year or more apart.
    #[test]
    fn a_sibling_has_another_name_and_is_born_years_apart() {
        let g = crate::Generator::new(3);
        for n in 0..200 {
            let mut base = g.patient(n).record;
            let other = PatientRecord {
                first_name: base.first_name.clone(),
                sex: base.sex,
                ..g.patient(10_000 + n).record
            };
            base.birth_date = NaiveDate::from_ymd_opt(2024, 3, 10);
            let sibling = household(&mut Rng::from_key(n), &base, other);
            assert_ne!(sibling.first_name, base.first_name);
            let (a, b) = (base.birth_date.unwrap(), sibling.birth_date.unwrap());
            assert!((a - b).num_days().abs() > 300, "{a} {b}");
            assert!(b < crate::REFERENCE_DATE);
        }
    }
}
