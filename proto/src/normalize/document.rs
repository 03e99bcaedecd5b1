//! Identity documents: series and number as text, validated per type.

use super::name::{is_dash, latin_to_cyrillic, nfc};
use super::Problem;
use crate::{DocumentType, IdentityDocument};

/// Normalizes a document's series and number for its canonical type.
///
/// Series and number are always text (leading zeros kept). Both go through the
/// generic normalization: NFC, uppercase, all whitespace removed, dashes
/// unified to `-`. Then, per type:
///
/// * [`DocumentType::PASSPORT`]: series 4 digits, number 6 digits (dashes
///   dropped: `45 06` / `45-06` → `4506`). With an empty series, a number of
///   10 digits (`4506 123456`) is split 4 + 6.
/// * [`DocumentType::INTERNATIONAL_PASSPORT`]: series 2 digits, number 7
///   digits; with an empty series, a 9-digit number is split 2 + 7.
/// * [`DocumentType::BIRTH_CERTIFICATE`]: series = Roman numeral in Latin
///   letters, `-`, two Cyrillic letters (canonical `IV-АИ`), number 6 digits.
///   Cyrillic look-alikes in the numeral (`С М Х І`) are read as Latin, Latin
///   look-alikes in the letters as Cyrillic; the dash may be missing or be a
///   space (`IVАИ`, `IV АИ`, `iv-аи`). With an empty series, the number field
///   may hold both (`IV-АИ 123456`).
/// * Any other type: the generic normalization only, no validation.
///
/// When series and number are both empty: `None`. When the number is empty
/// but a series is given: [`Problem::Missing`], number `""`. When they do not
/// fit the type: [`Problem::BadFormat`]. With a problem, series and number are
/// kept as received (trimmed).
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

    let normalized = match raw_number {
        None => Err(Problem::Missing),
        Some(raw_number) => {
            let series = raw_series.map(text);
            let number = text(raw_number);
            match doc_type {
                DocumentType::PASSPORT => digit_document(series, number, 4, 6),
                DocumentType::INTERNATIONAL_PASSPORT => digit_document(series, number, 2, 7),
                DocumentType::BIRTH_CERTIFICATE => birth_certificate(series, number),
                _ => Ok((series, number)),
            }
        }
    };
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

type SeriesNumber = (Option<String>, String);

/// Generic text normalization of a series or number: NFC, uppercase, no
/// whitespace, every dash as `-`.
fn text(raw: &str) -> String {
    let s = nfc(raw);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() {
            continue;
        }
        if is_dash(c) {
            out.push('-');
        } else if c.is_ascii() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.extend(c.to_uppercase());
        }
    }
    out
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// A document whose series and number are digits only.
fn digit_document(
    series: Option<String>,
    mut number: String,
    series_len: usize,
    number_len: usize,
) -> Result<SeriesNumber, Problem> {
    number.retain(|c| c != '-');
    match series {
        Some(mut series) => {
            series.retain(|c| c != '-');
            if is_digits(&series, series_len) && is_digits(&number, number_len) {
                Ok((Some(series), number))
            } else {
                Err(Problem::BadFormat)
            }
        }
        None if is_digits(&number, series_len + number_len) => {
            let number_part = number.split_off(series_len);
            Ok((Some(number), number_part))
        }
        None => Err(Problem::BadFormat),
    }
}

