//! Person-name normalization, and the text helpers the other normalizers share.

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Normalizes a person's name part (last, first or middle name).
///
/// * Unicode NFC: `е` + U+0308 becomes `ё`; `ё` is kept, never folded to `е`.
/// * Trimmed; every run of whitespace (spaces, NBSP, tabs, newlines…) becomes
///   one space.
/// * Hyphen-like dashes (`‐ ‑ ‒ – — ―`, minus sign…) become `-`, with no space
///   around it: `Петров - Водкин` → `Петров-Водкин`. A run of separators that
///   holds a dash becomes a single `-`.
/// * Latin look-alike letters are folded to Cyrillic in every word (run
///   between spaces and hyphens) that holds at least one Cyrillic letter; see
///   [`fold_lookalikes_to_cyrillic`]. Latin-only words (`Smith`) stay Latin.
/// * Letter case is kept as given.
///
/// Empty or whitespace-only input yields `None`.
pub fn name(raw: &str) -> Option<String> {
    let s = nfc(raw);
    let mut out = String::with_capacity(s.len());
    let mut rest: &str = &s;
    loop {
        let sep_len = rest.find(|c| !is_name_separator(c)).unwrap_or(rest.len());
        let (sep, after) = rest.split_at(sep_len);
        if sep.chars().any(is_dash) {
            out.push('-');
        } else if !sep.is_empty() && !out.is_empty() && !after.is_empty() {
            out.push(' ');
        }
        if after.is_empty() {
            break;
        }
        let word_len = after.find(is_name_separator).unwrap_or(after.len());
        let (word, after_word) = after.split_at(word_len);
        push_folded_word(&mut out, word);
        rest = after_word;
    }
    (!out.is_empty()).then_some(out)
}

/// Folds Latin look-alike letters to Cyrillic inside words that contain
/// Cyrillic, and leaves everything else (separators included) as it is.
///
/// A word is a run of characters between whitespace and hyphen-like dashes.
/// Folded: `A B C E H K M O P T X Y a c e o p x y`, and `Ë ë` (what NFC makes
/// of a Latin `e` + U+0308) to `Ё ё`. `Ивaнов` (Latin `a`) → `Иванов`;
/// `Smith` stays Latin.
pub fn fold_lookalikes_to_cyrillic(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let word_len = rest.find(is_name_separator).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_len);
        push_folded_word(&mut out, word);
        let sep_len = after.find(|c| !is_name_separator(c)).unwrap_or(after.len());
        let (sep, after_sep) = after.split_at(sep_len);
        out.push_str(sep);
        rest = after_sep;
    }
    out
}

/// Pushes `word`, folding Latin look-alikes to Cyrillic if it holds Cyrillic.
fn push_folded_word(out: &mut String, word: &str) {
    let folds = word.chars().any(|c| latin_to_cyrillic(c).is_some());
    if folds && word.chars().any(is_cyrillic) {
        out.extend(word.chars().map(|c| latin_to_cyrillic(c).unwrap_or(c)));
    } else {
        // Nothing to fold (nearly every name): copied whole, not per char.
        out.push_str(word);
    }
}

fn is_name_separator(c: char) -> bool {
    c.is_whitespace() || is_dash(c)
}

/// Whether `c` is a hyphen or dash: `-`, U+2010…U+2015 (`‐ ‑ ‒ – — ―`), the
/// minus sign and the small/full-width hyphen-minus.
pub(super) fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}'
    )
}

/// Whether `c` is a Cyrillic letter (Cyrillic and Cyrillic Supplement blocks,
/// without the combining marks and the thousands sign).
pub(super) fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{0482}' | '\u{048A}'..='\u{052F}')
}

/// The Cyrillic letter a Latin look-alike stands for, if `c` is one.
pub(super) fn latin_to_cyrillic(c: char) -> Option<char> {
    Some(match c {
        'A' => 'А',
        'B' => 'В',
        'C' => 'С',
        'E' => 'Е',
        'H' => 'Н',
        'K' => 'К',
        'M' => 'М',
        'O' => 'О',
        'P' => 'Р',
        'T' => 'Т',
        'X' => 'Х',
        'Y' => 'У',
        'a' => 'а',
        'c' => 'с',
        'e' => 'е',
        'o' => 'о',
        'p' => 'р',
        'x' => 'х',
        'y' => 'у',
        'Ë' => 'Ё',
        'ë' => 'ё',
        _ => return None,
    })
}

/// `s` in Unicode NFC, borrowed when it already is (always for ASCII and
/// for Cyrillic letters without combining marks: nearly every Russian name).
pub(super) fn nfc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || s.chars().all(is_nfc_starter) || is_nfc_quick(s.chars()) == IsNormalized::Yes
    {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.nfc().collect())
    }
}

