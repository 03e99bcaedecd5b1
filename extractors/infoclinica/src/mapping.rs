//! Where a `CLIENTS` row becomes a [`PatientRecord`].
//!
//! Rows are read with `stream_raw` (raw bytes, no charset decode by the
//! client) and decoded here, field by field and strictly, so that bytes
//! invalid in the declared charset spoil only their own field: it is left
//! empty and flagged in `record.issues` with the raw text (lossily decoded),
//! and the rest of the row and of the page goes on. The same holds for
//! implausible birth dates (0001-01-01, in the future) and missing names.
//! Every flagged field is counted (`infoclinica_field_issues_total`, labels
//! database, field and problem: never a value).
//!
//! The SELECT list is built from the configured column names only; the
//! portal password column is never in it.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use proto::normalize::{self, Problem};
use proto::record::FieldIssue;
use proto::{DocumentType, Email, EmailKind, PatientRecord, Phone};
use rsfbclient::RawValue;

use crate::settings::{Charset, DatabaseSettings, NoneEncoding, TableSettings};

/// What each selected column is, in SELECT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Pcode,
    Filial,
    LastName,
    FirstName,
    MiddleName,
    BirthDate,
    DocType,
    DocSeries,
    DocNumber,
    Email,
    Login,
    Snils,
    Oms,
    Phone,
}

/// How the text of one database is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextDecoding {
    Windows1251,
    Utf8,
}

impl TextDecoding {
    pub fn of(charset: Charset, none: NoneEncoding) -> Self {
        match (charset, none) {
            (Charset::Win1251, _) | (Charset::None, NoneEncoding::Windows1251) => {
                TextDecoding::Windows1251
            }
            (Charset::Utf8, _) | (Charset::None, NoneEncoding::Utf8) => TextDecoding::Utf8,
        }
    }

    /// Strict decoding. Control characters (NUL, C0 except tab and line
    /// breaks, C1) cannot belong to patient data and cannot be stored in
    /// PostgreSQL text (NUL): they make the field invalid too. The error
    /// holds the lossy text, NULs replaced, for `FieldIssue::raw`.
    pub fn decode(self, bytes: &[u8]) -> Result<String, String> {
        let decoded = match self {
            TextDecoding::Windows1251 => encoding_rs::WINDOWS_1251
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|c| c.into_owned()),
            TextDecoding::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_string),
        };
        match decoded {
            Some(s) if !s.chars().any(is_bad_control) => Ok(s),
            _ => Err(self.lossy(bytes)),
        }
    }

    fn lossy(self, bytes: &[u8]) -> String {
        let s = match self {
            TextDecoding::Windows1251 => encoding_rs::WINDOWS_1251
                .decode_without_bom_handling(bytes)
                .0
                .into_owned(),
            TextDecoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        };
        s.chars()
            .map(|c| if is_bad_control(c) { '\u{FFFD}' } else { c })
            .collect()
    }
}

fn is_bad_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFD}'
}

/// One row mapped: its PCODE and record, or why it could not be (a row
/// without a usable PCODE cannot be identified downstream; it is counted
/// and logged by position, never published).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // nearly every row is a record
pub enum Mapped {
    Record { pcode: i64, record: PatientRecord },
    Rejected { reason: &'static str },
}

/// Turns rows of one database into records.
#[derive(Debug, Clone)]
pub struct Mapper {
    database: String,
    columns: Vec<Col>,
    select_list: String,
    table: String,
    pcode_column: String,
    decoding: TextDecoding,
    business_units: BTreeMap<String, String>,
    default_business_unit: Option<String>,
}

impl Mapper {
    pub fn new(db: &DatabaseSettings) -> Mapper {
        let t: &TableSettings = &db.table;
        let mut columns = vec![
            (Col::Pcode, t.pcode.clone()),
            (Col::Filial, t.filial.clone()),
            (Col::LastName, t.last_name.clone()),
            (Col::FirstName, t.first_name.clone()),
            (Col::MiddleName, t.middle_name.clone()),
            (Col::BirthDate, t.birth_date.clone()),
            (Col::DocType, t.document_type.clone()),
            (Col::DocSeries, t.document_series.clone()),
            (Col::DocNumber, t.document_number.clone()),
            (Col::Email, t.email.clone()),
        ];
        if let Some(c) = &t.login {
            columns.push((Col::Login, c.clone()));
        }
        if let Some(c) = &t.snils {
            columns.push((Col::Snils, c.clone()));
        }
        if let Some(c) = &t.oms_policy {
            columns.push((Col::Oms, c.clone()));
        }
        columns.extend(t.phones.iter().map(|p| (Col::Phone, p.clone())));
        let select_list = columns
            .iter()
            .map(|(_, name)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Mapper {
            database: db.name.clone(),
            columns: columns.into_iter().map(|(c, _)| c).collect(),
            select_list,
            table: t.name.clone(),
            pcode_column: t.pcode.clone(),
            decoding: TextDecoding::of(db.charset, db.none_encoding),
            business_units: db.business_units.clone(),
            default_business_unit: db.default_business_unit.clone(),
        }
    }

    /// `SELECT FIRST n … WHERE PCODE > after ORDER BY PCODE`: one keyset page.
    /// Numbers are formatted by us, never taken from text.
    pub fn page_sql(&self, after: i64, limit: usize) -> String {
        format!(
            "SELECT FIRST {limit} {cols} FROM {table} WHERE {pcode} > {after} ORDER BY {pcode}",
            cols = self.select_list,
            table = self.table,
            pcode = self.pcode_column,
        )
    }

    /// The current rows of the given PCODEs (at most ~1,500: Firebird's
    /// limit of an IN list).
    pub fn rows_sql(&self, pcodes: &[i64]) -> String {
        let list = pcodes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "SELECT {cols} FROM {table} WHERE {pcode} IN ({list})",
            cols = self.select_list,
            table = self.table,
            pcode = self.pcode_column,
        )
    }

