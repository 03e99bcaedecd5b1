//! Seeded, reproducible synthetic Russian patients.
//!
//! [`Generator::patient`] turns a seed and an index into one
//! [`SyntheticPatient`]: a source id in the style of a source system and a
//! [`proto::PatientRecord`] already in the canonical form an extractor's
//! normalization produces. The demo publishes these records, the loader's
//! tests load 10,000 of them, and the benchmark generates a million.
//!
//! # Reproducibility
//!
//! * The same seed and index give the same patient on every machine, run and
//!   call order: record `i` is derived from `(seed, i)` alone, so a test can
//!   regenerate any one record to compare it with what came out of the bus.
//! * The generator uses its own SplitMix64 (see `rng.rs`) rather than `rand`,
//!   whose distributions may produce different values after an upgrade.
//! * Ages and document dates are computed as of the fixed
//!   [`REFERENCE_DATE`], not today, so output does not drift with the clock;
//!   birth dates end before it, so none is ever in the future.
//! * Each field group (sex, birth date, names, documents, SNILS, …) draws
//!   from its own stream derived from the record's key. Adding a field group
//!   later (addresses, the qMS simulator's extras) or changing how one group
//!   is drawn leaves every other field of every record unchanged.
//! * The record does not depend on the [`SourceIdStyle`]: two generators with
//!   the same seed and different styles describe the same people under
//!   different ids, which is what the matcher's evaluation needs as ground
//!   truth (index `i` in one source is index `i` in the other).
//!
//! # Distributions (approximate)
//!
//! | field | distribution |
//! |---|---|
//! | sex | 46% male, 54% female; names, patronymic and surname agree with it |
//! | surname | ~85 common surnames with ё and invariant ones (Шевченко, Ким); 2.5% of women and 0.5% of men double-barrelled (Иванова-Петрова) |
//! | first name / patronymic | ~55 male names (which also name fathers), ~50 female |
//! | birth date | uniform over [`EARLIEST_BIRTH_DATE`]..=[`LATEST_BIRTH_DATE`] (ages 0–95, about 15% under 14) |
//! | business unit | `main` 60%, `branch-1` 25%, `branch-7` 15% ([`BUSINESS_UNITS`]) |
//! | documents | 5% none; 2% a foreign passport; otherwise a passport from 14 years (5% of those also an international passport), a birth certificate under 14 |
//! | SNILS | 70% (foreign-passport holders: none), valid checksum |
//! | OMS policy (ENP) | 60% (foreign-passport holders: 30%), valid check digit |
//! | phones | 0: 15%, 1: 60%, 2: 25%; mobile `79XXXXXXXXX`, the first preferred |
//! | e-mail | 40%, one contact address from the transliterated name and digits at mail.ru / yandex.ru / gmail.com |
//! | patronymic | always, except 40% of foreign-passport holders |
//! | issues | none: every record is valid |
//!
//! Records are valid by construction; this crate does not produce broken
//! input. Tests that need broken values should build them next to the test.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use proto::{
    Checked, DocumentType, Email, EmailKind, Envelope, IdentityDocument, PatientRecord, Phone, Sex,
};

mod clerks;
pub mod febrl;
mod names;
mod rng;
pub mod truth;

use rng::{mix64, Rng};

/// Business-unit codes records are spread over, as an operator's mapping
/// would name them.
pub const BUSINESS_UNITS: &[&str] = &["main", "branch-1", "branch-7"];

/// Weights of [`BUSINESS_UNITS`], in percent.
const BUSINESS_UNIT_WEIGHTS: &[(&str, u32)] = &[("main", 60), ("branch-1", 25), ("branch-7", 15)];

