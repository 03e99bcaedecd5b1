//! What the rules compare: a source record reduced to comparable forms, and
//! its blocking keys.
//!
//! Names are compared case-blind, with `ё` read as `е`, and with Latin
//! look-alike letters read as Cyrillic (also in words written entirely in
//! look-alikes, such as `CEMEHOB`, which the shared normalization leaves
//! Latin because it cannot know). Identifiers are used only when their
//! normalization found them valid (a SNILS or OMS number is checked again
//! here): an invalid SNILS, OMS number or document never links anything.

use chrono::{Datelike, NaiveDate};
use proto::normalize::fold_lookalikes_to_cyrillic;
use proto::{DocumentType, Email, IdentityDocument, Phone};
use sqlx::types::Json;

/// A record as the matcher reads it from `source_records`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub source: String,
    pub source_id: String,
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<String>,
    pub documents: Json<Vec<IdentityDocument>>,
    pub snils: Option<String>,
    pub snils_valid: Option<bool>,
    pub oms_policy: Option<String>,
    pub oms_policy_valid: Option<bool>,
    pub phones: Json<Vec<Phone>>,
    pub emails: Json<Vec<Email>>,
    pub deleted: bool,
}

impl SourceRow {
    /// The row the loader stores for `record` (tests, in-memory
    /// evaluations): validity flags as the record's own checks give them.
    pub fn of_record(source: &str, source_id: &str, record: &proto::PatientRecord) -> SourceRow {
        let r = record;
        SourceRow {
            source: source.into(),
            source_id: source_id.into(),
            last_name: r.last_name.clone(),
            first_name: r.first_name.clone(),
            middle_name: r.middle_name.clone(),
            birth_date: r.birth_date,
            sex: r.sex.map(|s| s.code().to_string()),
            documents: Json(r.documents.clone()),
            snils: r.snils.as_ref().map(|c| c.value.clone()),
            snils_valid: r.snils.as_ref().map(|c| c.is_valid()),
            oms_policy: r.oms_policy.as_ref().map(|c| c.value.clone()),
            oms_policy_valid: r.oms_policy.as_ref().map(|c| c.is_valid()),
            phones: Json(r.phones.clone()),
            emails: Json(r.emails.clone()),
            deleted: false,
        }
    }
}

/// A `source_records` row read with [`row_columns!`] as a [`SourceRow`];
/// `None` when its stored content does not decode (content the loader
/// never writes: a bug or a hand edit). Such a record is left out of
/// whole-table reads (the blocking index, a full re-match) rather than
/// failing them, which would stop all matching; its own change fails in
/// its batch and is set aside as a dead letter (`engine::quarantine`).
/// Logged by source and source id and the column's name only: a decoding
/// error's text may quote the stored value.
pub fn decode_row(row: &sqlx::postgres::PgRow) -> Option<SourceRow> {
    use sqlx::{FromRow as _, Row as _};
    match SourceRow::from_row(row) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let column = match &error {
                sqlx::Error::ColumnDecode { index, .. } => index.as_str(),
                _ => "?",
            };
            let source: String = row.try_get("source").unwrap_or_default();
            let source_id: String = row.try_get("source_id").unwrap_or_default();
            tracing::warn!(%source, %source_id, column, "stored record does not decode; left out");
            metrics::counter!("matcher_records_undecodable_total").increment(1);
            None
        }
    }
}

/// The columns [`SourceRow`] reads, as a literal for `concat!`.
#[macro_export]
macro_rules! row_columns {
    () => {
        "source, source_id, last_name, first_name, middle_name, birth_date, \
         sex, documents, snils, snils_valid, oms_policy, oms_policy_valid, phones, emails, \
         deleted_at IS NOT NULL AS deleted"
    };
}

/// A valid identity document in canonical text form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Doc {
    pub doc_type: u16,
    pub series: String,
    pub number: String,
}

