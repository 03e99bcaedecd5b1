//! Comparison levels: each field of a pair as one of a few ordered levels,
//! the first the strongest agreement, the last "differs". A field that one
//! side lacks is missing: it is no evidence either way. Values never leave
//! this module; a level is a number and a name.

use chrono::{Datelike, NaiveDate};

use crate::features::{Doc, Features};
use crate::rules::passports_agree;

/// The compared fields, in the order of [`Levels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    LastName,
    FirstName,
    MiddleName,
    BirthDate,
    Sex,
    Passport,
    OtherDocument,
    Snils,
    Oms,
    Phone,
    Email,
}

/// Every field, in order.
pub const FIELDS: [Field; 11] = [
    Field::LastName,
    Field::FirstName,
    Field::MiddleName,
    Field::BirthDate,
    Field::Sex,
    Field::Passport,
    Field::OtherDocument,
    Field::Snils,
    Field::Oms,
    Field::Phone,
    Field::Email,
];

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::LastName => "last_name",
            Field::FirstName => "first_name",
            Field::MiddleName => "middle_name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Passport => "passport",
            Field::OtherDocument => "other_document",
            Field::Snils => "snils",
            Field::Oms => "oms",
            Field::Phone => "phone",
            Field::Email => "email",
        }
    }

    /// The names of the field's levels, strongest agreement first.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::LastName => &[
                "exact",
                "part_or_gender_form",
                "one_edit",
                "two_edits",
                "differs",
            ],
            Field::FirstName | Field::MiddleName => {
                &["exact", "initial", "one_edit", "two_edits", "differs"]
            }
            Field::BirthDate => &["exact", "day_month_swap", "one_typo", "differs"],
            Field::Sex => &["same", "differs"],
            Field::Passport => &["exact", "one_edit", "replaced", "differs"],
            Field::OtherDocument => &["exact", "one_edit", "differs"],
            Field::Snils | Field::Oms => &["exact", "differs"],
            Field::Phone | Field::Email => &["shared", "none_shared"],
        }
    }

    /// The index of the field's "differs" level (its last).
    pub fn differs(self) -> u8 {
        (self.levels().len() - 1) as u8
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The level of each field of a pair (`None`: missing, no evidence).
pub type Levels = [Option<u8>; 11];

/// The comparison levels of two records.
pub fn compare(a: &Features, b: &Features) -> Levels {
    let mut l: Levels = [None; 11];
    let (last, first) = names(a, b);
    l[Field::LastName.index()] = last;
    l[Field::FirstName.index()] = first;
    l[Field::MiddleName.index()] = given_name(a.middle.as_deref(), b.middle.as_deref());
    l[Field::BirthDate.index()] = birth_date(a.birth, b.birth);
    l[Field::Sex.index()] = match (a.sex, b.sex) {
        (Some(x), Some(y)) => Some(u8::from(x != y)),
        _ => None,
    };
    l[Field::Passport.index()] = passport(a, b);
    l[Field::OtherDocument.index()] = other_document(a, b);
    l[Field::Snils.index()] = identifier(a.snils.as_deref(), b.snils.as_deref());
    l[Field::Oms.index()] = identifier(a.oms.as_deref(), b.oms.as_deref());
    l[Field::Phone.index()] = shared(&a.phones, &b.phones);
    l[Field::Email.index()] = shared(&a.emails, &b.emails);
    l
}

/// Edit distance levels of two different names: 2 for one edit (in names of
/// four letters or more: Анна and Инна are two names), 3 for two edits in
/// names of six or more that are also close by Jaro–Winkler, else 4.
fn edits(a: &str, b: &str) -> u8 {
    // A space or hyphen typed into a name (`soph ie`) or left out of a
    // double one is one edit, however many it took.
    let joined = |x: &str| x.replace([' ', '-'], "");
    if joined(a) == joined(b) {
        return 2;
    }
    let len = a.chars().count().min(b.chars().count());
    match strsim::damerau_levenshtein(a, b) {
        1 if len >= 4 => 2,
        2 if len >= 6 && strsim::jaro_winkler(a, b) >= 0.88 => 3,
        _ => 4,
    }
}

fn given_name(a: Option<&str>, b: Option<&str>) -> Option<u8> {
    let (a, b) = (a?, b?);
    if a == b {
        return Some(0);
    }
    // An initial (`С` or `С.`, folded to one letter) agrees with any name
    // that starts with it.
    let initial = |x: &str| {
        let core = x.trim_end_matches('.');
        (core.chars().count() == 1)
            .then(|| core.chars().next())
            .flatten()
    };
    match (initial(a), initial(b)) {
        (Some(x), Some(y)) => return Some(if x == y { 0 } else { 4 }),
        (Some(x), None) => return Some(if b.starts_with(x) { 1 } else { 4 }),
        (None, Some(y)) => return Some(if a.starts_with(y) { 1 } else { 4 }),
        (None, None) => {}
    }
    Some(edits(a, b))
}

/// The masculine form of a Russian surname from its feminine one
/// (`иванова` → `иванов`, `петровская` → `петровский`), if it has one.
fn masculine(surname: &str) -> Option<String> {
    for (fem, masc) in [
        ("ская", "ский"),
        ("цкая", "цкий"),
        ("ова", "ов"),
        ("ева", "ев"),
        ("ина", "ин"),
        ("ына", "ын"),
    ] {
        if let Some(stem) = surname.strip_suffix(fem) {
            if !stem.is_empty() {
                return Some(format!("{stem}{masc}"));
            }
        }
    }
    None
}

fn last_name(a: &Features, b: &Features) -> Option<u8> {
    let (x, y) = (a.last.as_deref()?, b.last.as_deref()?);
    if x == y {
        return Some(0);
    }
    let shares_part = a.last_parts.len() + b.last_parts.len() > 2
        && a.last_parts.iter().any(|p| b.last_parts.contains(p));
    let gender_form = masculine(x).as_deref() == Some(y) || masculine(y).as_deref() == Some(x);
    if shares_part || gender_form {
        return Some(1);
    }
    Some(edits(x, y))
}

/// The levels of surname and first name; when first name and surname
/// were typed into each other's fields on one side (each equal or one edit
/// from the other side's opposite field, and the fields as typed not that
/// close), the levels of the exchanged fields.
fn names(a: &Features, b: &Features) -> (Option<u8>, Option<u8>) {
    let direct = (
        last_name(a, b),
        given_name(a.first.as_deref(), b.first.as_deref()),
    );
    let (Some(al), Some(af), Some(bl), Some(bf)) = (
        a.last.as_deref(),
        a.first.as_deref(),
        b.last.as_deref(),
        b.first.as_deref(),
    ) else {
        return direct;
    };
    let close = |x: &str, y: &str| if x == y { 0 } else { edits(x, y) };
    let crossed = (close(al, bf), close(af, bl));
    let far = |l: Option<u8>| l.is_some_and(|l| l >= 2);
    if far(direct.0) && far(direct.1) && crossed.0 <= 2 && crossed.1 <= 2 {
        (Some(crossed.0), Some(crossed.1))
    } else {
        direct
    }
}

/// Equal; day and month exchanged; a typo (one of year, month, day
/// different, the year within ten years; or, in `YYYYMMDD`, one digit
/// different or two neighbours exchanged); otherwise different.
pub(crate) fn birth_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<u8> {
    let (a, b) = (a?, b?);
    if a == b {
        return Some(0);
    }
    if a.year() == b.year() && a.day() == b.month() && a.month() == b.day() {
        return Some(1);
    }
    let same = [
        a.year() == b.year(),
        a.month() == b.month(),
        a.day() == b.day(),
    ];
    let year_typo = !same[0] && (a.year() - b.year()).abs() <= 10 && same[1] && same[2];
    Some(if (same[0] && (same[1] || same[2])) || year_typo {
        2
    } else {
        3
    })
}

fn identifier(a: Option<&str>, b: Option<&str>) -> Option<u8> {
    Some(u8::from(a? != b?))
}

fn shared(a: &[String], b: &[String]) -> Option<u8> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    Some(u8::from(!a.iter().any(|x| b.contains(x))))
}

