//! Text as the terminal receives it: what `etl` prints from the database or
//! the bus (source ids, reasons, business units) may hold control
//! characters a hostile message put there; printed raw, an ESC sequence or
//! a newline could fake or hide table rows.

use std::borrow::Cow;

/// `s` with every control character escaped (`\u{1b}`, `\n`, `\t`).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("41449/A22"), "41449/A22");
        assert_eq!(printable("Ёж"), "Ёж");
        assert_eq!(
            printable("7\u{1b}[2J\nfake row\r\t"),
            "7\\u{1b}[2J\\nfake row\\r\\t"
        );
        assert_eq!(printable("\u{9b}1m"), "\\u{9b}1m");
    }
}