impl Doc {
    pub fn key(&self) -> String {
        proto::identifier_key::document(self.doc_type, &self.series, &self.number)
    }

    /// For a Russian internal passport, the year its blank was made (the last
    /// two digits of the series), as a four-digit year near `birth`.
    pub fn passport_year(&self, birth: Option<NaiveDate>) -> Option<i32> {
        if self.doc_type != DocumentType::PASSPORT.0 || self.series.len() != 4 {
            return None;
        }
        let yy: i32 = self.series[2..].parse().ok()?;
        let birth_year = birth?.year();
        // The first century year at or after the 14th birthday - 1.
        let mut year = (birth_year + 13) / 100 * 100 + yy;
        if year < birth_year + 13 {
            year += 100;
        }
        Some(year)
    }
}

/// The comparable form of one record.
#[derive(Debug, Clone)]
pub struct Features {
    pub source: String,
    pub source_id: String,
    /// Surname, folded; `parts` holds each half of a double surname.
    pub last: Option<String>,
    pub last_parts: Vec<String>,
    pub first: Option<String>,
    pub middle: Option<String>,
    pub birth: Option<NaiveDate>,
    /// `Some('M' | 'F')` when known.
    pub sex: Option<char>,
    pub docs: Vec<Doc>,
    pub snils: Option<String>,
    pub oms: Option<String>,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
}

