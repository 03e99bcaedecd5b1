//! Russian phone numbers.

use super::name::is_dash;
use super::{Checked, Problem};

/// Normalizes a phone number to `7` + 10 digits (`+7 (912) 345-67-89`,
/// `8-912-345-67-89` → `79123456789`).
///
/// Valid: 11 digits starting with `7` or `8` (with a leading `+` only `7`),
/// or 10 digits starting with `9` (a mobile number without prefix). Besides
/// the digits, spaces, dashes, parentheses, dots and one leading `+` may
/// appear in the number. Words around it are notes, not part of it:
/// `8(925)123-45-67 мобильный`, `моб. 8-912-345-67-89`, `тел.: …`,
/// `… (мама)` read as the number, as long as the digits stand in one place
/// only (`8-912-345-67-89 с 9 до 18`, a letter inside the number, or two
/// numbers without a separator are not read).
///
/// An extension (from `доб`, `ext` or `#` on, any case) is dropped when the
/// number before it is valid: the canonical phone names the line, which is
/// what two records of one person share; an extension is the desk behind a
/// switchboard, never typed the same way twice, and no part of the matching.
///
/// Anything else (local 6-digit numbers, too many digits, several numbers in
/// one field — see [`split_phones`]) is [`Problem::BadFormat`], kept as
/// received, trimmed. Empty input yields `None`.
pub fn phone(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let main = match extension_start(s) {
        Some(i) => &s[..i],
        None => s,
    };
    Some(match the_number(main).and_then(canonical) {
        Some(number) => Checked::valid(number),
        None => Checked::invalid(s, Problem::BadFormat),
    })
}

/// The one stretch of `s` between words that holds digits, without the
/// punctuation around it; `None` when digits stand in more than one place.
fn the_number(s: &str) -> Option<&str> {
    let mut found = None;
    for stretch in s.split(char::is_alphabetic) {
        if stretch.bytes().any(|b| b.is_ascii_digit()) {
            if found.is_some() {
                return None;
            }
            found = Some(stretch);
        }
    }
    found.map(|n| {
        n.trim_matches(|c: char| {
            c.is_whitespace() || matches!(c, ',' | ';' | ':' | '.' | '"' | '«' | '»')
        })
    })
}

/// Splits a free-text field holding several phones on `,`, `;`, `/`, line
/// breaks and the word `или` ("or") between spaces. Pieces are trimmed;
/// empty ones are left out. A single phone with spaces, dashes or
/// parentheses stays one piece.
///
/// A piece whose every part between spaces that holds digits is a whole
/// valid number on its own (`89123456789 89123456780`, `8-912-345-67-89 моб
/// 8-343-123-45-67 дом`) is split into those numbers.
pub fn split_phones(raw: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    for piece in raw.split([',', ';', '/', '\n', '\r']) {
        split_on_or(piece, &mut pieces);
    }
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match whole_numbers(piece) {
            Some(numbers) => out.extend(numbers),
            None => out.push(piece),
        }
    }
    out
}

/// The parts of `piece` between spaces that hold digits, when there are
/// several and each is a valid number by itself.
fn whole_numbers(piece: &str) -> Option<Vec<&str>> {
    let numbers: Vec<&str> = piece
        .split_whitespace()
        .filter(|part| part.bytes().any(|b| b.is_ascii_digit()))
        .collect();
    let each_valid = numbers.iter().all(|n| canonical(n).is_some());
    (numbers.len() > 1 && each_valid).then_some(numbers)
}

fn split_on_or<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    const OR: &str = "или";
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if !c.is_whitespace() {
            continue;
        }
        let after = &s[i + c.len_utf8()..];
        // Every case of "или" is as long in UTF-8 as "или" itself.
        if starts_with_ignore_case(after, OR) && after[OR.len()..].starts_with(char::is_whitespace)
        {
            push_trimmed(out, &s[start..i]);
            start = i + c.len_utf8() + OR.len();
        }
    }
    push_trimmed(out, &s[start..]);
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let s = s.trim();
    if !s.is_empty() {
        out.push(s);
    }
}