/// Earliest generated birth date.
pub const EARLIEST_BIRTH_DATE: NaiveDate = date(1930, 1, 1);
/// Latest generated birth date; before [`REFERENCE_DATE`], so never in the
/// future.
pub const LATEST_BIRTH_DATE: NaiveDate = date(2024, 12, 31);
/// The day the synthetic population is described "as of": ages, and so the
/// choice between passport and birth certificate and the passport's issue
/// year, are computed at this fixed date so that output never depends on
/// when the generator runs.
pub const REFERENCE_DATE: NaiveDate = date(2025, 1, 1);

const fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}

/// How source ids look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SourceIdStyle {
    /// qMS his numbers: `41449/A22` — a number, `/`, a Latin capital and two
    /// digits. The number is `10000 + index`, which makes ids unique.
    #[default]
    Qms,
    /// Infoclinica PCODE: a positive integer, `index + 1`.
    Infoclinica,
}

/// A deterministic generator of synthetic patients. Cheap to create and to
/// clone; holds no state that generating changes, so it can be shared
/// between threads and called in any order.
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    /// The seed, mixed: what record keys are derived from.
    key: u64,
    style: SourceIdStyle,
}

/// One generated patient as a source would present them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticPatient {
    /// Source id in the style of the source: for [`SourceIdStyle::Qms`] like
    /// `41449/A22`, for [`SourceIdStyle::Infoclinica`] a positive integer
    /// PCODE as text. Unique per index within one generator.
    pub source_id: String,
    pub record: PatientRecord,
}

impl SyntheticPatient {
    /// The upsert an extractor for `source` would publish for this patient.
    pub fn into_envelope(self, source: &str, version: i64, observed_at: DateTime<Utc>) -> Envelope {
        Envelope::upsert(source, self.source_id, version, observed_at, self.record)
    }
}

/// Field groups, each drawn from its own stream (see the crate docs). The
/// discriminants are part of the output: never renumber, only append.
#[derive(Clone, Copy)]
enum Field {
    Sex = 1,
    BirthDate = 2,
    Names = 3,
    Documents = 4,
    Snils = 5,
    Oms = 6,
    Phones = 7,
    Email = 8,
    BusinessUnit = 9,
}

/// What identity document a patient carries, decided before the names
/// because foreign patients differ in more than the document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DocKind {
    None,
    Foreign,
    Russian,
}

impl Generator {
    /// Deterministic: the same seed gives the same records.
    pub fn new(seed: u64) -> Self {
        Generator {
            seed,
            key: mix64(seed ^ 0x5EED_5EED_5EED_5EED),
            style: SourceIdStyle::default(),
        }
    }

