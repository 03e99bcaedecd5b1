//! E-mail addresses.

use super::{Checked, Problem};

/// Normalizes an e-mail address: trimmed and lowercased.
///
/// Valid when it holds no whitespace and exactly one `@`, with a non-empty
/// local part and a domain of at least two dot-separated labels, each
/// non-empty and made of letters (any script), digits and `-`. Anything else
/// (several addresses in one field, `ivanov@mail`, `ivanov@mail.ru;`) is
/// [`Problem::BadFormat`], kept as received (trimmed, not lowercased). Empty
/// input yields `None`.
pub fn email(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    Some(if is_valid(s) {
        Checked::valid(
            if s.bytes().any(|b| b.is_ascii_uppercase()) || !s.is_ascii() {
                s.to_lowercase()
            } else {
                s.to_string()
            },
        )
    } else {
        Checked::invalid(s, Problem::BadFormat)
    })
}

fn is_valid(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none() {
        assert_eq!(email(""), None);
        assert_eq!(email("  \t"), None);
    }

    #[test]
    fn valid_addresses_are_lowercased() {
        assert_eq!(
            email(" Ivanov.I@Mail.RU "),
            Some(Checked::valid("ivanov.i@mail.ru"))
        );
        assert_eq!(
            email("petrov+clinic@ya.ru"),
            Some(Checked::valid("petrov+clinic@ya.ru"))
        );
        assert_eq!(email("a@b.c"), Some(Checked::valid("a@b.c")));
        assert_eq!(
            email("first-last@sub.example-host.org"),
            Some(Checked::valid("first-last@sub.example-host.org"))
        );
        assert_eq!(
            email("Иванов@Почта.РФ"),
            Some(Checked::valid("иванов@почта.рф"))
        );
    }

    #[test]
    fn invalid_addresses_are_kept_as_received() {
        for raw in [
            "Ivanov@Mail",
            "ivanov.mail.ru",
            "@mail.ru",
            "Ivanov@@mail.ru",
            "a@b@mail.ru",
            "ivanov@.mail.ru",
            "ivanov@mail.ru.",
            "ivanov@mail..ru",
            "ivan ov@mail.ru",
            "ivanov@mail.ru; petrov@ya.ru",
            "ivanov@mail.ru,petrov@ya.ru",
            "ivanov@mail.ru;",
            "ivanov@",
            "нет",
            "-",
        ] {
            assert_eq!(
                email(raw),
                Some(Checked::invalid(raw, Problem::BadFormat)),
                "{raw}"
            );
        }
        assert_eq!(
            email("  Ivanov@Mail "),
            Some(Checked::invalid("Ivanov@Mail", Problem::BadFormat))
        );
    }
}
