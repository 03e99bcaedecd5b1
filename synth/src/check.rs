//! Check digits of SNILS and OMS policy numbers (ENP), and validators for
//! their canonical forms.
//!
//! The generator computes check digits itself rather than calling
//! `proto::normalize`, so that it is fast and does not depend on the
//! normalizer being right; the tests cross-check these functions against an
//! independent reading of each rule. Digits are passed as values `0..=9`, not
//! ASCII.

/// SNILS check number (0–99) of the first nine digits.
///
/// Rule: weights 9, 8, …, 1 over the nine digits; a sum below 100 is the
/// check number itself, 100 and 101 give 00, and a larger sum is taken
/// modulo 101, where a remainder of 100 again gives 00.
pub fn snils_check_number(first9: &[u8]) -> u32 {
    debug_assert_eq!(first9.len(), 9);
    let sum: u32 = first9
        .iter()
        .zip((1..=9u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
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

/// Check digit of a unified OMS policy number (ENP) from its first 15 digits.
///
/// Rule (ISO/HL7 27931 Mod10): take the digits in odd positions counted
/// from the right as a number and double it, prepend the digits in even
/// positions, sum all the digits, and the check digit is
/// `(10 - sum % 10) % 10`. Doubling the number digit by digit never carries
/// past the next digit, so this equals the Luhn sum, which is what is
/// computed here without building the number.
pub fn oms_check_digit(first15: &[u8]) -> u8 {
    debug_assert_eq!(first15.len(), 15);
    mod10_check_digit(first15)
}

/// Luhn/Mod10 check digit of a payload of any length: the rightmost payload
/// digit and every second one to its left are doubled (and the two digits of
/// a product summed).
pub(crate) fn mod10_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 0 {
                let p = 2 * d;
                p / 10 + p % 10
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether `s` is a canonical, valid SNILS: 11 ASCII digits, the first nine
/// above 001-001-998 (lower numbers were never issued), and the right check
/// number.
pub fn is_valid_snils(s: &str) -> bool {
    let Some(d) = digits::<11>(s) else {
        return false;
    };
    let body = d[..9].iter().fold(0u32, |n, d| n * 10 + u32::from(*d));
    let check = u32::from(d[9]) * 10 + u32::from(d[10]);
    body > 1_001_998 && snils_check_number(&d[..9]) == check
}

/// Whether `s` is a canonical, valid OMS policy number: 16 ASCII digits with
/// the right Mod10 check digit.
pub fn is_valid_oms(s: &str) -> bool {
    let Some(d) = digits::<16>(s) else {
        return false;
    };
    oms_check_digit(&d[..15]) == d[15]
}

/// The digit values of `s` if it is exactly `N` ASCII digits.
fn digits<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes: &[u8; N] = s.as_bytes().try_into().ok()?;
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        if !b.is_ascii_digit() {
            return None;
        }
        *o = b - b'0';
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn snils_known_values() {
        // 112-233-445 95: 9+8+14+12+15+12+12+8+5 = 95.
        assert_eq!(snils_check_number(&ds("112233445")), 95);
        assert!(is_valid_snils("11223344595"));
        assert!(!is_valid_snils("11223344594"));
        assert!(!is_valid_snils("112-233-445 95"));
        // Sum exactly 100 → 00: 9*9 + 8*2 + 1*3 = 100.
        assert_eq!(snils_check_number(&[9, 2, 0, 0, 0, 0, 0, 0, 3]), 0);
        // 101 → 00: 9*9 + 8*2 + 2*2 = 101.
        assert_eq!(snils_check_number(&[9, 2, 0, 0, 0, 0, 0, 2, 0]), 0);
        // 102 → 102 % 101 = 1.
        assert_eq!(snils_check_number(&[9, 2, 0, 0, 0, 0, 0, 1, 3]), 1);
        // 201 % 101 = 100 → 00: 9*9 + 8*9 + 7*6 + 6*1 = 201.
        assert_eq!(snils_check_number(&[9, 9, 6, 1, 0, 0, 0, 0, 0]), 0);
        // Numbers up to 001-001-998 are not valid whatever their check.
        let low = [0, 0, 1, 0, 0, 1, 9, 9, 8];
        let c = snils_check_number(&low);
        assert!(!is_valid_snils(&format!("001001998{c:02}")));
    }

    /// The ENP rule read literally: odd-position digits as a number, doubled,
    /// even-position digits prepended, all digits summed.
    fn literal_enp_check(first15: &[u8]) -> u8 {
        let (mut odd, mut even) = (String::new(), String::new());
        for (i, d) in first15.iter().enumerate() {
            // Position from the right, 1-based: 15 - i.
            if (15 - i) % 2 == 1 {
                odd.push((b'0' + d) as char);
            } else {
                even.push((b'0' + d) as char);
            }
        }
        let doubled = (odd.parse::<u64>().unwrap() * 2).to_string();
        let sum: u32 = even
            .chars()
            .chain(doubled.chars())
            .map(|c| c.to_digit(10).unwrap())
            .sum();
        ((10 - sum % 10) % 10) as u8
    }

    #[test]
    fn oms_check_digit_matches_the_literal_rule() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..20_000 {
            x = crate::rng::mix64(x);
            let mut d = [0u8; 15];
            let mut v = x;
            for slot in d.iter_mut() {
                *slot = (v % 10) as u8;
                v /= 10;
            }
            assert_eq!(oms_check_digit(&d), literal_enp_check(&d), "{d:?}");
        }
    }

    #[test]
    fn mod10_known_luhn_vector() {
        // The textbook Luhn example: 7992739871 → 3.
        assert_eq!(mod10_check_digit(&ds("7992739871")), 3);
    }

    #[test]
    fn oms_known_value() {
        // Worked by hand: odd positions 13579135 × 2 = 27158270, even
        // positions 2468024, digit sum 58, check 2.
        assert_eq!(oms_check_digit(&ds("123456789012345")), 2);
        assert!(is_valid_oms("1234567890123452"));
    }

    /// The generator does not call `proto::normalize`, but both must agree.
    #[test]
    fn agrees_with_proto_normalize() {
        let mut x: u64 = 99;
        for _ in 0..20_000 {
            x = crate::rng::mix64(x);
            let mut d = [0u8; 15];
            let mut v = x;
            for slot in d.iter_mut() {
                *slot = (v % 10) as u8;
                v /= 10;
            }
            assert_eq!(
                oms_check_digit(&d),
                proto::normalize::oms_check_digit(&d),
                "{d:?}"
            );
            assert_eq!(
                snils_check_number(&d[..9]),
                proto::normalize::snils_checksum(&d[..9]),
                "{d:?}"
            );
        }
    }

    #[test]
    fn oms_validation() {
        let body = ds("770000000000001");
        let c = oms_check_digit(&body);
        let ok = format!("770000000000001{c}");
        assert!(is_valid_oms(&ok));
        let bad = format!("770000000000001{}", (c + 1) % 10);
        assert!(!is_valid_oms(&bad));
        assert!(!is_valid_oms("77000000000000"));
        assert!(!is_valid_oms("7700 0000 0000 0001"));
    }
}
