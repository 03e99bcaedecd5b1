//! Identity documents: series and number as text, validated per type, read
//! from the layouts clerks really type.

use super::name::{is_cyrillic, is_dash, latin_to_cyrillic, nfc};
use super::Problem;
use crate::{DocumentType, IdentityDocument};

/// Normalizes a document's series and number for its canonical type.
///
/// Series and number are always text (leading zeros kept). Both are read in
/// NFC and uppercase; the label `№` and the words `серия` / `номер` (`сер.`,
/// `ном.`) are no part of a document and are dropped wherever they stand
/// (`№ 845922`, `серия 4506 номер 123456`). Then, per type:
///
/// * [`DocumentType::PASSPORT`]: series 4 digits, number 6 digits. Spaces,
///   dashes, dots, commas, colons, slashes and the Latin label `N` / `No` / `Nº`
///   around the digits are separators. The digits of the series field
///   followed by those of the number field must make exactly one passport:
///   `45 06` + `123456`, `4506 123456` in either field alone (the other
///   empty), `97` + `20 520880` (a series split across the fields). A field
///   that repeats the other (`4506` + `4506 123456`, `4506 123456` +
///   `123456`, the whole passport in both) reads the same way. Anything else
///   (letters such as `O` for `0`, a digit too many or too few) is not read.
/// * [`DocumentType::INTERNATIONAL_PASSPORT`]: the same with series 2 digits
///   and number 7 digits.
/// * [`DocumentType::BIRTH_CERTIFICATE`]: series = Roman numeral in Latin
///   letters, `-`, two Cyrillic letters (canonical `IV-АИ`), number 6 digits.
///   Cyrillic look-alikes in the numeral (`С М Х І`) are read as Latin, Latin
///   look-alikes in the letters as Cyrillic; the dash may be missing or be a
///   space (`IVАИ`, `IV АИ`, `iv-аи`). The whole certificate may stand in
///   either field (`IV-АИ 123456`, `IV-АИ №123456`).
/// * Any other type (foreign passports, military IDs, residence permits…):
///   no fixed format, and systems split such documents differently
///   (`KA3394495` in the number field, or `KA` + `3394495`). The canonical
///   form is therefore the series and the number glued together in the
///   number field, with no series: spaces, dashes and dots dropped, and
///   look-alike letters written in one script: Latin when every letter could
///   be Latin (`КА` in Cyrillic → `KA`), Cyrillic when some letter exists
///   only in Cyrillic, and for military and other Russian-issued IDs
///   ([`cyrillic_series`]) Cyrillic when every letter could be Cyrillic. A
///   series field alone is read as the whole document when it holds at least
///   six digits (no series is that long). A value without any digit (`нет`)
///   is not a document.
///
/// A number whose digits are all zeros is a placeholder, never a document.
///
/// When series and number are both empty: `None`. When the number is empty
/// and the series field does not hold the whole document:
/// [`Problem::Missing`], number `""`. When they do not fit the type:
/// [`Problem::BadFormat`]. With a problem, series and number are kept as
/// received (trimmed).
pub fn document(
    doc_type: DocumentType,
    source_type_code: Option<&str>,
    series: Option<&str>,
    number: Option<&str>,
) -> Option<IdentityDocument> {
    let raw_series = series.map(str::trim).filter(|s| !s.is_empty());
    let raw_number = number.map(str::trim).filter(|n| !n.is_empty());
    if raw_series.is_none() && raw_number.is_none() {
        return None;
    }

    let fields = Fields {
        series: raw_series.map(text),
        number: raw_number.map(text),
    };
    let normalized = match doc_type {
        DocumentType::PASSPORT => digit_document(&fields, 4, 6),
        DocumentType::INTERNATIONAL_PASSPORT => digit_document(&fields, 2, 7),
        DocumentType::BIRTH_CERTIFICATE => birth_certificate(&fields),
        _ => free_form(&fields, cyrillic_series(doc_type)),
    }
    .and_then(refuse_placeholder)
    .map_err(|problem| match raw_number {
        None => Problem::Missing,
        Some(_) => problem,
    });
    let (series, number, problem) = match normalized {
        Ok((series, number)) => (series, number, None),
        Err(problem) => (
            raw_series.map(str::to_string),
            raw_number.unwrap_or_default().to_string(),
            Some(problem),
        ),
    };
    Some(IdentityDocument {
        doc_type,
        source_type_code: source_type_code
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        series,
        number,
        problem,
    })
}