/// Whether `c` is, on its own and followed by anything, left unchanged by
/// NFC before the next such character: NFC_Quick_Check = Yes and canonical
/// combining class 0. True of everything below U+0300 (ASCII, Latin-1,
/// Latin Extended-A/B, IPA, spacing modifiers) and of the Cyrillic letters
/// U+0400–U+0482 and U+048A–U+04FF. A string made only of such characters
/// is in NFC: the quick check's answer, without its table look-ups per
/// character (checked against `unicode-normalization` in a test).
fn is_nfc_starter(c: char) -> bool {
    matches!(c, '\0'..='\u{02FF}' | '\u{0400}'..='\u{0482}' | '\u{048A}'..='\u{04FF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none() {
        assert_eq!(name(""), None);
        assert_eq!(name("   "), None);
        assert_eq!(name("\u{00A0}\t\n "), None);
    }

    #[test]
    fn yo_is_composed_and_kept() {
        // е (U+0435) + combining diaeresis (U+0308)
        let decomposed = "Соловье\u{0308}в";
        assert_eq!(decomposed.chars().count(), 9);
        let n = name(decomposed).unwrap();
        assert_eq!(n, "Соловьёв");
        assert_eq!(n.chars().count(), 8);
        assert_eq!(name("Фёдор").unwrap(), "Фёдор");
        assert_eq!(name("ЁЛКИН").unwrap(), "ЁЛКИН");
        // A Latin e + U+0308 typed into a Cyrillic word: NFC gives Latin ë,
        // folded to Cyrillic ё.
        assert_eq!(name("Фe\u{0308}дор").unwrap(), "Фёдор");
    }

    #[test]
    fn whitespace_is_trimmed_and_collapsed() {
        assert_eq!(name("  иванова   мария ").unwrap(), "иванова мария");
        assert_eq!(
            name("Анна\u{00A0}\u{00A0}Мария\t\nЛуиза").unwrap(),
            "Анна Мария Луиза"
        );
        assert_eq!(name("Иванов").unwrap(), "Иванов");
    }

    #[test]
    fn double_surnames_get_a_plain_hyphen() {
        assert_eq!(name("Петров - Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров\u{2013}Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров \u{2014} Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров\u{2010}Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров\u{2011}Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров\u{2012}Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров\u{2015}Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Петров -- Водкин").unwrap(), "Петров-Водкин");
        assert_eq!(name("Салтыков-Щедрин").unwrap(), "Салтыков-Щедрин");
        // A lone placeholder dash is kept, not dropped.
        assert_eq!(name(" - ").unwrap(), "-");
    }

    #[test]
    fn latin_lookalikes_fold_in_cyrillic_words_only() {
        assert_eq!(name("Ивaнов").unwrap(), "Иванов"); // Latin a
        assert_eq!(name("CEMEHOB").unwrap(), "CEMEHOB"); // all Latin: a Latin word
        assert_eq!(name("CEMEНOB").unwrap(), "СЕМЕНОВ"); // one Cyrillic Н
        assert_eq!(name("Ivanov").unwrap(), "Ivanov");
        assert_eq!(name("Smith").unwrap(), "Smith");
        assert_eq!(name("John Смирнoв").unwrap(), "John Смирнов");
        assert_eq!(name("Smith-Петрoва").unwrap(), "Smith-Петрова");
        assert_eq!(name("пeтpoв").unwrap(), "петров");
        // Letters with no look-alike stay as they are.
        assert_eq!(name("Иванz").unwrap(), "Иванz");
    }

    #[test]
    fn fold_keeps_separators() {
        assert_eq!(
            fold_lookalikes_to_cyrillic("Ивaнов  Smith"),
            "Иванов  Smith"
        );
        assert_eq!(
            fold_lookalikes_to_cyrillic("Кopoлёвa – Smith"),
            "Королёва – Smith"
        );
        assert_eq!(fold_lookalikes_to_cyrillic("AKMOPTXY-Я"), "AKMOPTXY-Я");
        assert_eq!(fold_lookalikes_to_cyrillic("AKMOPTXYЯ"), "АКМОРТХУЯ");
        assert_eq!(fold_lookalikes_to_cyrillic("BCEHacepoxyЖ"), "ВСЕНасерохуЖ");
        assert_eq!(fold_lookalikes_to_cyrillic(""), "");
        assert_eq!(fold_lookalikes_to_cyrillic(" a "), " a ");
    }

    #[test]
    fn nfc_starters_are_what_the_quick_check_says() {
        use unicode_normalization::char::canonical_combining_class;
        for c in (0..=0x04FF_u32).filter_map(char::from_u32) {
            if is_nfc_starter(c) {
                assert_eq!(canonical_combining_class(c), 0, "{:04X}", c as u32);
                assert_eq!(
                    is_nfc_quick(std::iter::once(c)),
                    IsNormalized::Yes,
                    "{:04X}",
                    c as u32
                );
                // Nothing composes with a following starter either.
                assert_eq!(format!("{c}Ж").nfc().collect::<String>(), format!("{c}Ж"));
            }
        }
        // Cyrillic with a combining mark is left to the full check.
        assert!(!"е\u{0308}".chars().all(is_nfc_starter));
    }

    #[test]
    fn nfc_borrows_when_already_normal() {
        assert!(matches!(nfc("Ivanov"), Cow::Borrowed(_)));
        assert!(matches!(nfc("Иванов"), Cow::Borrowed(_)));
        assert!(matches!(nfc("е\u{0308}"), Cow::Owned(_)));
    }
}