impl Features {
    pub fn of(row: &SourceRow) -> Features {
        let last = row.last_name.as_deref().and_then(fold_name);
        let last_parts = last
            .as_deref()
            .map(|l| {
                l.split(['-', ' '])
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut docs: Vec<Doc> = row
            .documents
            .0
            .iter()
            .filter(|d| d.problem.is_none() && d.doc_type.0 != 0 && !d.number.is_empty())
            .map(|d| Doc {
                doc_type: d.doc_type.0,
                series: d.series.clone().unwrap_or_default(),
                number: d.number.clone(),
            })
            .collect();
        docs.sort();
        docs.dedup();
        let mut phones: Vec<String> = row
            .phones
            .0
            .iter()
            .filter(|p| p.number.is_valid())
            .map(|p| p.number.value.clone())
            .collect();
        phones.sort();
        phones.dedup();
        let mut emails: Vec<String> = row
            .emails
            .0
            .iter()
            .filter(|e| e.address.is_valid())
            .map(|e| e.address.value.to_lowercase())
            .collect();
        emails.sort();
        emails.dedup();
        Features {
            source: row.source.clone(),
            source_id: row.source_id.clone(),
            last,
            last_parts,
            first: row.first_name.as_deref().and_then(fold_name),
            middle: row.middle_name.as_deref().and_then(fold_name),
            birth: row.birth_date,
            sex: match row.sex.as_deref() {
                Some("M") => Some('M'),
                Some("F") => Some('F'),
                _ => None,
            },
            docs,
            snils: checked(&row.snils, row.snils_valid, proto::normalize::snils),
            oms: checked(
                &row.oms_policy,
                row.oms_policy_valid,
                proto::normalize::oms_policy,
            ),
            phones,
            emails,
        }
    }

    /// The blocking keys: every record that could match this one shares at
    /// least one of them (identifiers; surname part and birth date; first
    /// name, patronymic and birth date, for surname typos; the two
    /// initials and birth date; phone; e-mail).
    /// Birth dates are keyed as year + the smaller and larger of day and
    /// month, so that a day/month swap keeps the key.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(8);
        for d in &self.docs {
            keys.push(d.key());
        }
        if let Some(s) = &self.snils {
            keys.push(proto::identifier_key::snils(s));
        }
        if let Some(o) = &self.oms {
            keys.push(proto::identifier_key::oms(o));
        }
        if let Some(b) = self.birth {
            let (lo, hi) = if b.day() < b.month() {
                (b.day(), b.month())
            } else {
                (b.month(), b.day())
            };
            let bk = format!("{}-{lo}-{hi}", b.year());
            for p in &self.last_parts {
                keys.push(format!("n:{p}|{bk}"));
            }
            if let Some(f) = &self.first {
                keys.push(format!(
                    "f:{f}|{}|{bk}",
                    self.middle.as_deref().unwrap_or("")
                ));
            }
            // The initials of first name and surname, in either order,
            // with the birth date: a pair with typos in both names, or
            // with first name and surname exchanged, and an identifier
            // typed differently shares no other key.
            let initial = |n: &Option<String>| n.as_deref().and_then(|n| n.chars().next());
            if let (Some(x), Some(y)) = (initial(&self.first), initial(&self.last)) {
                let (x, y) = if x <= y { (x, y) } else { (y, x) };
                keys.push(format!("i:{x}{y}|{bk}"));
            }
        }
        for p in &self.phones {
            keys.push(proto::identifier_key::phone(p));
        }
        for e in &self.emails {
            keys.push(proto::identifier_key::email(e));
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// An identifier the loader found valid and that is valid by `normalize`
/// here too (its checksum): a value stored valid by hand or by a bug never
/// links anything.
fn checked(
    value: &Option<String>,
    valid: Option<bool>,
    normalize: fn(&str) -> Option<proto::normalize::Checked>,
) -> Option<String> {
    let value = value.as_ref().filter(|_| valid == Some(true))?;
    normalize(value)
        .filter(|c| c.is_valid() && c.value == *value)
        .map(|c| c.value)
}

/// A name part as compared: look-alikes folded, lowercase, `ё` as `е`.
pub fn fold_name(raw: &str) -> Option<String> {
    let normalized = proto::normalize::name(raw)?;
    let folded = fold_lookalikes_to_cyrillic(&normalized);
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_inclusive(['-', ' ']) {
        // A word made only of letters that have a Cyrillic look-alike, in a
        // record of a Cyrillic-writing source, is a Cyrillic word typed on
        // the wrong keyboard layout (`CEMEHOB`).
        let core = word.trim_end_matches(['-', ' ']);
        let all_lookalike = !core.is_empty()
            && core.chars().all(|c| {
                matches!(
                    c,
                    'A' | 'B' | 'C' | 'E' | 'H' | 'K' | 'M' | 'O' | 'P' | 'T' | 'X' | 'Y'
                )
            });
        for c in word.chars() {
            let c = if all_lookalike {
                fold_lookalikes_to_cyrillic(&format!("{c}я"))
                    .chars()
                    .next()
                    .unwrap_or(c)
            } else {
                c
            };
            for l in c.to_lowercase() {
                out.push(if l == 'ё' { 'е' } else { l });
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_yo_and_lookalikes() {
        assert_eq!(fold_name("Соловьёв").as_deref(), Some("соловьев"));
        assert_eq!(fold_name("СОЛОВЬЕВ").as_deref(), Some("соловьев"));
        assert_eq!(fold_name("Ивaнов").as_deref(), Some("иванов"));
        assert_eq!(fold_name("CEMEHOB").as_deref(), Some("семенов"));
        assert_eq!(fold_name("Smith").as_deref(), Some("smith"));
        assert_eq!(
            fold_name("Петров - Водкин").as_deref(),
            Some("петров-водкин")
        );
    }

    #[test]
    fn passport_year_is_read_near_the_birth_year() {
        let d = Doc {
            doc_type: 1,
            series: "4504".into(),
            number: "123456".into(),
        };
        let b = NaiveDate::from_ymd_opt(1990, 3, 1);
        assert_eq!(d.passport_year(b), Some(2004));
        let b = NaiveDate::from_ymd_opt(1960, 3, 1);
        assert_eq!(d.passport_year(b), Some(2004));
        let d = Doc {
            series: "4597".into(),
            ..d
        };
        assert_eq!(d.passport_year(b), Some(1997));
    }
}
