//! The hashes of a record's identifier keys, stored with the record
//! (`source_records.identity_key_hashes`) for the identity service's
//! lookups by identifier through one GIN index (migration
//! 20261207030001_identity_key_hashes.sql, which says why and what it
//! saves).
//!
//! Computed here from the values the loader writes, so that PostgreSQL
//! only stores them: computing them in SQL (`identity_keys(…)` taking the
//! JSON arrays apart) cost more than the indexes it replaced. The keys are
//! exactly those of the SQL function `identity_keys(…)` and the hash that
//! of `identity_key_hash(…)`; the loader's tests hold both equal on
//! written records, since a key hashed differently here would make its
//! record invisible to lookups.

use proto::{identifier_key, DocumentType, PatientRecord};
use sha2::{Digest, Sha256};

/// The record's identifier keys as `identity_keys(…)` names them:
/// `d:<type>:<series>:<number>` for each valid document of a known type
/// with a number, `s:<snils>` and `o:<oms>` when valid, `p:<phone>` and
/// `e:<e-mail, lowercased>` for each valid phone and e-mail. Sorted,
/// without duplicates.
pub fn keys(record: &PatientRecord) -> Vec<String> {
    let mut keys = Vec::with_capacity(6);
    for d in &record.documents {
        if d.problem.is_none() && d.doc_type != DocumentType::UNKNOWN && !d.number.is_empty() {
            keys.push(identifier_key::document(
                d.doc_type.0,
                d.series.as_deref().unwrap_or(""),
                &d.number,
            ));
        }
    }
    if let Some(s) = record.snils.as_ref().filter(|c| c.is_valid()) {
        keys.push(identifier_key::snils(&s.value));
    }
    if let Some(o) = record.oms_policy.as_ref().filter(|c| c.is_valid()) {
        keys.push(identifier_key::oms(&o.value));
    }
    for p in record.phones.iter().filter(|p| p.number.is_valid()) {
        keys.push(identifier_key::phone(&p.number.value));
    }
    for e in record.emails.iter().filter(|e| e.address.is_valid()) {
        // Valid addresses are lowercased by `proto::normalize` already;
        // SQL lowercases again, and so does this.
        keys.push(identifier_key::email(&e.address.value.to_lowercase()));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// `identity_key_hash(key)`: the first four bytes of the key's SHA-256,
/// big-endian, as a signed 32-bit integer.
pub fn key_hash(key: &str) -> i32 {
    let digest = Sha256::digest(key.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The hashes of the record's keys as a PostgreSQL array literal
/// (`{h1,h2,…}`, sorted, no duplicates; `{}` for none), bound as text and
/// cast in the upsert like the JSON columns.
pub fn key_hashes_literal(record: &PatientRecord) -> String {
    let mut hashes: Vec<i32> = keys(record).iter().map(|k| key_hash(k)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let mut out = String::with_capacity(2 + hashes.len() * 12);
    out.push('{');
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&h.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Checked, Email, EmailKind, IdentityDocument, Phone, Problem};

    fn document(doc_type: u16, series: Option<&str>, number: &str) -> IdentityDocument {
        IdentityDocument {
            doc_type: DocumentType(doc_type),
            source_type_code: None,
            series: series.map(str::to_string),
            number: number.to_string(),
            problem: None,
        }
    }

    #[test]
    fn keys_are_those_of_identity_keys() {
        let mut bad = document(1, Some("4506"), "12");
        bad.problem = Some(Problem::BadFormat);
        let record = PatientRecord {
            documents: vec![
                document(1, Some("4506"), "123456"),
                document(14, None, "77"),
                document(0, Some("1"), "2"),
                document(1, Some("1"), ""),
                bad,
                document(1, Some("4506"), "123456"),
            ],
            snils: Some(Checked::valid("11223344595")),
            oms_policy: Some(Checked::invalid("123", Problem::BadFormat)),
            phones: vec![Phone {
                number: Checked::valid("79251234567"),
                preferred: false,
            }],
            emails: vec![
                Email {
                    address: Checked::valid("A@B.ru"),
                    kind: EmailKind::Contact,
                },
                Email {
                    address: Checked::invalid("x@", Problem::BadFormat),
                    kind: EmailKind::Contact,
                },
            ],
            ..PatientRecord::default()
        };
        assert_eq!(
            keys(&record),
            [
                "d:14::77",
                "d:1:4506:123456",
                "e:a@b.ru",
                "p:79251234567",
                "s:11223344595"
            ]
        );
        assert_eq!(key_hashes_literal(&PatientRecord::default()), "{}");
    }

    #[test]
    fn the_hash_is_the_first_four_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf…
        assert_eq!(
            key_hash("abc"),
            i32::from_be_bytes([0xba, 0x78, 0x16, 0xbf])
        );
    }
}
