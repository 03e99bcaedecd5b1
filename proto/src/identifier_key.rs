//! How a valid identifier is named as a key: the matcher's blocking keys,
//! the identity service's lookups, the loader's stored key hashes and the
//! SQL function `identity_keys(…)` (migrations) all spell them so. A key
//! spelled differently in one place would make records invisible to the
//! others, so this is the one spelling in Rust.

/// The prefixes of identifier keys (documents, SNILS, OMS, phones,
/// e-mails); names and birth dates are keyed otherwise.
pub const PREFIXES: [&str; 5] = ["d:", "s:", "o:", "p:", "e:"];

/// Whether `key` names an identifier (one of [`PREFIXES`]).
pub fn is_identifier(key: &str) -> bool {
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `d:<type>:<series>:<number>` (an empty series for none).
pub fn document(doc_type: u16, series: &str, number: &str) -> String {
    format!("d:{doc_type}:{series}:{number}")
}

/// `s:<snils>`.
pub fn snils(snils: &str) -> String {
    format!("s:{snils}")
}

/// `o:<oms policy number>`.
pub fn oms(oms: &str) -> String {
    format!("o:{oms}")
}

/// `p:<phone>`.
pub fn phone(phone: &str) -> String {
    format!("p:{phone}")
}

/// `e:<e-mail>`, of an address in lower case as [`crate::normalize`]
/// gives a valid one.
pub fn email(email: &str) -> String {
    format!("e:{email}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_keys_are_told_from_name_keys() {
        for key in [
            snils("11223344595"),
            oms("7700000000000001"),
            document(14, "4506", "123456"),
            phone("79251234567"),
            email("a@b.ru"),
        ] {
            assert!(is_identifier(&key), "{key}");
        }
        assert_eq!(document(14, "4506", "123456"), "d:14:4506:123456");
        // Names and the birth date are no identifiers.
        assert!(!is_identifier("n:ivanov:1980-01-01"));
        assert!(!is_identifier("no key"));
    }
}
