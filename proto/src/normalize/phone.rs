use super::Checked;

pub fn phone(raw: &str) -> Option<Checked> {
    let s: String = raw.chars().filter(char::is_ascii_digit).collect();
    (!s.is_empty()).then(|| Checked::valid(s))
}

pub fn split_phones(raw: &str) -> Vec<&str> {
    vec![raw]
}
