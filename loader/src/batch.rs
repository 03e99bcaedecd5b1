//! What the loader does with a message before it writes anything: decode it,
//! check it against the schema, and collapse a batch to the newest version of
//! each record.
//!
//! A message that fails here is poison: it would fail on every delivery. It
//! goes to the dead-letter table with its reason and is terminated, while the
//! rest of its batch loads.

use std::collections::HashMap;

use chrono::NaiveDate;
use proto::{bus, Envelope};

/// Why a message was set aside. `reason` names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code: `undecodable`, `subject_mismatch`, or a
    /// [`proto::SchemaViolation`] code, or `database_rejected`.
    pub code: &'static str,
    pub reason: String,
    /// Known when the message decoded far enough.
    pub source: Option<String>,
    pub source_id: Option<String>,
}

/// Decodes and validates one message from `subject` (`<prefix>.<source>`).
pub fn examine(
    prefix: &str,
    subject: &str,
    payload: &[u8],
    today: NaiveDate,
) -> Result<Envelope, Rejection> {
    let envelope = Envelope::decode(payload).map_err(|e| Rejection {
        code: "undecodable",
        reason: e.to_string(),
        source: None,
        source_id: None,
    })?;
    let reject = |code: &'static str, reason: String| Rejection {
        code,
        reason,
        source: Some(envelope.source.clone()),
        source_id: Some(envelope.source_id.clone()),
    };
    if bus::source_from_subject(prefix, subject) != Some(envelope.source.as_str()) {
        return Err(reject(
            "subject_mismatch",
            "the message's source does not match its subject".into(),
        ));
    }
    envelope
        .validate(today)
        .map_err(|v| reject(v.code(), v.to_string()))?;
    Ok(envelope)
}

/// Keeps, for each (source, source id), the entry with the highest
/// `(version, content hash)` — the order the database applies — and returns
/// them sorted by key, so that concurrent loaders lock rows in one order.
///
/// A batch must not hold a key twice: `INSERT … ON CONFLICT DO UPDATE` cannot
/// affect a row twice in one statement.
pub fn newest_per_key<T>(entries: Vec<T>, envelope: impl Fn(&T) -> &Envelope) -> Vec<T> {
    // Index of the newest entry per key; keys borrow from the entries.
    let mut newest: HashMap<(&str, &str), usize> = HashMap::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let e = envelope(entry);
        let kept = newest
            .entry((e.source.as_str(), e.source_id.as_str()))
            .or_insert(i);
        if order_key(e) > order_key(envelope(&entries[*kept])) {
            *kept = i;
        }
    }
    let mut keep: Vec<((&str, &str), usize)> = newest.into_iter().collect();
    keep.sort_unstable();
    let order: Vec<usize> = keep.iter().map(|&(_, i)| i).collect();
    let mut slots: Vec<Option<T>> = entries.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each index once"))
        .collect()
}

fn order_key(e: &Envelope) -> (i64, &[u8; 32]) {
    (e.version, &e.content_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proto::PatientRecord;

    fn upsert(id: &str, version: i64, last: &str) -> Envelope {
        let record = PatientRecord {
            last_name: Some(last.into()),
            ..Default::default()
        };
        Envelope::upsert("qms", id, version, Utc::now(), record)
    }

    fn today() -> NaiveDate {
        Utc::now().date_naive()
    }

    #[test]
    fn keeps_newest_version_of_each_key_sorted() {
        let entries = vec![
            upsert("b", 2, "x"),
            upsert("a", 5, "y"),
            upsert("b", 3, "z"),
            upsert("a", 1, "w"),
        ];
        let kept = newest_per_key(entries, |e| e);
        let got: Vec<_> = kept
            .iter()
            .map(|e| (e.source_id.as_str(), e.version))
            .collect();
        assert_eq!(got, vec![("a", 5), ("b", 3)]);
    }

    #[test]
    fn garbage_is_undecodable_without_values_in_reason() {
        let r = examine("patients", "patients.qms", b"\x92\xa6secret", today()).unwrap_err();
        assert_eq!(r.code, "undecodable");
        assert!(!r.reason.contains("secret"));
    }

    #[test]
    fn source_must_match_subject() {
        let bytes = upsert("1", 1, "x").encode();
        assert!(examine("patients", "patients.qms", &bytes, today()).is_ok());
        assert_eq!(
            examine("patients", "patients.infoclinica", &bytes, today())
                .unwrap_err()
                .code,
            "subject_mismatch"
        );
    }

    #[test]
    fn schema_violations_are_rejected_with_codes() {
        let mut future = upsert("1", 1, "x");
        future.record.as_mut().unwrap().birth_date = Some(today().succ_opt().unwrap());
        let r = examine("patients", "patients.qms", &future.encode(), today()).unwrap_err();
        assert_eq!(r.code, "birth_date_in_future");
        assert_eq!(r.source_id.as_deref(), Some("1"));

        let no_id = upsert("", 1, "x");
        assert_eq!(
            examine("patients", "patients.qms", &no_id.encode(), today())
                .unwrap_err()
                .code,
            "missing_source_id"
        );
    }
}