/// Where an extension starts, if there is one: `#`, or the word `доб`
/// (`доб.`, `добавочный`) or `ext` (`ext.`, `extension`) in any case — not
/// the same letters inside another word (`Добрынина`).
fn extension_start(s: &str) -> Option<usize> {
    let mut prev_is_letter = false;
    for (i, c) in s.char_indices() {
        let found = match c {
            '#' => true,
            'д' | 'Д' if !prev_is_letter => is_marker(&s[i..], "доб", "авоч"),
            'e' | 'E' if !prev_is_letter => is_marker(&s[i..], "ext", "ension"),
            _ => false,
        };
        if found {
            return Some(i);
        }
        prev_is_letter = c.is_alphabetic();
    }
    None
}

/// Whether `s` starts with the word `marker`, or with `marker` + `longer`.
fn is_marker(s: &str, marker: &str, longer: &str) -> bool {
    if !starts_with_ignore_case(s, marker) {
        return false;
    }
    // Every case of these letters is as long in UTF-8 as the lowercase.
    let rest = &s[marker.len()..];
    !rest.starts_with(char::is_alphabetic) || starts_with_ignore_case(rest, longer)
}

/// Whether `s` starts with `lower` (lowercase) in any letter case.
fn starts_with_ignore_case(s: &str, lower: &str) -> bool {
    let mut chars = s.chars();
    lower.chars().all(|l| {
        chars
            .next()
            .is_some_and(|c| c == l || c.to_lowercase().eq(std::iter::once(l)))
    })
}