/// Whether a type's letters are Cyrillic when they could be either script:
/// documents issued in Russia with letter series (military IDs `АК 1234567`,
/// refugee and migrant IDs, the temporary ID). Foreign documents are Latin.
pub fn cyrillic_series(doc_type: DocumentType) -> bool {
    matches!(
        doc_type,
        DocumentType::MILITARY_ID
            | DocumentType::RESERVE_OFFICER_ID
            | DocumentType::REFUGEE_APPLICATION
            | DocumentType::REFUGEE_ID
            | DocumentType::FORCED_MIGRANT_ID
            | DocumentType::TEMPORARY_ID
    )
}

type SeriesNumber = (Option<String>, String);

/// The two fields after [`text`], `None` when empty.
struct Fields {
    series: Option<String>,
    number: Option<String>,
}

impl Fields {
    fn series(&self) -> &str {
        self.series.as_deref().unwrap_or("")
    }

    fn number(&self) -> &str {
        self.number.as_deref().unwrap_or("")
    }

    /// Series then number, as one text (the number field first is never
    /// right: clerks type the series before the number).
    fn glued(&self) -> String {
        let mut s = self.series().to_string();
        s.push(' ');
        s.push_str(self.number());
        s
    }
}

/// Generic reading of a series or number field: NFC, uppercase, every dash
/// as `-`, the label `№` and the words `серия`, `сер`, `номер`, `ном` (with a
/// `.` or `:` after them) turned into a space. Whitespace is kept: each type
/// decides what separates what.
fn text(raw: &str) -> String {
    let s = nfc(raw);
    let mut upper = String::with_capacity(s.len());
    for c in s.chars() {
        if is_dash(c) {
            upper.push('-');
        } else if c == '№' {
            upper.push(' ');
        } else if c.is_ascii() {
            upper.push(c.to_ascii_uppercase());
        } else {
            upper.extend(c.to_uppercase());
        }
    }
    drop_words(&upper, &["СЕРИЯ", "СЕР", "НОМЕР", "НОМ"])
}

