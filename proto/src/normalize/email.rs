use super::Checked;

pub fn email(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    (!s.is_empty()).then(|| Checked::valid(s.to_lowercase()))
}