/// `7` + 10 digits, or `None` when `s` is not a valid number on its own.
fn canonical(s: &str) -> Option<String> {
    let mut digits = [0u8; 11];
    let mut n = 0;
    let mut plus = false;
    for c in s.chars() {
        match c {
            '0'..='9' => {
                *digits.get_mut(n)? = c as u8;
                n += 1;
            }
            '+' if n == 0 && !plus => plus = true,
            '(' | ')' | '.' => {}
            c if c.is_whitespace() || is_dash(c) => {}
            _ => return None,
        }
    }
    let national = match (n, digits[0]) {
        (11, b'7') => &digits[1..11],
        (11, b'8') if !plus => &digits[1..11],
        (10, b'9') if !plus => &digits[..10],
        _ => return None,
    };
    let mut out = String::with_capacity(11);
    out.push('7');
    out.extend(national.iter().map(|&d| char::from(d)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(raw: &str, expected: &str) {
        assert_eq!(phone(raw), Some(Checked::valid(expected)), "{raw}");
    }

    fn bad(raw: &str) {
        assert_eq!(
            phone(raw),
            Some(Checked::invalid(raw.trim(), Problem::BadFormat)),
            "{raw}"
        );
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(phone(""), None);
        assert_eq!(phone(" \t "), None);
    }

    #[test]
    fn valid_numbers() {
        valid("+7 (912) 345-67-89", "79123456789");
        valid("8-912-345-67-89", "79123456789");
        valid("8 (343) 123-45-67", "73431234567");
        valid("89123456789", "79123456789");
        valid("79123456789", "79123456789");
        valid("+79123456789", "79123456789");
        valid("9123456789", "79123456789");
        valid("912 345 67 89", "79123456789");
        valid(
            " 8\u{00A0}912\u{2013}345\u{2013}67\u{2013}89 ",
            "79123456789",
        );
        valid("+7.912.345.67.89", "79123456789");
    }

    #[test]
    fn extensions_are_dropped_from_valid_numbers() {
        valid("8 (343) 123-45-67 доб. 123", "73431234567");
        valid("8 (343) 123-45-67, Доб.123", "73431234567");
        valid("8 (343) 123-45-67 (доб 12)", "73431234567");
        valid("+7 343 123 45 67 ext. 5", "73431234567");
        valid("+7 343 123 45 67 EXT 5", "73431234567");
        valid("+7 343 123 45 67 #5", "73431234567");
        valid("8 (343) 123-45-67 добавочный 12", "73431234567");
        valid("8 (343) 123-45-67 Extension 12", "73431234567");
        valid("8 (343) 123-45-67 доб:12", "73431234567");
        valid("8-912-345-67-89 Добрынина доб. 1", "79123456789");
        valid("8(925)123-45-67 доб. 123 мобильный", "79251234567");
        bad("22-33-44 доб. 5");
        bad("доб. 123");
    }

    #[test]
    fn words_around_the_number_are_notes() {
        valid("8(925)123-45-67 мобильный", "79251234567");
        valid("моб. 8-912-345-67-89", "79123456789");
        valid("Моб.тел.: +7 912 345-67-89", "79123456789");
        valid("тел. 8 (343) 123-45-67 (раб.)", "73431234567");
        valid("8-912-345-67-89 (мама)", "79123456789");
        valid("8-912-345-67-89 Иванова", "79123456789");
        valid("8-912-345-67-89 Добрынина", "79123456789");
        valid("8-912-345-67-89 text", "79123456789");
        valid("mob: «89123456789»", "79123456789");
        // Digits in two places: hours, a letter for a digit, a name between
        // two numbers.
        bad("8-912-345-67-89 с 9 до 18");
        bad("8-912-З45-67-89");
        bad("8-9I2-345-67-89");
        bad("89123456789 Иван 89123456780");
        // Words do not make a short number whole.
        bad("дом. 22-33-44");
        bad("мобильный");
    }

    #[test]
    fn invalid_numbers_are_kept_as_received() {
        bad("22-33-44");
        bad(" 22-33-44 ");
        bad("223344");
        bad("нет");
        bad("abc");
        bad("8912345678");
        bad("891234567890");
        bad("3431234567");
        bad("+8 912 345 67 89");
        bad("+9123456789");
        bad("7+9123456789");
        bad("8-912-345-67-89, 8-343-123-45-67");
        bad("89123456789 89123456780");
        bad("8912345678９");
    }

    #[test]
    fn split_several_phones() {
        assert_eq!(
            split_phones("8-912-345-67-89, +7 (343) 123-45-67"),
            ["8-912-345-67-89", "+7 (343) 123-45-67"]
        );
        assert_eq!(
            split_phones("89123456789;89123456780"),
            ["89123456789", "89123456780"]
        );
        assert_eq!(
            split_phones("8 912 345 67 89 / 22-33-44"),
            ["8 912 345 67 89", "22-33-44"]
        );
        assert_eq!(
            split_phones("8 (912) 345-67-89 или 8 (912) 345-67-80"),
            ["8 (912) 345-67-89", "8 (912) 345-67-80"]
        );
        assert_eq!(
            split_phones("89123456789 ИЛИ 89123456780"),
            ["89123456789", "89123456780"]
        );
        assert_eq!(
            split_phones("89123456789\u{00A0}Или\t89123456780"),
            ["89123456789", "89123456780"]
        );
        assert_eq!(
            split_phones("89123456789\n89123456780\r\n"),
            ["89123456789", "89123456780"]
        );
        assert_eq!(split_phones(" , ;; / "), Vec::<&str>::new());
        assert_eq!(split_phones(""), Vec::<&str>::new());
        assert_eq!(split_phones("a или или b"), ["a", "b"]);
        assert_eq!(split_phones("или 8912"), ["или 8912"]);
    }

    #[test]
    fn numbers_side_by_side_are_split() {
        assert_eq!(
            split_phones("89123456789 89123456780"),
            ["89123456789", "89123456780"]
        );
        assert_eq!(
            split_phones("8-912-345-67-89 моб  +7(343)123-45-67 дом"),
            ["8-912-345-67-89", "+7(343)123-45-67"]
        );
        // Not each part a number: left whole (and then not read).
        assert_eq!(
            split_phones("8 912 345 67 89 89123456780"),
            ["8 912 345 67 89 89123456780"]
        );
        assert_eq!(split_phones("89123456789 доб. 12"), ["89123456789 доб. 12"]);
        assert_eq!(split_phones("89123456789 моб"), ["89123456789 моб"]);
    }

    #[test]
    fn one_phone_stays_one_piece() {
        for raw in [
            "+7 (912) 345-67-89",
            "8-912-345-67-89",
            "8 (343) 123-45-67 доб. 12",
            "  8 912 345 67 89  ",
            "8(925)123-45-67 мобильный",
        ] {
            assert_eq!(split_phones(raw), [raw.trim()], "{raw}");
        }
        // "или" inside a word is not a separator.
        assert_eq!(split_phones("Вилиса 8912"), ["Вилиса 8912"]);
    }

    #[test]
    fn split_then_normalize() {
        let phones: Vec<_> = split_phones("8-912-345-67-89, 22-33-44")
            .into_iter()
            .filter_map(phone)
            .collect();
        assert_eq!(
            phones,
            [
                Checked::valid("79123456789"),
                Checked::invalid("22-33-44", Problem::BadFormat)
            ]
        );
    }
}