    pub fn select_list(&self) -> &str {
        &self.select_list
    }

    /// Maps one row (columns in [`Mapper::select_list`] order).
    pub fn map(&self, row: &[RawValue], today: NaiveDate) -> Mapped {
        let mut b = Builder {
            mapper: self,
            record: PatientRecord::default(),
            pcode: None,
            filial: None,
            doc_type: None,
            doc_code: None,
            series: None,
            number: None,
            phone_columns: Vec::new(),
        };
        for (col, value) in self.columns.iter().zip(row) {
            b.column(*col, value, today);
        }
        b.finish()
    }

    fn count_issue(&self, issue: &FieldIssue) {
        metrics::counter!(
            "infoclinica_field_issues_total",
            "database" => self.database.clone(),
            "field" => issue.field.clone(),
            "problem" => issue.problem.code(),
        )
        .increment(1);
    }
}

struct Builder<'m> {
    mapper: &'m Mapper,
    record: PatientRecord,
    pcode: Option<Result<i64, &'static str>>,
    filial: Option<String>,
    doc_type: Option<i64>,
    doc_code: Option<String>,
    series: Option<String>,
    number: Option<String>,
    /// Phones of each phone column, in column order.
    phone_columns: Vec<Vec<String>>,
}

impl Builder<'_> {
    fn issue(&mut self, field: &str, problem: Problem, raw: Option<String>) {
        self.record.issues.push(FieldIssue {
            field: field.to_string(),
            problem,
            raw,
        });
    }

    /// A text field: `None` when NULL or empty; flagged when undecodable.
    fn text(&mut self, field: &str, value: &RawValue) -> Option<String> {
        let s = match value {
            RawValue::Null => return None,
            RawValue::Text(bytes) => match self.mapper.decoding.decode(bytes) {
                Ok(s) => s,
                Err(lossy) => {
                    self.issue(field, Problem::BadCharacters, Some(lossy));
                    return None;
                }
            },
            RawValue::Integer(i) => i.to_string(),
            RawValue::Int128(i) => i.to_string(),
            RawValue::Floating(f) => f.to_string(),
            RawValue::Boolean(b) => b.to_string(),
            RawValue::Timestamp(t) => t.to_string(),
        };
        let trimmed = s.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    fn integer(&mut self, field: &str, value: &RawValue) -> Option<i64> {
        match value {
            RawValue::Integer(i) => Some(*i),
            RawValue::Int128(i) => i64::try_from(*i).ok(),
            RawValue::Null => None,
            other => {
                let text = self.text(field, other)?;
                match text.parse() {
                    Ok(i) => Some(i),
                    Err(_) => {
                        self.issue(field, Problem::BadFormat, Some(text));
                        None
                    }
                }
            }
        }
    }

    fn column(&mut self, col: Col, value: &RawValue, today: NaiveDate) {
        match col {
            Col::Pcode => {
                self.pcode = Some(match value {
                    RawValue::Integer(i) if *i > 0 => Ok(*i),
                    RawValue::Int128(i) if *i > 0 && *i <= i64::MAX as i128 => Ok(*i as i64),
                    RawValue::Null => Err("pcode is NULL"),
                    _ => Err("pcode is not a positive integer"),
                })
            }
            Col::Filial => self.filial = self.text("business_unit", value),
            Col::LastName => self.record.last_name = self.name("last_name", value, true),
            Col::FirstName => self.record.first_name = self.name("first_name", value, true),
            Col::MiddleName => self.record.middle_name = self.name("middle_name", value, false),
            Col::BirthDate => self.record.birth_date = self.birth_date(value, today),
            Col::DocType => {
                self.doc_type = self.integer("document_type", value);
                self.doc_code = self.doc_type.map(|c| c.to_string());
            }
            Col::DocSeries => self.series = self.text("document_series", value),
            Col::DocNumber => self.number = self.text("document_number", value),
            Col::Email => {
                if let Some(address) = self
                    .text("emails", value)
                    .and_then(|s| normalize::email(&s))
                {
                    self.record.emails.push(Email {
                        address,
                        kind: EmailKind::Contact,
                    });
                }
            }
            Col::Login => {
                if let Some(address) = self
                    .text("emails", value)
                    .and_then(|s| normalize::email(&s))
                {
                    self.record.emails.push(Email {
                        address,
                        kind: EmailKind::Login,
                    });
                }
            }
            Col::Snils => {
                self.record.snils = self.text("snils", value).and_then(|s| normalize::snils(&s))
            }
            Col::Oms => {
                self.record.oms_policy = self
                    .text("oms_policy", value)
                    .and_then(|s| normalize::oms_policy(&s))
            }
            Col::Phone => {
                let phones = self
                    .text("phones", value)
                    .map(|s| {
                        normalize::split_phones(&s)
                            .into_iter()
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                self.phone_columns.push(phones);
            }
        }
    }

    fn name(&mut self, field: &str, value: &RawValue, required: bool) -> Option<String> {
        let was_flagged = self.record.issues.len();
        let name = self.text(field, value).and_then(|s| normalize::name(&s));
        if name.is_none() && required && self.record.issues.len() == was_flagged {
            self.issue(field, Problem::Missing, None);
        }
        name
    }

    fn birth_date(&mut self, value: &RawValue, today: NaiveDate) -> Option<NaiveDate> {
        let date = match value {
            RawValue::Null => return None,
            RawValue::Timestamp(t) => t.date(),
            other => {
                let text = self.text("birth_date", other)?;
                match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                    Ok(d) => d,
                    Err(_) => {
                        self.issue("birth_date", Problem::BadFormat, Some(text));
                        return None;
                    }
                }
            }
        };
        if date < proto::envelope::earliest_birth_date() || date > today {
            self.issue("birth_date", Problem::OutOfRange, Some(date.to_string()));
            return None;
        }
        Some(date)
    }

    fn finish(mut self) -> Mapped {
        let pcode = match self.pcode {
            Some(Ok(p)) => p,
            Some(Err(reason)) => return Mapped::Rejected { reason },
            None => {
                return Mapped::Rejected {
                    reason: "no pcode column",
                }
            }
        };

        // FILIAL → business unit.
        let unit = self
            .filial
            .as_ref()
            .and_then(|f| self.mapper.business_units.get(f))
            .or(self.mapper.default_business_unit.as_ref())
            .cloned();
        if unit.is_none() {
            let raw = self.filial.clone();
            self.issue("business_unit", Problem::Missing, raw);
        }
        self.record.business_unit = unit;

        // The document: its type code, never "passport" by default.
        let doc_type = DocumentType::from_infoclinica(self.doc_type);
        if let Some(doc) = normalize::document(
            doc_type,
            self.doc_code.as_deref(),
            self.series.as_deref(),
            self.number.as_deref(),
        ) {
            self.record.documents.push(doc);
        }

        // Phones: all kept, each once; the last non-empty column's first
        // number is the preferred one (the old system's PHONE3, else PHONE2,
        // else PHONE1).
        let preferred_column = self.phone_columns.iter().rposition(|p| !p.is_empty());
        for (i, column) in self.phone_columns.iter().enumerate() {
            for (j, raw) in column.iter().enumerate() {
                let Some(number) = normalize::phone(raw) else {
                    continue;
                };
                let preferred = Some(i) == preferred_column && j == 0;
                match self.record.phones.iter_mut().find(|p| p.number == number) {
                    Some(existing) => existing.preferred |= preferred,
                    None => self.record.phones.push(Phone { number, preferred }),
                }
            }
        }
        // Preferred first, then in column order.
        self.record.phones.sort_by_key(|p| !p.preferred);

        for issue in &self.record.issues {
            self.mapper.count_issue(issue);
        }
        Mapped::Record {
            pcode,
            record: self.record,
        }
    }
}

/// Today's date, the upper bound of a plausible birth date.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> Mapper {
        let mut db = DatabaseSettings {
            database: "x".into(),
            default_business_unit: Some("main".into()),
            ..Default::default()
        };
        db.business_units.insert("7".into(), "branch-7".into());
        Mapper::new(&db)
    }

    fn text(s: &str) -> RawValue {
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(s);
        RawValue::text_bytes(&bytes)
    }

    fn date(y: i32, m: u32, d: u32) -> RawValue {
        RawValue::Timestamp(NaiveDate::from_ymd_opt(y, m, d).unwrap().into())
    }

    /// PCODE, FILIAL, LASTNAME, FIRSTNAME, MIDNAME, BDATE, PASPTYPE, PASPSER,
    /// PASPNUM, CLMAIL, CLLOGIN, PHONE1..3.
    fn row(last: RawValue, bdate: RawValue) -> Vec<RawValue> {
        vec![
            RawValue::Integer(42),
            RawValue::Integer(7),
            last,
            text("Иван"),
            RawValue::Null,
            bdate,
            RawValue::Integer(1),
            text("45 06"),
            text("012345"),
            text("Ivanov@Mail.ru"),
            text("ivanov@portal.ru"),
            text("8 (912) 345-67-89"),
            RawValue::Null,
            text("+7 912 000-11-22"),
        ]
    }

    fn record(m: Mapped) -> PatientRecord {
        match m {
            Mapped::Record { pcode, record } => {
                assert_eq!(pcode, 42);
                record
            }
            Mapped::Rejected { reason } => panic!("rejected: {reason}"),
        }
    }

    #[test]
    fn select_list_never_has_the_password() {
        let m = mapper();
        assert!(!m.page_sql(0, 10).to_uppercase().contains("CLPASSWORD"));
        assert_eq!(
            m.page_sql(5, 10),
            "SELECT FIRST 10 PCODE, FILIAL, LASTNAME, FIRSTNAME, MIDNAME, BDATE, PASPTYPE, \
             PASPSER, PASPNUM, CLMAIL, CLLOGIN, PHONE1, PHONE2, PHONE3 FROM CLIENTS \
             WHERE PCODE > 5 ORDER BY PCODE"
        );
    }

    #[test]
    fn maps_a_good_row() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let r = record(mapper().map(&row(text("Ёлкина-Петрова"), date(1980, 2, 29)), today));
        assert_eq!(r.last_name.as_deref(), Some("Ёлкина-Петрова"));
        assert_eq!(r.business_unit.as_deref(), Some("branch-7"));
        assert_eq!(r.birth_date, NaiveDate::from_ymd_opt(1980, 2, 29));
        assert_eq!(r.documents.len(), 1);
        assert_eq!(r.documents[0].doc_type, DocumentType::PASSPORT);
        assert_eq!(r.documents[0].series.as_deref(), Some("4506"));
        assert_eq!(r.documents[0].number, "012345", "leading zero kept");
        assert_eq!(r.phones.len(), 2);
        assert!(r.phones[0].preferred);
        assert_eq!(
            r.phones[0].number.value, "79120001122",
            "PHONE3 is preferred"
        );
        assert_eq!(r.emails.len(), 2);
        assert_eq!(r.emails[1].kind, EmailKind::Login);
        assert!(r.issues.is_empty(), "{:?}", r.issues);
    }

    #[test]
    fn flags_bad_fields_and_keeps_the_rest() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let bad_bytes = RawValue::text_bytes(b"\xc8\x00\x98");
        let r = record(mapper().map(&row(bad_bytes, date(1, 1, 1)), today));
        assert_eq!(r.last_name, None);
        assert_eq!(r.birth_date, None);
        let fields: Vec<_> = r
            .issues
            .iter()
            .map(|i| (i.field.as_str(), i.problem))
            .collect();
        assert!(fields.contains(&("last_name", Problem::BadCharacters)));
        assert!(fields.contains(&("birth_date", Problem::OutOfRange)));
        assert!(r
            .issues
            .iter()
            .all(|i| !i.raw.as_deref().unwrap_or("").contains('\0')));
        assert_eq!(r.first_name.as_deref(), Some("Иван"), "the rest is mapped");

        let r = record(mapper().map(&row(RawValue::Null, date(2027, 1, 1)), today));
        let fields: Vec<_> = r.issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["last_name", "birth_date"]);
    }

    #[test]
    fn strict_utf8() {
        assert!(TextDecoding::Utf8.decode("Иванов".as_bytes()).is_ok());
        let lossy = TextDecoding::Utf8.decode(b"\xc8\xe2\xe0\xed").unwrap_err();
        assert!(lossy.contains('\u{FFFD}'));
    }
}
