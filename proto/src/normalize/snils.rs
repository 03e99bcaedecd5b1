use super::Checked;

pub fn snils(raw: &str) -> Option<Checked> {
    let s = raw.trim();
    (!s.is_empty()).then(|| Checked::valid(s))
}

pub fn snils_checksum(_first9: &[u8]) -> u32 {
    0
}
