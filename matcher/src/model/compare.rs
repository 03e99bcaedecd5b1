//! Comparison levels: each field of a pair as one of a few ordered levels,
//! the first the strongest agreement, the last "differs". A field that one
//! side lacks is missing: it is no evidence either way. Values never leave
//! this module; a level is a number and a name.

use chrono::{Datelike, NaiveDate};

use super::text;
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
                "differs_both_women",
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
    let surname_changed = matches!(last, Some(l) if l >= 4);
    l[Field::Passport.index()] = passport(a, b, surname_changed);
    l[Field::OtherDocument.index()] = other_document(a, b);
    l[Field::Snils.index()] = identifier(a.snils.as_deref(), b.snils.as_deref());
    l[Field::Oms.index()] = identifier(a.oms.as_deref(), b.oms.as_deref());
    l[Field::Phone.index()] = shared(&a.phones, &b.phones);
    l[Field::Email.index()] = shared(&a.emails, &b.emails);
    l
}

/// Edit distance levels of two different names: 2 for one edit (in names of
/// four letters or more: Яна and Ява are two names; a letter left out of a
/// four-letter name, `ала` for `алла`, counts as in the name meant), 3 for
/// two edits in names of six or more that are also close by Jaro–Winkler,
/// else 4.
fn edits(a: &str, b: &str) -> u8 {
    // A space or hyphen typed into a name (`soph ie`) or left out of a
    // double one is one edit, however many it took.
    if text::equal_joined(a, b) {
        return 2;
    }
    let (la, lb) = (a.chars().count(), b.chars().count());
    let len = if la.max(lb) == 4 { 4 } else { la.min(lb) };
    // The most edits that can still give a level above "differs": most
    // pairs of names are settled here, without the edit distance.
    let most = match len {
        0..=3 => return 4,
        4 | 5 => 1,
        _ => 2,
    };
    if !text::may_be_within(a.chars(), b.chars(), most) {
        return 4;
    }
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

/// Whether `masc` is the masculine form of the feminine Russian surname
/// `fem` (`иванова` → `иванов`, `петровская` → `петровский`). Compared in
/// place: no form is built for a pair.
fn is_masculine_of(fem: &str, masc: &str) -> bool {
    for (fem_end, masc_end) in [
        ("ская", "ский"),
        ("цкая", "цкий"),
        ("ова", "ов"),
        ("ева", "ев"),
        ("ина", "ин"),
        ("ына", "ын"),
    ] {
        if let Some(stem) = fem.strip_suffix(fem_end) {
            if !stem.is_empty() {
                return masc.strip_suffix(masc_end) == Some(stem);
            }
        }
    }
    false
}

fn last_name(a: &Features, b: &Features) -> Option<u8> {
    let (x, y) = (a.last.as_deref()?, b.last.as_deref()?);
    if x == y {
        return Some(0);
    }
    let shares_part = a.last_parts.len() + b.last_parts.len() > 2
        && a.last_parts.iter().any(|p| b.last_parts.contains(p));
    let gender_form = is_masculine_of(x, y) || is_masculine_of(y, x);
    if shares_part || gender_form {
        return Some(1);
    }
    // Many women take their husband's surname and keep first name,
    // patronymic and birth date: another surname on two women's records is
    // its own level (4, `differs_both_women`), weaker evidence than on a
    // man's. `edits` gives 4 for any names that differ.
    let women = a.sex == Some('F') && b.sex == Some('F');
    Some(match edits(x, y) {
        4 if women => 4,
        4 => Field::LastName.differs(),
        close => close,
    })
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
    // The exchanged fields matter only when both direct levels are far;
    // most pairs agree on a name and are settled without comparing them
    // (the second is compared only when the first is close).
    let far = |l: Option<u8>| l.is_some_and(|l| l >= 2);
    if !(far(direct.0) && far(direct.1)) {
        return direct;
    }
    let close = |x: &str, y: &str| Some(if x == y { 0 } else { edits(x, y) }).filter(|&l| l <= 2);
    let Some(last) = close(al, bf) else {
        return direct;
    };
    let Some(first) = close(af, bl) else {
        return direct;
    };
    (Some(last), Some(first))
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
fn doc_text(d: &Doc) -> impl Iterator<Item = char> + '_ {
    d.series.chars().chain(d.number.chars())
}

fn same_text(x: &Doc, y: &Doc) -> bool {
    doc_text(x).eq(doc_text(y))
}

/// At most one edit apart; the texts are built only for the few pairs that
/// the letters they hold do not settle.
fn one_edit(x: &Doc, y: &Doc) -> bool {
    if !text::may_be_within(doc_text(x), doc_text(y), 1) {
        return false;
    }
    let joined = |d: &Doc| doc_text(d).collect::<String>();
    strsim::damerau_levenshtein(&joined(x), &joined(y)) <= 1
}

fn passports(f: &Features) -> impl Iterator<Item = &Doc> + '_ {
    f.docs
        .iter()
        .filter(|d| d.doc_type == proto::DocumentType::PASSPORT.0)
}