/// Series and number as one text, so that a series glued to the number or
/// split differently compares equal.
fn doc_text(d: &Doc) -> String {
    format!("{}{}", d.series, d.number)
}

fn one_edit(x: &Doc, y: &Doc) -> bool {
    strsim::damerau_levenshtein(&doc_text(x), &doc_text(y)) <= 1
}

fn passport(a: &Features, b: &Features) -> Option<u8> {
    let is = |d: &&Doc| d.doc_type == proto::DocumentType::PASSPORT.0;
    let (xs, ys): (Vec<&Doc>, Vec<&Doc>) = (
        a.docs.iter().filter(is).collect(),
        b.docs.iter().filter(is).collect(),
    );
    if xs.is_empty() || ys.is_empty() {
        return None;
    }
    let any = |f: &dyn Fn(&Doc, &Doc) -> bool| xs.iter().any(|x| ys.iter().any(|y| f(x, y)));
    if any(&|x, y| doc_text(x) == doc_text(y)) {
        Some(0)
    } else if any(&one_edit) {
        Some(1)
    } else if xs
        .iter()
        .all(|x| ys.iter().all(|y| passports_agree(x, y, a.birth, b.birth)))
    {
        Some(2)
    } else {
        Some(3)
    }
}

/// Documents of the other types: the best level over the types both hold.
fn other_document(a: &Features, b: &Features) -> Option<u8> {
    let mut best: Option<u8> = None;
    for x in a
        .docs
        .iter()
        .filter(|d| d.doc_type != proto::DocumentType::PASSPORT.0)
    {
        for y in b.docs.iter().filter(|y| y.doc_type == x.doc_type) {
            let level = if doc_text(x) == doc_text(y) {
                0
            } else if one_edit(x, y) {
                1
            } else {
                2
            };
            best = Some(best.map_or(level, |b| b.min(level)));
        }
    }
    best
}

/// The twin pattern: a birth date that is the same or close, first names
/// that differ, and the same patronymic (or, where a side has none, the
/// same sex). Twins (and
/// siblings born close together, recorded with one family phone) share
/// everything but the first name, often even documents numbered one after
/// the other, which is why the independence of the fields does not hold
/// for them.
pub fn twins(a: &Features, b: &Features, levels: &Levels) -> bool {
    let at = |f: Field| levels[f.index()];
    // Short first names one letter apart at their start are mostly two
    // names (Анна, Жанна; Алена, Елена; Галина, Алина): for twins, as
    // different as any. Inside a name (Мария, Мбрия) it is a typo.
    let short = |x: &Option<String>| x.as_deref().map_or(0, |n| n.chars().count()) < 7;
    let start = |x: &Option<String>| x.as_deref().and_then(|n| n.chars().next());
    let first_differs = at(Field::FirstName) == Some(Field::FirstName.differs())
        || (at(Field::FirstName) == Some(2)
            && (short(&a.first) || short(&b.first))
            && start(&a.first) != start(&b.first));
    // The surname is not asked for: one that differs too (typed wrong on
    // both sides, or another family name) is no sign of one person.
    at(Field::BirthDate).is_some()
        && first_differs
        && match at(Field::MiddleName) {
            Some(level) => level != Field::MiddleName.differs(),
            None => at(Field::Sex) == Some(0),
        }
}
