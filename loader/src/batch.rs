//! What the loader does with a message before it writes anything: decode it,
//! check it against the schema, and collapse a batch to the newest version of
//! each record.
//!
//! A message may carry one envelope or many (a batch message, see
//! `proto::batch`); every envelope is judged on its own. One that fails here
//! is poison: it would fail on every delivery. It goes to the dead-letter
//! table with its reason (alone: a bad record of a batch message is
//! dead-lettered with its own bytes and its index in the message), while the
//! rest of its message and of the fetched batch loads.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::NaiveDate;
use proto::{bus, Envelope};

use crate::settings::FieldLimits;

/// Why a message was set aside. `reason` names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code: `undecodable`, `subject_mismatch`, a
    /// [`proto::SchemaViolation`] code, `field_too_long`, `too_many_items`
    /// ([`crate::limits`]), `unknown_source` or `database_rejected`.
    pub code: &'static str,
    pub reason: String,
    /// Known when the message decoded far enough.
    pub source: Option<String>,
    pub source_id: Option<String>,
}

/// One record of a message, examined on its own.
#[derive(Debug)]
pub struct Verdict {
    /// Its index in the message: 0 for a single-envelope message (and for a
    /// message refused whole); the position in a batch message.
    pub item: u32,
    /// The record's own bytes, what a dead letter keeps (a single-envelope
    /// message, which a retry republishes as it is); the whole payload when
    /// the message is refused whole.
    pub payload: Bytes,
    pub result: Result<Envelope, Rejection>,
}

/// Decodes and validates a message from `subject` (`<prefix>.<source>`):
/// one verdict per envelope it carries (one, or many for a batch message,
/// see [`proto::batch`]). Each envelope is judged alone, so one bad record
/// of a batch is set aside without its neighbours. A payload that is no
/// message at all gives one `undecodable` verdict for the whole of it.
/// A record past one of `limits` is refused ([`crate::limits`]).
pub fn examine(
    prefix: &str,
    subject: &str,
    payload: &Bytes,
    today: NaiveDate,
    limits: &FieldLimits,
) -> Vec<Verdict> {
    let items = match proto::batch::decode_message(payload) {
        Ok(items) => items,
        Err(e) => {
            return vec![Verdict {
                item: 0,
                payload: payload.clone(),
                result: Err(undecodable(e)),
            }]
        }
    };
    items
        .into_iter()
        .map(|item| Verdict {
            item: item.index,
            payload: if item.bytes.len() == payload.len() {
                payload.clone()
            } else {
                payload.slice_ref(item.bytes)
            },
            result: item
                .envelope
                .map_err(undecodable)
                .and_then(|envelope| check(prefix, subject, envelope, today, limits)),
        })
        .collect()
}

fn undecodable(e: proto::DecodeError) -> Rejection {
    Rejection {
        code: "undecodable",
        reason: e.to_string(),
        source: None,
        source_id: None,
    }
}

/// The envelope's source must be its subject's, it must keep the schema and
/// the field limits; its identifiers' validity is judged anew
/// ([`crate::validity`]).
fn check(
    prefix: &str,
    subject: &str,
    envelope: Envelope,
    today: NaiveDate,
    limits: &FieldLimits,
) -> Result<Envelope, Rejection> {
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
    crate::limits::check(&envelope, limits).map_err(|e| reject(e.code, e.reason))?;
    let mut envelope = envelope;
    if let Some(record) = envelope.record.as_mut() {
        crate::validity::recompute(record);
    }
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

    fn one(prefix: &str, subject: &str, bytes: &[u8]) -> Result<Envelope, Rejection> {
        let mut verdicts = examine(
            prefix,
            subject,
            &Bytes::copy_from_slice(bytes),
            today(),
            &FieldLimits::default(),
        );
        assert_eq!(verdicts.len(), 1);
        verdicts.pop().unwrap().result
    }

    #[test]
    fn garbage_is_undecodable_without_values_in_reason() {
        let r = one("patients", "patients.qms", b"\x92\xa6secret").unwrap_err();
        assert_eq!(r.code, "undecodable");
        assert!(!r.reason.contains("secret"));
    }

    #[test]
    fn source_must_match_subject() {
        let bytes = upsert("1", 1, "x").encode();
        assert!(one("patients", "patients.qms", &bytes).is_ok());
        assert_eq!(
            one("patients", "patients.infoclinica", &bytes)
                .unwrap_err()
                .code,
            "subject_mismatch"
        );
    }

    #[test]
    fn schema_violations_are_rejected_with_codes() {
        let mut future = upsert("1", 1, "x");
        future.record.as_mut().unwrap().birth_date = Some(today().succ_opt().unwrap());
        let r = one("patients", "patients.qms", &future.encode()).unwrap_err();
        assert_eq!(r.code, "birth_date_in_future");
        assert_eq!(r.source_id.as_deref(), Some("1"));

        let no_id = upsert("", 1, "x");
        assert_eq!(
            one("patients", "patients.qms", &no_id.encode())
                .unwrap_err()
                .code,
            "missing_source_id"
        );
    }

    #[test]
    fn each_record_of_a_batch_message_is_judged_alone() {
        let mut future = upsert("2", 1, "y");
        future.record.as_mut().unwrap().birth_date = Some(today().succ_opt().unwrap());
        let other_source =
            Envelope::upsert("infoclinica", "3", 1, Utc::now(), PatientRecord::default());
        let elements = [
            upsert("1", 1, "x").encode(),
            future.encode(),
            other_source.encode(),
            upsert("4", 1, "z").encode(),
        ];
        let mut payload = vec![0x94];
        for e in &elements {
            payload.extend_from_slice(e);
        }
        let verdicts = examine(
            "patients",
            "patients.qms",
            &Bytes::from(payload),
            today(),
            &FieldLimits::default(),
        );
        let got: Vec<(u32, Result<&str, &str>)> = verdicts
            .iter()
            .map(|v| {
                (
                    v.item,
                    v.result
                        .as_ref()
                        .map(|e| e.source_id.as_str())
                        .map_err(|r| r.code),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Ok("1")),
                (1, Err("birth_date_in_future")),
                (2, Err("subject_mismatch")),
                (3, Ok("4")),
            ]
        );
        for (v, e) in verdicts.iter().zip(&elements) {
            assert_eq!(v.payload.as_ref(), e.as_slice(), "each keeps its own bytes");
        }
    }
}