fn birth_certificate(series: Option<String>, number: String) -> Result<SeriesNumber, Problem> {
    let (series, number) = match series {
        Some(series) => (series, number),
        None => {
            // The whole document in the number field: `IV-АИ123456`.
            let digits = number.bytes().rev().take_while(u8::is_ascii_digit).count();
            let split = number.len() - digits;
            let series = number[..split]
                .strip_suffix('-')
                .unwrap_or(&number[..split]);
            (series.to_string(), number[split..].to_string())
        }
    };
    let series = birth_certificate_series(&series).ok_or(Problem::BadFormat)?;
    if !is_digits(&number, 6) {
        return Err(Problem::BadFormat);
    }
    Ok((Some(series), number))
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

    fn bad(d: &IdentityDocument, problem: Problem, series: Option<&str>, number: &str) {
        assert_eq!(d.problem, Some(problem), "{d:?}");
        assert_eq!(d.series.as_deref(), series, "{d:?}");
        assert_eq!(d.number, number, "{d:?}");
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
    }

    #[test]
    fn passport() {
        ok(
            &doc(DocumentType::PASSPORT, "45 06", "012345"),
            "4506",
            "012345",
        );
        ok(
            &doc(DocumentType::PASSPORT, "4506", "123456"),
            "4506",
            "123456",
        );
        ok(
            &doc(DocumentType::PASSPORT, "45-06", " 123456 "),
            "4506",
            "123456",
        );
        ok(
            &doc(DocumentType::PASSPORT, "0\u{00A0}1 0 2", "000001"),
            "0102",
            "000001",
        );
        // Everything in the number field.
        ok(
            &doc(DocumentType::PASSPORT, "", "4506 012345"),
            "4506",
            "012345",
        );
        ok(
            &doc(DocumentType::PASSPORT, " ", "4506012345"),
            "4506",
            "012345",
        );
        let d = document(DocumentType::PASSPORT, None, None, Some("45 06 012345")).unwrap();
        ok(&d, "4506", "012345");
    }

    #[test]
    fn bad_passport_is_kept_as_received() {
        bad(
            &doc(DocumentType::PASSPORT, " 45 6 ", "012345"),
            Problem::BadFormat,
            Some("45 6"),
            "012345",
        );
        bad(
            &doc(DocumentType::PASSPORT, "4506", "12345"),
            Problem::BadFormat,
            Some("4506"),
            "12345",
        );
        bad(
            &doc(DocumentType::PASSPORT, "4506", "4506123456"),
            Problem::BadFormat,
            Some("4506"),
            "4506123456",
        );
        bad(
            &doc(DocumentType::PASSPORT, "45O6", "123456"),
            Problem::BadFormat,
            Some("45O6"),
            "123456",
        );
        bad(
            &doc(DocumentType::PASSPORT, "4506", "№123456"),
            Problem::BadFormat,
            Some("4506"),
            "№123456",
        );
        bad(
            &doc(DocumentType::PASSPORT, "", " 123456 "),
            Problem::BadFormat,
            None,
            "123456",
        );
        bad(
            &doc(DocumentType::PASSPORT, "", "45061234567"),
            Problem::BadFormat,
            None,
            "45061234567",
        );
    }

    #[test]
    fn international_passport() {
        ok(
            &doc(DocumentType::INTERNATIONAL_PASSPORT, "75", "0123456"),
            "75",
            "0123456",
        );
        ok(
            &doc(DocumentType::INTERNATIONAL_PASSPORT, "", "75 0123456"),
            "75",
            "0123456",
        );
        bad(
            &doc(DocumentType::INTERNATIONAL_PASSPORT, "75", "123456"),
            Problem::BadFormat,
            Some("75"),
            "123456",
        );
        bad(
            &doc(DocumentType::INTERNATIONAL_PASSPORT, "4506", "123456"),
            Problem::BadFormat,
            Some("4506"),
            "123456",
        );
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
    fn birth_certificate_in_the_number_field() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        ok(&doc(t, "", "IV-АИ 123456"), "IV-АИ", "123456");
        // Cyrillic І, Latin A mixed in.
        ok(&doc(t, "", "ІV-AИ 123456"), "IV-АИ", "123456");
        ok(&doc(t, "", "ІV-AИ-012345"), "IV-АИ", "012345");
        ok(&doc(t, "", "iv аи 123456"), "IV-АИ", "123456");
        let d = document(t, Some("3"), None, Some("IV-АИ 123456")).unwrap();
        ok(&d, "IV-АИ", "123456");
    }

    #[test]
    fn bad_birth_certificate_is_kept_as_received() {
        let t = DocumentType::BIRTH_CERTIFICATE;
        bad(
            &doc(t, "IV-АИ", "12345"),
            Problem::BadFormat,
            Some("IV-АИ"),
            "12345",
        );
        bad(
            &doc(t, "IIII-АИ", "123456"),
            Problem::BadFormat,
            Some("IIII-АИ"),
            "123456",
        );
        bad(
            &doc(t, "VX-АИ", "123456"),
            Problem::BadFormat,
            Some("VX-АИ"),
            "123456",
        );
        bad(
            &doc(t, "IV-АИБ", "123456"),
            Problem::BadFormat,
            Some("IV-АИБ"),
            "123456",
        );
        bad(
            &doc(t, "IV-А", "123456"),
            Problem::BadFormat,
            Some("IV-А"),
            "123456",
        );
        bad(
            &doc(t, "-АИ", "123456"),
            Problem::BadFormat,
            Some("-АИ"),
            "123456",
        );
        bad(
            &doc(t, "АИ", "123456"),
            Problem::BadFormat,
            Some("АИ"),
            "123456",
        );
        bad(
            &doc(t, "IV-ZZ", "123456"),
            Problem::BadFormat,
            Some("IV-ZZ"),
            "123456",
        );
        bad(
            &doc(t, "IV-АИ-", "123456"),
            Problem::BadFormat,
            Some("IV-АИ-"),
            "123456",
        );
        bad(
            &doc(t, "4-АИ", "123456"),
            Problem::BadFormat,
            Some("4-АИ"),
            "123456",
        );
        bad(
            &doc(t, "IVAN", "123456"),
            Problem::BadFormat,
            Some("IVAN"),
            "123456",
        );
        bad(&doc(t, "", "123456"), Problem::BadFormat, None, "123456");
        bad(&doc(t, "", " IV-АИ "), Problem::BadFormat, None, "IV-АИ");
        bad(
            &doc(t, "", "IV-АИ №123456"),
            Problem::BadFormat,
            None,
            "IV-АИ №123456",
        );
    }

    #[test]
    fn other_types_get_the_generic_normalization_only() {
        let d = doc(DocumentType::FOREIGN_PASSPORT, " ab\u{2014}12 ", " c 0012 ");
        ok(&d, "AB-12", "C0012");
        let d = doc(DocumentType::UNKNOWN, "", "00 12");
        assert_eq!(d.series, None);
        assert_eq!(d.number, "0012");
        assert_eq!(d.problem, None);
        // NFC, then uppercase: е + U+0308 → Ё.
        let d = doc(DocumentType::OTHER, "е\u{0308}ж", "1");
        ok(&d, "ЁЖ", "1");
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
