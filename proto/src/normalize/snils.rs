//! SNILS, the individual insurance account number: `XXX-XXX-XXX YY`.

use super::name::is_dash;
use super::{Checked, Problem};

/// Normalizes a SNILS to its 11 digits (`112-233-445 95` → `11223344595`).
///
/// Whitespace and dashes are ignored; anything else, or a digit count other
/// than 11, is [`Problem::BadFormat`], as is a number whose first nine digits
/// are all zero (not a real SNILS). Numbers above `001-001-998` must carry the
/// check number given by [`snils_checksum`], else [`Problem::BadChecksum`].
/// Invalid values are kept as received, trimmed. Empty input yields `None`.
pub fn snils(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let Some(digits) = fixed_digits::<11>(s) else {
        return Some(Checked::invalid(s, Problem::BadFormat));
    };
    let (first9, check) = digits.split_at(9);
    let number = first9.iter().fold(0u32, |n, &d| n * 10 + u32::from(d));
    if number == 0 {
        return Some(Checked::invalid(s, Problem::BadFormat));
    }
    let check = u32::from(check[0]) * 10 + u32::from(check[1]);
    if number > 1_001_998 && snils_checksum(first9) != check {
        return Some(Checked::invalid(s, Problem::BadChecksum));
    }
    Some(Checked::valid(digits_to_string(&digits)))
}

/// The SNILS check number (0…99) of the first nine digits (values 0…9).
///
/// Each digit is multiplied by its weight, 9 for the first down to 1 for the
/// ninth (in general: its position counted from the right), and summed. A
/// sum below 100 is the check number; 100 and 101 give 0; above 101 the
/// check is the sum modulo 101, with 100 giving 0.
pub fn snils_checksum(first9: &[u8]) -> u32 {
    let sum: u32 = first9
        .iter()
        .rev()
        .zip(1u32..)
        .map(|(&d, weight)| u32::from(d) * weight)
        .sum();
    match sum {
        0..=99 => sum,
        100 | 101 => 0,
        _ => match sum % 101 {
            100 => 0,
            r => r,
        },
    }
}

/// The `N` digit values of `s` when it holds exactly `N` ASCII digits and,
/// besides them, only whitespace and dashes.
pub(super) fn fixed_digits<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut digits = [0u8; N];
    let mut n = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            *digits.get_mut(n)? = c as u8 - b'0';
            n += 1;
        } else if !(c.is_whitespace() || is_dash(c)) {
            return None;
        }
    }
    (n == N).then_some(digits)
}

/// Digit values 0…9 as text.
pub(super) fn digits_to_string(digits: &[u8]) -> String {
    digits.iter().map(|&d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none() {
        assert_eq!(snils(""), None);
        assert_eq!(snils(" \t"), None);
    }

    #[test]
    fn valid_snils_is_eleven_digits() {
        // 1·9 + 1·8 + 2·7 + 2·6 + 3·5 + 3·4 + 4·3 + 4·2 + 5·1 = 95
        assert_eq!(snils("112-233-445 95"), Some(Checked::valid("11223344595")));
        assert_eq!(snils(" 11223344595 "), Some(Checked::valid("11223344595")));
        assert_eq!(snils("112 233 445 95"), Some(Checked::valid("11223344595")));
        assert_eq!(
            snils("112\u{2013}233\u{2013}445\u{00A0}95"),
            Some(Checked::valid("11223344595"))
        );
    }

    #[test]
    fn wrong_checksum_is_kept_as_received() {
        assert_eq!(
            snils(" 112-233-445 96 "),
            Some(Checked::invalid("112-233-445 96", Problem::BadChecksum))
        );
        assert_eq!(
            snils("112-233-445 00"),
            Some(Checked::invalid("112-233-445 00", Problem::BadChecksum))
        );
    }

    #[test]
    fn bad_format_is_kept_as_received() {
        for raw in [
            "112-233-445 9",
            "112-233-445 955",
            "112.233.445 95",
            "СНИЛС 112-233-445 95",
            "abc",
            "1122334459５",
        ] {
            assert_eq!(
                snils(raw),
                Some(Checked::invalid(raw, Problem::BadFormat)),
                "{raw}"
            );
        }
        assert_eq!(
            snils("000-000-000 00"),
            Some(Checked::invalid("000-000-000 00", Problem::BadFormat))
        );
        assert_eq!(
            snils("000-000-000 42"),
            Some(Checked::invalid("000-000-000 42", Problem::BadFormat))
        );
    }

    #[test]
    fn small_numbers_skip_the_check() {
        assert_eq!(snils("001-001-998 42"), Some(Checked::valid("00100199842")));
        assert_eq!(snils("000-000-001 00"), Some(Checked::valid("00000000100")));
        // 001-001-999 is checked: 1·7 + 1·4 + 9·3 + 9·2 + 9·1 = 65
        assert_eq!(snils("001-001-999 65"), Some(Checked::valid("00100199965")));
        assert_eq!(
            snils("001-001-999 42"),
            Some(Checked::invalid("001-001-999 42", Problem::BadChecksum))
        );
    }

    #[test]
    fn checksum_rules() {
        assert_eq!(snils_checksum(&[1, 1, 2, 2, 3, 3, 4, 4, 5]), 95);
        assert_eq!(snils_checksum(&[9, 2, 0, 0, 0, 0, 0, 0, 0]), 81 + 16);
        // Sum 99 → 99: 9·9 + 9·2
        assert_eq!(snils_checksum(&[9, 0, 0, 0, 0, 0, 0, 9, 0]), 99);
        // Sum 100 and 101 → 0
        assert_eq!(snils_checksum(&[9, 0, 0, 0, 0, 0, 0, 9, 1]), 0);
        assert_eq!(snils_checksum(&[9, 0, 0, 0, 0, 0, 0, 9, 2]), 0);
        // Sum 102 → 102 mod 101 = 1
        assert_eq!(snils_checksum(&[9, 0, 0, 0, 0, 0, 0, 9, 3]), 1);
        // Sum 201 → 201 mod 101 = 100 → 0: 9·9 + 9·8 + 6·7 + 1·3 + 3·1 = 201
        assert_eq!(snils_checksum(&[9, 9, 6, 0, 0, 0, 1, 0, 3]), 0);
        // Sum 202 → 202 mod 101 = 0
        assert_eq!(snils_checksum(&[9, 9, 6, 0, 0, 0, 1, 0, 4]), 0);
        // Sum 203 → 1
        assert_eq!(snils_checksum(&[9, 9, 6, 0, 0, 0, 1, 0, 5]), 1);
        // Maximum: 9·45 = 405 → 405 mod 101 = 1
        assert_eq!(snils_checksum(&[9; 9]), 1);
    }

    #[test]
    fn fixed_digits_accepts_only_separators() {
        assert_eq!(fixed_digits::<3>("1-2 3"), Some([1, 2, 3]));
        assert_eq!(fixed_digits::<3>("1234"), None);
        assert_eq!(fixed_digits::<3>("12"), None);
        assert_eq!(fixed_digits::<3>("1.23"), None);
    }
}