/// `s` with every whole word (maximal run of letters) in `words` replaced by
/// a space, together with the `.` and `:` right after it.
fn drop_words(s: &str, words: &[&str]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(char::is_alphabetic) {
        out.push_str(&rest[..start]);
        let word_and_after = &rest[start..];
        let len = word_and_after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(word_and_after.len());
        let (word, after) = word_and_after.split_at(len);
        if words.contains(&word) {
            out.push(' ');
            rest = after.trim_start_matches(['.', ':']);
        } else {
            out.push_str(word);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The digits of a field of a digits-only document, or `None` when it holds
/// anything but digits, separators and the Latin labels `N` / `No` / `Nº`.
fn digits_only(field: &str) -> Option<String> {
    let field = drop_words(field, &["N", "NO", "Nº"]);
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '0'..='9' => out.push(c),
            '-' | '.' | ',' | ':' | ';' | '/' | '_' | '°' | 'º' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    Some(out)
}

/// A document whose series and number are digits only: the digits of both
/// fields, in order, must make exactly one series and one number.
fn digit_document(
    fields: &Fields,
    series_len: usize,
    number_len: usize,
) -> Result<SeriesNumber, Problem> {
    let series = digits_only(fields.series()).ok_or(Problem::BadFormat)?;
    let number = digits_only(fields.number()).ok_or(Problem::BadFormat)?;
    let whole_len = series_len + number_len;
    let whole = match (series.len(), number.len()) {
        // One field repeats the other: the whole document in one field and
        // its series (or number) again in the other, or the whole in both.
        (s, n) if s == series_len && n == whole_len && number.starts_with(&series) => number,
        (s, n) if s == whole_len && n == number_len && series.ends_with(&number) => series,
        (s, n) if s == whole_len && n == whole_len && series == number => series,
        (s, n) if s + n == whole_len => series + &number,
        _ => return Err(Problem::BadFormat),
    };
    let (series, number) = whole.split_at(series_len);
    Ok((Some(series.to_string()), number.to_string()))
}

fn birth_certificate(fields: &Fields) -> Result<SeriesNumber, Problem> {
    // The usual layout: series in its field, six digits in the other.
    if let (Some(series), Some(number)) = (&fields.series, &fields.number) {
        let number = digits_only(number).filter(|n| n.len() == 6);
        let series = birth_certificate_series(&strip_whitespace(series));
        if let (Some(series), Some(number)) = (series, number) {
            return Ok((Some(series), number));
        }
    }
    // The whole certificate in the series field, the number field empty or
    // repeating its number (or all of it).
    if let Some(whole) = fields.series.as_deref().and_then(whole_birth_certificate) {
        let repeated = match fields.number.as_deref() {
            None => true,
            Some(number) => {
                digits_only(number).as_deref() == Some(whole.1.as_str())
                    || whole_birth_certificate(number).as_ref() == Some(&whole)
            }
        };
        if repeated {
            return Ok((Some(whole.0), whole.1));
        }
    }
    // The whole certificate in the number field, or spread over both:
    // `IV-АИ123456`, `IV-АИ №123456`, `IV` + `АИ 123456`.
    let (series, number) = whole_birth_certificate(&fields.glued()).ok_or(Problem::BadFormat)?;
    Ok((Some(series), number))
}

/// `IV-АИ` and `123456` from one text holding the whole certificate.
fn whole_birth_certificate(text: &str) -> Option<(String, String)> {
    let whole = strip_whitespace(&drop_words(text, &["N", "NO", "Nº"]));
    let whole = whole.trim_end_matches(['.', ',']);
    let digits = whole.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (series, number) = whole.split_at(whole.len() - digits);
    let series = series.trim_end_matches(['-', '.', ',', ':']);
    let series = birth_certificate_series(series)?;
    (number.len() == 6).then(|| (series, number.to_string()))
}

fn strip_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A document without a fixed format: series and number glued into the
/// number, separators dropped, look-alike letters in one script.
fn free_form(fields: &Fields, prefer_cyrillic: bool) -> Result<SeriesNumber, Problem> {
    let glued: String = fields
        .glued()
        .chars()
        .filter(|&c| !(c.is_whitespace() || c == '-' || c == '.'))
        .collect();
    let digits = glued.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 || (fields.number.is_none() && digits < 6) {
        return Err(Problem::BadFormat);
    }
    Ok((None, one_script(&glued, prefer_cyrillic)))
}

/// A Cyrillic letter that has a Latin look-alike, and that look-alike
/// (uppercase: [`text`] has uppercased everything).
const LOOKALIKES: &[(char, char)] = &[
    ('А', 'A'),
    ('В', 'B'),
    ('С', 'C'),
    ('Е', 'E'),
    ('Н', 'H'),
    ('І', 'I'),
    ('К', 'K'),
    ('М', 'M'),
    ('О', 'O'),
    ('Р', 'P'),
    ('Т', 'T'),
    ('Х', 'X'),
    ('У', 'Y'),
];

fn to_latin(c: char) -> Option<char> {
    LOOKALIKES
        .iter()
        .find(|(cyr, _)| *cyr == c)
        .map(|(_, l)| *l)
}

fn to_cyrillic(c: char) -> Option<char> {
    LOOKALIKES
        .iter()
        .find(|(_, l)| *l == c)
        .map(|(cyr, _)| *cyr)
}

/// `s` with every look-alike letter in one script: Cyrillic when a letter
/// exists only in Cyrillic and none only in Latin, Latin in the opposite
/// case, otherwise the preferred script. Two texts that look the same get
/// the same letters, whatever keyboard layout each was typed in.
fn one_script(s: &str, prefer_cyrillic: bool) -> String {
    let only_cyrillic = s.chars().any(|c| is_cyrillic(c) && to_latin(c).is_none());
    let only_latin = s
        .chars()
        .any(|c| c.is_ascii_alphabetic() && to_cyrillic(c).is_none());
    let cyrillic = match (only_cyrillic, only_latin) {
        (true, false) => true,
        (false, true) => false,
        _ => prefer_cyrillic,
    };
    s.chars()
        .map(|c| {
            let folded = if cyrillic {
                to_cyrillic(c)
            } else {
                to_latin(c)
            };
            folded.unwrap_or(c)
        })
        .collect()
}

/// A number made only of zeros (`000000`, `0`) is what a clerk types when
/// the form wants a document and there is none.
fn refuse_placeholder(doc: SeriesNumber) -> Result<SeriesNumber, Problem> {
    let digits = || doc.1.bytes().filter(u8::is_ascii_digit);
    if digits().all(|b| b == b'0') {
        return Err(Problem::BadFormat);
    }
    Ok(doc)
}

/// `IV-АИ` from an uppercased, whitespace-free series, or `None`.
fn birth_certificate_series(s: &str) -> Option<String> {
    let (numeral, letters) = match s.split_once('-') {
        Some(parts) => parts,
        // No dash: the letters are the last two characters.
        None => s.split_at(s.char_indices().rev().nth(1)?.0),
    };

    let mut out = String::with_capacity(numeral.len() + 1 + 4);
    for c in numeral.chars() {
        out.push(match c {
            'I' | 'V' | 'X' | 'L' | 'C' | 'D' | 'M' => c,
            'С' => 'C',
            'М' => 'M',
            'Х' => 'X',
            'І' | 'Ӏ' => 'I',
            _ => return None,
        });
    }
    if !is_roman_numeral(out.as_bytes()) {
        return None;
    }

    out.push('-');
    let mut count = 0;
    for c in letters.chars() {
        let c = latin_to_cyrillic(c).unwrap_or(c);
        if !matches!(c, 'А'..='Я' | 'Ё') {
            return None;
        }
        out.push(c);
        count += 1;
    }
    (count == 2).then_some(out)
}

/// Whether `s` is a Roman numeral in canonical form (1…3999):
/// `M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})`, non-empty.
fn is_roman_numeral(s: &[u8]) -> bool {
    fn digit(s: &[u8], one: u8, five: u8, ten: u8) -> usize {
        match s {
            [a, b, ..] if *a == one && (*b == five || *b == ten) => 2,
            _ => {
                let start = usize::from(s.first() == Some(&five));
                start + s[start..].iter().take(3).take_while(|&&c| c == one).count()
            }
        }
    }
    let mut i = s.iter().take(3).take_while(|&&c| c == b'M').count();
    i += digit(&s[i..], b'C', b'D', b'M');
    i += digit(&s[i..], b'X', b'L', b'C');
    i += digit(&s[i..], b'I', b'V', b'X');
    !s.is_empty() && i == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: DocumentType, series: &str, number: &str) -> IdentityDocument {
        document(t, Some("16"), Some(series), Some(number)).unwrap()
    }

    fn ok(d: &IdentityDocument, series: &str, number: &str) {
        assert_eq!(d.problem, None, "{d:?}");
        assert_eq!(d.series.as_deref(), Some(series), "{d:?}");
        assert_eq!(d.number, number, "{d:?}");
    }

    /// A type without a fixed format: everything in the number.
    fn glued(d: &IdentityDocument, number: &str) {
        assert_eq!(d.problem, None, "{d:?}");
        assert_eq!(d.series, None, "{d:?}");
        assert_eq!(d.number, number, "{d:?}");
    }

    fn bad(d: &IdentityDocument, problem: Problem, series: Option<&str>, number: &str) {
        assert_eq!(d.problem, Some(problem), "{d:?}");
        assert_eq!(d.series.as_deref(), series, "{d:?}");
        assert_eq!(d.number, number, "{d:?}");
    }

    /// Kept exactly as received (trimmed) with `BadFormat`.
    fn unread(t: DocumentType, series: &str, number: &str) {
        let d = doc(t, series, number);
        let series = Some(series.trim()).filter(|s| !s.is_empty());
        bad(&d, Problem::BadFormat, series, number.trim());
    }

    #[test]
    fn nothing_given_is_none() {
        assert_eq!(
            document(DocumentType::PASSPORT, Some("16"), None, None),
            None
        );
        assert_eq!(
            document(DocumentType::PASSPORT, None, Some("  "), Some("\t")),
            None
        );
        assert_eq!(
            document(DocumentType::UNKNOWN, Some("47"), Some(""), None),
            None
        );
    }

    #[test]
    fn missing_number_keeps_series() {
        let d = document(DocumentType::PASSPORT, Some(" 16 "), Some(" 45 06 "), None).unwrap();
        bad(&d, Problem::Missing, Some("45 06"), "");
        assert_eq!(d.source_type_code.as_deref(), Some("16"));
        assert_eq!(d.doc_type, DocumentType::PASSPORT);
        let d = document(DocumentType::OTHER, None, Some("AB"), Some(" ")).unwrap();
        bad(&d, Problem::Missing, Some("AB"), "");
        assert_eq!(d.source_type_code, None);
        let d = document(DocumentType::FOREIGN_PASSPORT, None, Some("KA 33"), None).unwrap();
        bad(&d, Problem::Missing, Some("KA 33"), "");
        let t = DocumentType::BIRTH_CERTIFICATE;
        let d = document(t, None, Some("IV-АИ"), None).unwrap();
        bad(&d, Problem::Missing, Some("IV-АИ"), "");
    }

    #[test]
    fn passport() {
        let t = DocumentType::PASSPORT;
        ok(&doc(t, "45 06", "012345"), "4506", "012345");
        ok(&doc(t, "4506", "123456"), "4506", "123456");
        ok(&doc(t, "45-06", " 123456 "), "4506", "123456");
        ok(&doc(t, "0\u{00A0}1 0 2", "000001"), "0102", "000001");
        // Everything in the number field.
        ok(&doc(t, "", "4506 012345"), "4506", "012345");
        ok(&doc(t, " ", "4506012345"), "4506", "012345");
        let d = document(t, None, None, Some("45 06 012345")).unwrap();
        ok(&d, "4506", "012345");
    }

    #[test]
    fn passport_as_clerks_type_it() {
        let t = DocumentType::PASSPORT;
        // A label before the number.
        ok(&doc(t, "4506", "№ 845922"), "4506", "845922");
        ok(&doc(t, "4506", "№845922"), "4506", "845922");
        ok(&doc(t, "4506", "N 845922"), "4506", "845922");
        ok(&doc(t, "4506", "No. 845922"), "4506", "845922");
        ok(&doc(t, "4506", "Nº845922"), "4506", "845922");
        ok(&doc(t, "", "45 06 № 845922"), "4506", "845922");
        // The whole passport in the series field, number empty.
        let d = document(t, Some("16"), Some("4506 123456"), None).unwrap();
        ok(&d, "4506", "123456");
        let d = document(t, Some("16"), Some("4506123456"), Some(" ")).unwrap();
        ok(&d, "4506", "123456");
        // ... or in one field with the other repeating a part of it.
        ok(&doc(t, "4506 123456", "123456"), "4506", "123456");
        ok(&doc(t, "4506", "4506 123456"), "4506", "123456");
        ok(&doc(t, "4506123456", "4506 123456"), "4506", "123456");
        // A series split across the fields.
        ok(&doc(t, "97", "20 520880"), "9720", "520880");
        ok(&doc(t, "972", "0520880"), "9720", "520880");
        // Labels in words, dashes, dots.
        ok(&doc(t, "", "серия 4506 номер 123456"), "4506", "123456");
        ok(&doc(t, "Серия: 45 06", "Номер: 123456"), "4506", "123456");
        ok(&doc(t, "сер. 4506", "ном. 123456"), "4506", "123456");
        ok(&doc(t, "", "СЕРИЯ4506НОМЕР123456"), "4506", "123456");
        ok(&doc(t, "45.06", "123-456"), "4506", "123456");
        ok(&doc(t, "", "4506/123456"), "4506", "123456");
        ok(&doc(t, "", "4506, 123456"), "4506", "123456");
        ok(&doc(t, "45\u{2013}06", "123\u{2014}456"), "4506", "123456");
    }

    #[test]
    fn bad_passport_is_kept_as_received() {
        let t = DocumentType::PASSPORT;
        unread(t, " 45 6 ", "012345");
        unread(t, "4506", "12345");
        // The number field holds a passport of another series.
        unread(t, "4507", "4506123456");
        unread(t, "4506 123456", "123457");
        unread(t, "4506 123456", "4506 123457");
        unread(t, "45O6", "123456");
        unread(t, "4506", "№12345б");
        unread(t, "", " 123456 ");
        unread(t, "", "45061234567");
        unread(t, "4506", "1234567");
        // Letters that are no label.
        unread(t, "4506", "ном 123456 выдан");
        unread(t, "IV-АИ", "123456");
        unread(t, "4506", "ab123456");
        unread(t, "4506", "123456 (старый)");
        // Two passports in the fields.
        unread(t, "", "4506 123456; 4507 654321");
        // A placeholder.
        unread(t, "0000", "000000");
        unread(t, "4506", "000000");
        unread(t, "", "№");
    }

    #[test]
    fn international_passport() {
        let t = DocumentType::INTERNATIONAL_PASSPORT;
        ok(&doc(t, "75", "0123456"), "75", "0123456");
        ok(&doc(t, "", "75 0123456"), "75", "0123456");
        ok(&doc(t, "75", "№ 0123456"), "75", "0123456");
        ok(&doc(t, "75 0123456", ""), "75", "0123456");
        ok(&doc(t, "7", "5 0123456"), "75", "0123456");
        unread(t, "75", "123456");
        unread(t, "4506", "123456");
        unread(t, "75", "012345O");
    }

    #[test]
    fn birth_certificate_forms() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        ok(&doc(t, "IV-АИ", "123456"), "IV-АИ", "123456");
        ok(&doc(t, "IVАИ", "012345"), "IV-АИ", "012345");
        ok(&doc(t, "IV АИ", "123456"), "IV-АИ", "123456");
        ok(&doc(t, "iv-аи", "123456"), "IV-АИ", "123456");
        ok(&doc(t, " IV \u{2013} АИ ", "123456"), "IV-АИ", "123456");
        ok(&doc(t, "XIV-СМ", "123456"), "XIV-СМ", "123456");
        ok(&doc(t, "IVСМ", "123456"), "IV-СМ", "123456");
        ok(&doc(t, "LXXXIX-ЁЖ", "123456"), "LXXXIX-ЁЖ", "123456");
        ok(&doc(t, "IV-АИ", "№ 123456"), "IV-АИ", "123456");
        ok(&doc(t, "IV-АИ-", "123456"), "IV-АИ", "123456");
        ok(&doc(t, "серия IV-АИ", "номер 123 456"), "IV-АИ", "123456");
    }

    #[test]
    fn birth_certificate_lookalikes_are_folded_per_part() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        // Cyrillic І and Х in the numeral, Latin A and E in the letters.
        ok(&doc(t, "ХІV-AE", "123456"), "XIV-АЕ", "123456");
        // Cyrillic С, Х in the numeral; Latin C, M, P in the letters.
        ok(&doc(t, "ХС-CM", "123456"), "XC-СМ", "123456");
        ok(&doc(t, "iv-pa", "123456"), "IV-РА", "123456");
        let d = doc(t, "ХС-CM", "123456");
        assert!(d.series.unwrap().starts_with("XC-"));
    }

    #[test]
    fn birth_certificate_in_one_field_or_spread() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        ok(&doc(t, "", "IV-АИ 123456"), "IV-АИ", "123456");
        // Cyrillic І, Latin A mixed in.
        ok(&doc(t, "", "ІV-AИ 123456"), "IV-АИ", "123456");
        ok(&doc(t, "", "ІV-AИ-012345"), "IV-АИ", "012345");
        ok(&doc(t, "", "iv аи 123456"), "IV-АИ", "123456");
        ok(&doc(t, "", "IV-АИ №123456"), "IV-АИ", "123456");
        ok(&doc(t, "", "серия IV-АИ номер 123456"), "IV-АИ", "123456");
        let d = document(t, Some("3"), None, Some("IV-АИ 123456")).unwrap();
        ok(&d, "IV-АИ", "123456");
        // The whole certificate in the series field.
        let d = document(t, Some("3"), Some("IV-АИ 123456"), None).unwrap();
        ok(&d, "IV-АИ", "123456");
        ok(&doc(t, "IV-АИ 123456", "123456"), "IV-АИ", "123456");
        ok(&doc(t, "IV-АИ 123456", "IV АИ 123456"), "IV-АИ", "123456");
        // The letters with the number.
        ok(&doc(t, "IV", "АИ 123456"), "IV-АИ", "123456");
    }

    #[test]
    fn bad_birth_certificate_is_kept_as_received() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        for series in [
            "IIII-АИ",
            "VX-АИ",
            "IV-АИБ",
            "IV-А",
            "-АИ",
            "АИ",
            "IV-ZZ",
            "4-АИ",
            "IVAN",
        ] {
            unread(t, series, "123456");
        }
        unread(t, "IV-АИ", "12345");
        unread(t, "IV-АИ", "1234567");
        unread(t, "IV-АИ", "000000");
        unread(t, "", "123456");
        unread(t, "", " IV-АИ ");
        unread(t, "", "IV-АИ 123456 789");
        unread(t, "IV-АИ 123456", "654321");
    }

    #[test]
    fn free_form_types_glue_series_and_number() {
        let t = DocumentType::FOREIGN_PASSPORT;
        // One system types it whole, the other splits it: one canonical form.
        glued(&doc(t, "", "KA3394495"), "KA3394495");
        glued(&doc(t, "KA", "3394495"), "KA3394495");
        glued(&doc(t, "ka", "339 44 95"), "KA3394495");
        glued(&doc(t, "K", "A3394495"), "KA3394495");
        glued(&doc(t, "KA-", "3394495."), "KA3394495");
        glued(&doc(t, "KA", "№ 3394495"), "KA3394495");
        // Cyrillic look-alikes in a Latin series (К and А typed in Cyrillic).
        glued(&doc(t, "КА", "3394495"), "KA3394495");
        glued(&doc(t, "Кa", "3394495"), "KA3394495");
        // The whole document in the series field.
        let d = document(t, None, Some("KA 3394495"), None).unwrap();
        glued(&d, "KA3394495");
        // A letter only Cyrillic has: the look-alikes go Cyrillic.
        glued(&doc(t, "ЖA", "123456"), "ЖА123456");
        glued(&doc(t, "ЖА", "123456"), "ЖА123456");
        // A letter only Latin has: the look-alikes go Latin.
        glued(&doc(t, "NА", "1234567"), "NA1234567");
        glued(&doc(t, "", "N1234567"), "N1234567");
    }

    #[test]
    fn russian_letter_series_are_cyrillic() {
        let t = DocumentType::MILITARY_ID;
        glued(&doc(t, "АК", "1234567"), "АК1234567");
        // Latin look-alikes in a Cyrillic series.
        glued(&doc(t, "AK", "1234567"), "АК1234567");
        glued(&doc(t, "aк", "123 45 67"), "АК1234567");
        glued(&doc(DocumentType::RESERVE_OFFICER_ID, "ao", "1"), "АО1");
    }

    #[test]
    fn other_types_keep_what_they_cannot_read() {
        let t = DocumentType::FOREIGN_PASSPORT;
        unread(t, "", "нет");
        unread(t, "", "-");
        unread(t, "", "0000000");
        unread(t, "KA", "0000000");
        let d = doc(DocumentType::UNKNOWN, "", "00 12");
        glued(&d, "0012");
        // NFC, then uppercase: е + U+0308 → Ё.
        glued(&doc(DocumentType::OTHER, "е\u{0308}ж", "1"), "ЁЖ1");
        glued(
            &doc(DocumentType::OTHER, " ab\u{2014}12 ", " c 0012 "),
            "AB12C0012",
        );
    }

    #[test]
    fn canonical_forms_are_fixed_points() {
        let cases = [
            (DocumentType::PASSPORT, "97", "20 520880"),
            (DocumentType::INTERNATIONAL_PASSPORT, "", "75 0123456"),
            (DocumentType::BIRTH_CERTIFICATE, "", "ІV-AИ №012345"),
            (DocumentType::FOREIGN_PASSPORT, "Кa", "339 44 95"),
            (DocumentType::MILITARY_ID, "ak", "1234567"),
            (DocumentType::OTHER, "ЖA", "12"),
        ];
        for (t, series, number) in cases {
            let d = doc(t, series, number);
            let again = doc(t, d.series.as_deref().unwrap_or(""), &d.number);
            assert_eq!(again, d);
        }
    }

    #[test]
    fn labels_are_whole_words_only() {
        assert_eq!(
            drop_words("СЕРИЯ 4506 НОМЕР: 1", &["СЕРИЯ", "НОМЕР"]),
            "  4506   1"
        );
        assert_eq!(drop_words("НОМЕРА", &["НОМЕР"]), "НОМЕРА");
        assert_eq!(drop_words("N1", &["N"]), " 1");
        assert_eq!(drop_words("IVN", &["N"]), "IVN");
    }

    #[test]
    fn roman_numerals() {
        for good in [
            "I",
            "IV",
            "IX",
            "XIV",
            "XL",
            "XC",
            "XCIX",
            "CM",
            "MMXXIV",
            "MMMCMXCIX",
            "LXXXVIII",
        ] {
            assert!(is_roman_numeral(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "IIII", "VV", "IC", "IM", "XM", "VX", "IIV", "MMMM", "XXXX", "ABC",
        ] {
            assert!(!is_roman_numeral(bad.as_bytes()), "{bad}");
        }
    }
}
