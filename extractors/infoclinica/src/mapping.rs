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

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use proto::normalize::{self, Problem};
use proto::record::FieldIssue;
use proto::{DocumentTypeMap, Email, EmailKind, PatientRecord, Phone};
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
    ///
    /// Borrows `bytes` when they are already the text (ASCII in WIN1251,
    /// any valid UTF-8): phones, documents and e-mails cost no allocation
    /// here, only Cyrillic WIN1251 text is decoded into a `String`.
    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, String> {
        let decoded = match self {
            // In WIN1251 (as encoding_rs decodes it) the bad characters are
            // bad bytes: C0 controls, DEL and 0x98 (undefined, decoded as
            // the C1 control U+0098); found in the bytes before decoding
            // rather than by a pass over the decoded chars.
            TextDecoding::Windows1251 if !bytes.iter().any(|&b| is_bad_control_byte(b)) => {
                encoding_rs::WINDOWS_1251.decode_without_bom_handling_and_without_replacement(bytes)
            }
            TextDecoding::Windows1251 => None,
            TextDecoding::Utf8 => std::str::from_utf8(bytes)
                .ok()
                .filter(|s| !s.chars().any(is_bad_control))
                .map(Cow::Borrowed),
        };
        decoded.ok_or_else(|| self.lossy(bytes))
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

/// [`is_bad_control`] of a WIN1251 byte: C0 controls but tab and line
/// breaks, DEL, and 0x98 (the one byte WIN1251 leaves undefined, which
/// encoding_rs decodes to U+0098). Checked byte by byte in a test.
fn is_bad_control_byte(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f || b == 0x98
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
    document_types: DocumentTypeMap,
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
            document_types: db.document_types.clone(),
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

    /// How many columns the SELECT list has (the length of a row).
    pub fn columns(&self) -> usize {
        self.columns.len()
    }

    /// Maps one row (columns in [`Mapper::select_list`] order).
    pub fn map(&self, row: &[RawValue], today: NaiveDate) -> Mapped {
        let mut b = Builder {
            mapper: self,
            record: PatientRecord::default(),
            pcode: None,
            filial: None,
            doc_type: None,
            series: None,
            number: None,
            preferred_phone: None,
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

/// One row being mapped. Text borrows the row where it can (`'r`): only
/// what ends up in the record is allocated, and Cyrillic text once more for
/// its decoding.
struct Builder<'m, 'r> {
    mapper: &'m Mapper,
    record: PatientRecord,
    pcode: Option<Result<i64, &'static str>>,
    filial: Option<Cow<'r, str>>,
    doc_type: Option<i64>,
    series: Option<Cow<'r, str>>,
    number: Option<Cow<'r, str>>,
    /// The phone columns seen so far, and the index in `record.phones` of
    /// the first number of the last one that held any: the old system's
    /// choice (PHONE3, else PHONE2, else PHONE1), marked in `finish`.
    preferred_phone: Option<usize>,
}

impl<'r> Builder<'_, 'r> {
    fn issue(&mut self, field: &str, problem: Problem, raw: Option<String>) {
        self.record.issues.push(FieldIssue {
            field: field.to_string(),
            problem,
            raw,
        });
    }

    /// A text field, trimmed: `None` when NULL or blank; flagged when
    /// undecodable.
    fn text(&mut self, field: &str, value: &'r RawValue) -> Option<Cow<'r, str>> {
        let s = match value {
            RawValue::Null => return None,
            RawValue::Text(bytes) => match self.mapper.decoding.decode(bytes) {
                Ok(s) => s,
                Err(lossy) => {
                    self.issue(field, Problem::BadCharacters, Some(lossy));
                    return None;
                }
            },
            RawValue::Integer(i) => Cow::Owned(i.to_string()),
            RawValue::Int128(i) => Cow::Owned(i.to_string()),
            RawValue::Floating(f) => Cow::Owned(f.to_string()),
            RawValue::Boolean(b) => Cow::Owned(b.to_string()),
            RawValue::Timestamp(t) => Cow::Owned(t.to_string()),
        };
        let trimmed = trim(s);
        (!trimmed.is_empty()).then_some(trimmed)
    }

    fn integer(&mut self, field: &str, value: &'r RawValue) -> Option<i64> {
        match value {
            RawValue::Integer(i) => Some(*i),
            RawValue::Int128(i) => i64::try_from(*i).ok(),
            RawValue::Null => None,
            other => {
                let text = self.text(field, other)?;
                match text.parse() {
                    Ok(i) => Some(i),
                    Err(_) => {
                        self.issue(field, Problem::BadFormat, Some(text.into_owned()));
                        None
                    }
                }
            }
        }
    }

    fn column(&mut self, col: Col, value: &'r RawValue, today: NaiveDate) {
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
            Col::DocType => self.doc_type = self.integer("document_type", value),
            Col::DocSeries => self.series = self.text("document_series", value),
            Col::DocNumber => self.number = self.text("document_number", value),
            Col::Email => self.email(value, EmailKind::Contact),
            Col::Login => self.email(value, EmailKind::Login),
            Col::Snils => {
                self.record.snils = self.text("snils", value).and_then(|s| normalize::snils(&s))
            }
            Col::Oms => {
                self.record.oms_policy = self
                    .text("oms_policy", value)
                    .and_then(|s| normalize::oms_policy(&s))
            }
            Col::Phone => self.phones(value),
        }
    }

    fn email(&mut self, value: &'r RawValue, kind: EmailKind) {
        if let Some(address) = self
            .text("emails", value)
            .and_then(|s| normalize::email(&s))
        {
            self.record.emails.push(Email { address, kind });
        }
    }

    /// One phone column: every number kept, each once, in column order.
    fn phones(&mut self, value: &'r RawValue) {
        let Some(text) = self.text("phones", value) else {
            return;
        };
        for (j, raw) in normalize::split_phones(&text).into_iter().enumerate() {
            let Some(number) = normalize::phone(raw) else {
                continue;
            };
            let index = match self.record.phones.iter().position(|p| p.number == number) {
                Some(existing) => existing,
                None => {
                    self.record.phones.push(Phone {
                        number,
                        preferred: false,
                    });
                    self.record.phones.len() - 1
                }
            };
            if j == 0 {
                self.preferred_phone = Some(index);
            }
        }
    }

    fn name(&mut self, field: &str, value: &'r RawValue, required: bool) -> Option<String> {
        let was_flagged = self.record.issues.len();
        let name = self.text(field, value).and_then(|s| normalize::name(&s));
        if name.is_none() && required && self.record.issues.len() == was_flagged {
            self.issue(field, Problem::Missing, None);
        }
        name
    }

    fn birth_date(&mut self, value: &'r RawValue, today: NaiveDate) -> Option<NaiveDate> {
        let date = match value {
            RawValue::Null => return None,
            RawValue::Timestamp(t) => t.date(),
            other => {
                let text = self.text("birth_date", other)?;
                match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                    Ok(d) => d,
                    Err(_) => {
                        self.issue("birth_date", Problem::BadFormat, Some(text.into_owned()));
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
            .as_deref()
            .and_then(|f| self.mapper.business_units.get(f))
            .or(self.mapper.default_business_unit.as_ref())
            .cloned();
        if unit.is_none() {
            let raw = self.filial.take().map(Cow::into_owned);
            self.issue("business_unit", Problem::Missing, raw);
        }
        self.record.business_unit = unit;

        // The document: its type by this database's dictionary, never
        // "passport" by default.
        let doc_type = self.mapper.document_types.map(self.doc_type);
        let doc_code = self.doc_type.map(|c| c.to_string());
        if let Some(doc) = normalize::document(
            doc_type,
            doc_code.as_deref(),
            self.series.as_deref(),
            self.number.as_deref(),
        ) {
            self.record.documents.push(doc);
        }

        // Phones: the preferred one first, then in column order.
        if let Some(i) = self.preferred_phone {
            self.record.phones[i].preferred = true;
        }
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

/// `s` without leading and trailing whitespace, borrowed as it came or
/// owned as it came (trimming an owned string copies only if it changes).
fn trim(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) if o.trim().len() == o.len() => Cow::Owned(o),
        Cow::Owned(o) => Cow::Owned(o.trim().to_string()),
    }
}

/// Today's date, the upper bound of a plausible birth date.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::DocumentType;

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
    fn document_types_follow_the_database_dictionary() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let with_type = |code: i64, series: &str, number: &str| {
            let mut r = row(text("Иванов"), date(1980, 2, 29));
            r[6] = RawValue::Integer(code);
            r[7] = text(series);
            r[8] = text(number);
            r
        };
        let default = mapper();
        let mut db = DatabaseSettings {
            database: "x".into(),
            default_business_unit: Some("main".into()),
            ..Default::default()
        };
        db.document_types = DocumentTypeMap::try_from(BTreeMap::from([
            ("1".to_string(), "passport".to_string()),
            ("3".to_string(), "international_passport".to_string()),
            ("5".to_string(), "birth_certificate".to_string()),
        ]))
        .unwrap();
        let own = Mapper::new(&db);

        let doc = |m: &Mapper, r: &[RawValue]| record(m.map(r, today)).documents.remove(0);
        // Code 3: a birth certificate by default, an international passport
        // in this database; each read by its type's format.
        let d = doc(&default, &with_type(3, "IV-АИ", "№ 123456"));
        assert_eq!(d.doc_type, DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(
            (d.series.as_deref(), d.number.as_str()),
            (Some("IV-АИ"), "123456")
        );
        let d = doc(&own, &with_type(3, "75", "0123456"));
        assert_eq!(d.doc_type, DocumentType::INTERNATIONAL_PASSPORT);
        assert_eq!(
            (d.series.as_deref(), d.number.as_str()),
            (Some("75"), "0123456")
        );
        assert_eq!(
            d.source_type_code.as_deref(),
            Some("3"),
            "the source's code kept"
        );
        let d = doc(&own, &with_type(5, "", "IV-АИ 123456"));
        assert_eq!(d.doc_type, DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(d.problem, None);
        // A code this dictionary leaves out is unknown, never the default's.
        let d = doc(&own, &with_type(2, "75", "0123456"));
        assert_eq!(d.doc_type, DocumentType::UNKNOWN);
        assert_eq!(
            doc(&default, &with_type(2, "75", "0123456")).doc_type,
            DocumentType::INTERNATIONAL_PASSPORT
        );
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
    fn win1251_controls_are_found_in_the_bytes() {
        // Every byte alone: refused exactly when its character is a bad
        // control (or undefined in WIN1251).
        for b in 0..=255u8 {
            let by_chars = encoding_rs::WINDOWS_1251
                .decode_without_bom_handling_and_without_replacement(&[b])
                .is_some_and(|s| !s.chars().any(is_bad_control));
            assert_eq!(
                TextDecoding::Windows1251.decode(&[b]).is_ok(),
                by_chars,
                "{b:#04x}"
            );
        }
    }

    #[test]
    fn strict_utf8() {
        assert!(TextDecoding::Utf8.decode("Иванов".as_bytes()).is_ok());
        let lossy = TextDecoding::Utf8.decode(b"\xc8\xe2\xe0\xed").unwrap_err();
        assert!(lossy.contains('\u{FFFD}'));
    }
}