    /// The same generator with source ids in another style. Records do not
    /// change, only their ids.
    pub fn with_source_id_style(self, style: SourceIdStyle) -> Self {
        Generator { style, ..self }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn source_id_style(&self) -> SourceIdStyle {
        self.style
    }

    /// The patients with indices in `range`, in order.
    pub fn patients(
        &self,
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = SyntheticPatient> + '_ {
        range.map(move |i| self.patient(i))
    }

    /// The source id of the patient with this index, without generating the
    /// record.
    pub fn source_id(&self, index: u64) -> String {
        let mut s = String::with_capacity(16);
        match self.style {
            SourceIdStyle::Qms => {
                // Letter and number depend on the index only, like the number
                // before the slash; the prefix alone makes the id unique.
                let h = mix64(index ^ 0x0051_4D53_0051_4D53);
                let letter = char::from(b'A' + (h % 26) as u8);
                let n = (h >> 32) % 100;
                push_u128(&mut s, 10_000 + u128::from(index));
                s.push('/');
                s.push(letter);
                push_digits(&mut s, n, 2);
            }
            SourceIdStyle::Infoclinica => push_u128(&mut s, u128::from(index) + 1),
        }
        s
    }

    /// The patient with this index, independent of call order: everything is
    /// derived from the seed and the index alone.
    pub fn patient(&self, index: u64) -> SyntheticPatient {
        let key = mix64(self.key.wrapping_add(mix64(index)));
        let stream = |field: Field| {
            Rng::from_key(mix64(
                key ^ (field as u64).wrapping_mul(0xA076_1D64_78BD_642F),
            ))
        };

        let sex = if stream(Field::Sex).percent(46) {
            Sex::Male
        } else {
            Sex::Female
        };
        let birth_date = birth_date(&mut stream(Field::BirthDate));
        let age = age_at(birth_date, REFERENCE_DATE);

        let mut doc_rng = stream(Field::Documents);
        let (doc_kind, documents) = documents(&mut doc_rng, birth_date, age);
        let foreign = doc_kind == DocKind::Foreign;

        let (last_name, first_name, middle_name) = names(&mut stream(Field::Names), sex, foreign);

        let snils = {
            let mut r = stream(Field::Snils);
            (!foreign && r.percent(70)).then(|| snils(&mut r))
        };
        let oms_policy = {
            let mut r = stream(Field::Oms);
            r.percent(if foreign { 30 } else { 60 })
                .then(|| oms(&mut r))
        };
        let phones = phones(&mut stream(Field::Phones));
        let emails = {
            let mut r = stream(Field::Email);
            if r.percent(40) {
                vec![email(&mut r, &first_name, &last_name, birth_date.year())]
            } else {
                Vec::new()
            }
        };
        let business_unit =
            (*stream(Field::BusinessUnit).weighted(BUSINESS_UNIT_WEIGHTS)).to_string();

        SyntheticPatient {
            source_id: self.source_id(index),
            record: PatientRecord {
                business_unit: Some(business_unit),
                last_name: Some(last_name),
                first_name: Some(first_name),
                middle_name,
                birth_date: Some(birth_date),
                sex: Some(sex),
                documents,
                snils,
                oms_policy,
                phones,
                emails,
                issues: Vec::new(),
            },
        }
    }
}

/// Uniform over the birth-date range.
fn birth_date(rng: &mut Rng) -> NaiveDate {
    let first = EARLIEST_BIRTH_DATE.num_days_from_ce();
    let last = LATEST_BIRTH_DATE.num_days_from_ce();
    let day = first + rng.below((last - first + 1) as u64) as i32;
    NaiveDate::from_num_days_from_ce_opt(day).expect("within the constant range")
}

/// Completed years at `on`.
pub(crate) fn age_at(birth: NaiveDate, on: NaiveDate) -> u32 {
    let before_birthday = (on.month(), on.day()) < (birth.month(), birth.day());
    (on.year() - birth.year() - i32::from(before_birthday)).max(0) as u32
}

/// Surname, first name and patronymic agreeing with `sex`.
fn names(rng: &mut Rng, sex: Sex, foreign: bool) -> (String, String, Option<String>) {
    let male = sex == Sex::Male;
    let form = |pair: &(&'static str, &'static str)| if male { pair.0 } else { pair.1 };

    let surname = form(rng.pick(names::SURNAMES));
    // Double-barrelled surnames, mostly women keeping their own beside their
    // husband's.
    let last = if rng.per_mille(if male { 5 } else { 25 }) {
        let mut second = form(rng.pick(names::SURNAMES));
        if second == surname {
            second = form(&names::SURNAMES[0]);
            if second == surname {
                second = form(&names::SURNAMES[1]);
            }
        }
        let mut s = String::with_capacity(surname.len() + 1 + second.len());
        s.push_str(surname);
        s.push('-');
        s.push_str(second);
        s
    } else {
        surname.to_string()
    };

    let first = if male {
        rng.pick(names::MALE_NAMES).0
    } else {
        *rng.pick(names::FEMALE_NAMES)
    };
    let father = rng.pick(names::MALE_NAMES);
    let middle = if male { father.1 } else { father.2 };
    // Many foreign patients have no patronymic.
    let middle = (!(foreign && rng.percent(40))).then(|| middle.to_string());

    (last, first.to_string(), middle)
}

/// Roman numerals of birth-certificate series, in Latin letters.
const ROMAN: &[&str] = &[
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV",
    "XVI", "XVII", "XVIII", "XIX", "XX",
];

/// Cyrillic capitals used in birth-certificate series.
const SERIES_LETTERS: &[char] = &[
    'А', 'Б', 'В', 'Г', 'Д', 'Е', 'Ж', 'З', 'И', 'К', 'Л', 'М', 'Н', 'О', 'П', 'Р', 'С', 'Т', 'У',
    'Ф', 'Х', 'Ц', 'Ч', 'Ш', 'Щ', 'Э', 'Ю', 'Я',
];

fn documents(rng: &mut Rng, birth: NaiveDate, age: u32) -> (DocKind, Vec<IdentityDocument>) {
    let roll = rng.below(100);
    if roll < 5 {
        return (DocKind::None, Vec::new());
    }
    if roll < 7 {
        // Foreign passports: two Latin letters and seven digits, no series.
        let mut number = String::with_capacity(9);
        number.push(char::from(b'A' + rng.below(26) as u8));
        number.push(char::from(b'A' + rng.below(26) as u8));
        push_digits(&mut number, rng.below(10_000_000), 7);
        return (
            DocKind::Foreign,
            vec![doc(DocumentType::FOREIGN_PASSPORT, None, number)],
        );
    }
    if age < 14 {
        // Birth certificate: series "IV-АИ", number of six digits.
        let mut series = String::with_capacity(12);
        let numeral: &str = rng.pick::<&str>(ROMAN);
        series.push_str(numeral);
        series.push('-');
        series.push(*rng.pick(SERIES_LETTERS));
        series.push(*rng.pick(SERIES_LETTERS));
        return (
            DocKind::Russian,
            vec![doc(
                DocumentType::BIRTH_CERTIFICATE,
                Some(series),
                six_digits(rng),
            )],
        );
    }

    // Passport: series = region code (01–99) and the last two digits of the
    // issue year; the number has six digits, leading zeros included.
    let mut series = String::with_capacity(4);
    push_digits(&mut series, rng.between(1, 99), 2);
    push_digits(
        &mut series,
        passport_issue_year(rng, birth.year(), age).rem_euclid(100) as u64,
        2,
    );
    let passport = doc(DocumentType::PASSPORT, Some(series), six_digits(rng));

    if rng.percent(5) {
        // An international passport too: series of two digits, seven-digit number.
        let mut series = String::with_capacity(2);
        push_digits(&mut series, rng.between(70, 77), 2);
        let mut number = String::with_capacity(7);
        push_digits(&mut number, rng.below(10_000_000), 7);
        let international = doc(DocumentType::INTERNATIONAL_PASSPORT, Some(series), number);
        (DocKind::Russian, vec![passport, international])
    } else {
        (DocKind::Russian, vec![passport])
    }
}

/// Year the current passport was issued: passports are issued at 14 and
/// replaced at 20 and 45, usually within a year; passports of this kind exist
/// since 1997, and older ones were exchanged by 2004.
pub(crate) fn passport_issue_year(rng: &mut Rng, birth_year: i32, age: u32) -> i32 {
    let milestone = match age {
        45.. => 45,
        20..=44 => 20,
        _ => 14,
    };
    // The milestone birthday is on or before the reference date (that is
    // how `age` was computed); the delay must not push the issue past it.
    let turned = birth_year + milestone;
    let mut year = turned + rng.below(2) as i32;
    if year >= REFERENCE_DATE.year() {
        year = turned;
    }
    if year < 1997 {
        year = 1997 + rng.below(8) as i32;
    }
    year
}

fn doc(doc_type: DocumentType, series: Option<String>, number: String) -> IdentityDocument {
    IdentityDocument {
        doc_type,
        source_type_code: None,
        series,
        number,
        problem: None,
    }
}

fn six_digits(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(6);
    push_digits(&mut s, rng.between(1, 999_999), 6);
    s
}

/// A valid SNILS: nine digits above 001-001-998 and the check number.
fn snils(rng: &mut Rng) -> Checked {
    let body = rng.between(1_001_999, 999_999_999);
    let mut d = [0u8; 9];
    split_digits(body, &mut d);
    let mut s = String::with_capacity(11);
    push_digits(&mut s, body, 9);
    push_digits(&mut s, u64::from(proto::normalize::snils_checksum(&d)), 2);
    Checked::valid(s)
}

/// A valid ENP: region code (01–99), thirteen digits, the check digit.
fn oms(rng: &mut Rng) -> Checked {
    let body = rng.between(1, 99) * 10_000_000_000_000 + rng.below(10_000_000_000_000);
    let mut d = [0u8; 15];
    split_digits(body, &mut d);
    let mut s = String::with_capacity(16);
    push_digits(&mut s, body, 15);
    push_digits(&mut s, u64::from(proto::normalize::oms_check_digit(&d)), 1);
    Checked::valid(s)
}

const PHONE_COUNTS: &[(usize, u32)] = &[(0, 15), (1, 60), (2, 25)];

fn phones(rng: &mut Rng) -> Vec<Phone> {
    let n = *rng.weighted(PHONE_COUNTS);
    let mut phones = Vec::with_capacity(n);
    let mut previous = u64::MAX;
    for i in 0..n {
        let mut subscriber = rng.below(1_000_000_000);
        while subscriber == previous {
            subscriber = rng.below(1_000_000_000);
        }
        previous = subscriber;
        let mut s = String::with_capacity(11);
        s.push_str("79");
        push_digits(&mut s, subscriber, 9);
        phones.push(Phone {
            number: Checked::valid(s),
            preferred: i == 0,
        });
    }
    phones
}

const EMAIL_DOMAINS: &[(&str, u32)] = &[("mail.ru", 45), ("yandex.ru", 35), ("gmail.com", 20)];

/// A contact address built the way people build them: transliterated name
/// parts and some digits (often from the birth year).
fn email(rng: &mut Rng, first: &str, last: &str, birth_year: i32) -> Email {
    let mut s = String::with_capacity(48);
    let year = birth_year.max(0) as u64;
    match rng.below(4) {
        0 => {
            names::push_translit(&mut s, last);
            s.push('.');
            names::push_translit(&mut s, first);
            push_digits(&mut s, year % 100, 2);
        }
        1 => {
            names::push_translit(&mut s, first);
            s.push('.');
            names::push_translit(&mut s, last);
            push_digits(&mut s, rng.between(1, 999), 1);
        }
        2 => {
            let initial = first.chars().next().map_or(0, char::len_utf8);
            names::push_translit(&mut s, &first[..initial]);
            names::push_translit(&mut s, last);
            push_digits(&mut s, year, 4);
        }
        _ => {
            names::push_translit(&mut s, last);
            push_digits(&mut s, rng.between(1, 9999), 1);
        }
    }
    s.push('@');
    let domain: &str = rng.weighted::<&str>(EMAIL_DOMAINS);
    s.push_str(domain);
    Email {
        address: Checked::valid(s),
        kind: EmailKind::Contact,
    }
}

/// Writes the decimal digits of `v` into `out`, most significant first;
/// `out.len()` must be enough for `v`.
fn split_digits(mut v: u64, out: &mut [u8]) {
    for d in out.iter_mut().rev() {
        *d = (v % 10) as u8;
        v /= 10;
    }
    debug_assert_eq!(v, 0);
}

/// Appends `v` in decimal, zero-padded to at least `width` digits, without
/// going through `fmt`.
fn push_digits(out: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[start..]).expect("ASCII digits"));
}

/// Appends `v` in decimal; ids are built from `index + offset`, which may
/// exceed `u64` for the last indices.
fn push_u128(out: &mut String, v: u128) {
    match u64::try_from(v) {
        Ok(v) => push_digits(out, v, 1),
        Err(_) => out.push_str(&v.to_string()),
    }
}

#[cfg(test)]
mod tests;
