//! OMS policy number (ENP, the single policy number): 16 digits, the last a
//! check digit.

use super::snils::{digits_to_string, fixed_digits};
use super::{Checked, Problem};

/// Normalizes an OMS policy number (ENP) to its 16 digits.
///
/// Whitespace and dashes are ignored; anything else, a digit count other than
/// 16 (old-style "series + number" policies, temporary certificates…) or all
/// zeros is [`Problem::BadFormat`]; a last digit that is not
/// [`oms_check_digit`] of the first 15 is [`Problem::BadChecksum`]. Invalid
/// values are kept as received, trimmed. Empty input yields `None`.
pub fn oms_policy(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let Some(digits) = fixed_digits::<16>(s) else {
        return Some(Checked::invalid(s, Problem::BadFormat));
    };
    if digits.iter().all(|&d| d == 0) {
        return Some(Checked::invalid(s, Problem::BadFormat));
    }
    if oms_check_digit(&digits[..15]) != digits[15] {
        return Some(Checked::invalid(s, Problem::BadChecksum));
    }
    Some(Checked::valid(digits_to_string(&digits)))
}

/// The Mod10 check digit (ISO/HL7 27931) of the first 15 digits (values 0…9)
/// of an ENP.
///
/// The digits in odd positions counted from the right (1st, 3rd, …), read in
/// order as a number, are multiplied by 2; the digits in even positions are
/// prepended to the product; all these digits are summed; the check digit is
/// the distance from the sum to the next multiple of 10.
///
/// Worked by hand for `123456789012345`: odd positions from the right are
/// 5, 3, 1, 9, 7, 5, 3, 1, so the number is 13579135 and × 2 = 27158270;
/// even positions give 2468024; the digits of `2468024` + `27158270` sum to
/// 26 + 32 = 58; the check digit is 60 − 58 = 2: ENP `1234567890123452`.
///
/// The doubling is done digit by digit with a carry, so any length works.
pub fn oms_check_digit(first15: &[u8]) -> u8 {
    let mut sum = 0u32;
    let mut carry = 0u32;
    for (i, &d) in first15.iter().rev().enumerate() {
        if i % 2 == 0 {
            // Odd position from the right: one digit of the doubled number.
            let v = u32::from(d) * 2 + carry;
            sum += v % 10;
            carry = v / 10;
        } else {
            sum += u32::from(d);
        }
    }
    sum += carry; // the product's leading digit, if it grew by one
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    /// The algorithm exactly as written in the standard, on a real number.
    fn literal_check_digit(first15: &[u8]) -> u8 {
        let odd: u64 = first15
            .iter()
            .rev()
            .step_by(2)
            .rev()
            .fold(0, |n, &d| n * 10 + u64::from(d));
        let even: String = first15
            .iter()
            .rev()
            .skip(1)
            .step_by(2)
            .rev()
            .map(|&d| char::from(b'0' + d))
            .collect();
        let all = format!("{even}{}", odd * 2);
        let sum: u32 = all.bytes().map(|b| u32::from(b - b'0')).sum();
        ((10 - sum % 10) % 10) as u8
    }

    #[test]
    fn hand_verified_check_digit() {
        // See the worked example in `oms_check_digit`'s docs.
        assert_eq!(oms_check_digit(&digits("123456789012345")), 2);
        assert_eq!(literal_check_digit(&digits("123456789012345")), 2);
        // 000000000000001: odd digits …0001 → 1 × 2 = 2 → sum 2 → check 8.
        assert_eq!(oms_check_digit(&digits("000000000000001")), 8);
        // 000000000000010: even digit 1, odd number 0 → sum 1 → check 9.
        assert_eq!(oms_check_digit(&digits("000000000000010")), 9);
        // 000000000000005: 5 × 2 = 10 → digits 1 + 0 = 1 → check 9.
        assert_eq!(oms_check_digit(&digits("000000000000005")), 9);
    }

    #[test]
    fn digit_by_digit_matches_the_literal_algorithm() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..10_000 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = format!("{:015}", x % 1_000_000_000_000_000);
            let d = digits(&s);
            assert_eq!(oms_check_digit(&d), literal_check_digit(&d), "{s}");
        }
        for s in [
            "999999999999999",
            "000000000000000",
            "555555555555555",
            "909090909090909",
        ] {
            let d = digits(s);
            assert_eq!(oms_check_digit(&d), literal_check_digit(&d), "{s}");
        }
    }

    #[test]
    fn valid_policies() {
        assert_eq!(
            oms_policy("1234567890123452"),
            Some(Checked::valid("1234567890123452"))
        );
        assert_eq!(
            oms_policy(" 1234 5678 9012 3452 "),
            Some(Checked::valid("1234567890123452"))
        );
        assert_eq!(
            oms_policy("1234-5678-9012-3452"),
            Some(Checked::valid("1234567890123452"))
        );
        let first15 = "770000123456789";
        let full = format!("{first15}{}", oms_check_digit(&digits(first15)));
        assert_eq!(oms_policy(&full), Some(Checked::valid(full.clone())));
        // Leading zeros are kept: 000000000000001 → check 8.
        assert_eq!(
            oms_policy("0000000000000018"),
            Some(Checked::valid("0000000000000018"))
        );
    }

    #[test]
    fn wrong_check_digit() {
        for raw in [
            "1234567890123451",
            "1234567890123453",
            "1234 5678 9012 3450",
        ] {
            assert_eq!(
                oms_policy(raw),
                Some(Checked::invalid(raw, Problem::BadChecksum)),
                "{raw}"
            );
        }
    }

    #[test]
    fn bad_format_is_kept_as_received() {
        assert_eq!(oms_policy(""), None);
        assert_eq!(oms_policy("   "), None);
        for raw in [
            "123456789012345",
            "12345678901234520",
            "ЕР 1234567890",
            "7700 12345678",
            "1234.5678.9012.3452",
            "0000000000000000",
        ] {
            assert_eq!(
                oms_policy(raw),
                Some(Checked::invalid(raw, Problem::BadFormat)),
                "{raw}"
            );
        }
        assert_eq!(
            oms_policy("  серия 77 № 123456 "),
            Some(Checked::invalid("серия 77 № 123456", Problem::BadFormat))
        );
    }
}