fn passport(a: &Features, b: &Features, surname_changed: bool) -> Option<u8> {
    if passports(a).next().is_none() || passports(b).next().is_none() {
        return None;
    }
    let any = |f: &dyn Fn(&Doc, &Doc) -> bool| passports(a).any(|x| passports(b).any(|y| f(x, y)));
    if any(&same_text) {
        Some(0)
    } else if any(&one_edit) {
        Some(1)
    } else if passports(a)
        .all(|x| passports(b).all(|y| passports_agree(x, y, a.birth, b.birth, surname_changed)))
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
            let level = if same_text(x, y) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`edits`] as it reads without the cheap exits.
    fn plain_edits(a: &str, b: &str) -> u8 {
        let joined = |x: &str| x.replace([' ', '-'], "");
        if joined(a) == joined(b) {
            return 2;
        }
        let (la, lb) = (a.chars().count(), b.chars().count());
        let len = if la.max(lb) == 4 { 4 } else { la.min(lb) };
        match strsim::damerau_levenshtein(a, b) {
            1 if len >= 4 => 2,
            2 if len >= 6 && strsim::jaro_winkler(a, b) >= 0.88 => 3,
            _ => 4,
        }
    }

    /// Every pair of the names and of the document texts of generated
    /// records (typos and exchanged fields included) gets the level the
    /// edit distance alone gives.
    #[test]
    fn the_cheap_exits_never_change_a_level() {
        let records = crate::model::tests::generated(300);
        let mut names: Vec<&str> = records
            .iter()
            .flat_map(|r| [&r.last, &r.first, &r.middle])
            .filter_map(|n| n.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut close = 0;
        for a in &names {
            for b in &names {
                let level = edits(a, b);
                assert_eq!(level, plain_edits(a, b), "{a} / {b}");
                close += usize::from(level < 4);
            }
        }
        assert!(close > names.len(), "typos among the names: {close}");
        let docs: Vec<&Doc> = records.iter().flat_map(|r| &r.docs).collect();
        let text = |d: &Doc| format!("{}{}", d.series, d.number);
        for x in &docs {
            for y in &docs {
                assert_eq!(same_text(x, y), text(x) == text(y));
                let distance = strsim::damerau_levenshtein(&text(x), &text(y));
                assert_eq!(one_edit(x, y), distance <= 1, "{x:?} / {y:?}");
            }
        }
    }

    #[test]
    fn a_letter_left_out_of_a_short_name_is_a_typo_and_short_names_apart_differ() {
        assert_eq!(edits("ала", "алла"), 2);
        assert_eq!(edits("юрий", "юрй"), 2);
        assert_eq!(edits("яна", "ява"), 4);
        assert_eq!(edits("ия", "ира"), 4);
        assert_eq!(edits("анна", "инна"), 2);
    }

    #[test]
    fn a_masculine_form_is_the_feminine_one_without_its_ending() {
        assert!(is_masculine_of("иванова", "иванов"));
        assert!(is_masculine_of("петровская", "петровский"));
        assert!(!is_masculine_of("иванов", "иванова"));
        assert!(!is_masculine_of("ова", "ов"));
        assert!(!is_masculine_of("иванова", "ивановский"));
    }
}
