use super::Checked;

pub fn oms_policy(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    (!s.is_empty()).then(|| Checked::valid(s))
}

pub fn oms_check_digit(_first15: &[u8]) -> u8 {
    0
}
