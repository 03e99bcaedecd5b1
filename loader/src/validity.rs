//! Validity is this project's judgement, never a message's claim: every
//! identifier of a record is normalized again from the value it carries
//! ([`proto::normalize`]), and what that finds replaces the message's
//! `problem` flags. A sender that marks a SNILS failing its checksum as
//! valid (by mistake, or an older normalizer) cannot make the matcher link
//! on it. Canonical values normalize to themselves, and values kept raw with
//! a problem keep it, so an extractor's correct record loads unchanged.

use proto::normalize;
use proto::{Email, PatientRecord, Phone};

/// `record` with SNILS, OMS policy, documents, phones and e-mails as
/// [`proto::normalize`] reads their values; an entry left empty by it is
/// dropped.
pub fn recompute(record: &mut PatientRecord) {
    record.snils = record.snils.take().and_then(|c| normalize::snils(&c.value));
    record.oms_policy = record
        .oms_policy
        .take()
        .and_then(|c| normalize::oms_policy(&c.value));
    record.documents = std::mem::take(&mut record.documents)
        .into_iter()
        .filter_map(|d| {
            normalize::document(
                d.doc_type,
                d.source_type_code.as_deref(),
                d.series.as_deref(),
                Some(&d.number),
            )
        })
        .collect();
    record.phones = std::mem::take(&mut record.phones)
        .into_iter()
        .filter_map(|p| {
            Some(Phone {
                number: normalize::phone(&p.number.value)?,
                preferred: p.preferred,
            })
        })
        .collect();
    record.emails = std::mem::take(&mut record.emails)
        .into_iter()
        .filter_map(|e| {
            Some(Email {
                address: normalize::email(&e.address.value)?,
                kind: e.kind,
            })
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Checked, DocumentType, EmailKind, IdentityDocument, Problem};

    fn claimed_valid(value: &str) -> Checked {
        Checked::valid(value)
    }

    #[test]
    fn claims_of_validity_are_replaced_by_what_the_values_are() {
        let mut r = PatientRecord {
            // Checksum 95 is right for 112-233-445; 96 is not.
            snils: Some(claimed_valid("11223344596")),
            oms_policy: Some(claimed_valid("1234567890123451")),
            documents: vec![IdentityDocument {
                doc_type: DocumentType::PASSPORT,
                source_type_code: None,
                series: Some("45".into()),
                number: "12".into(),
                problem: None,
            }],
            phones: vec![Phone {
                number: claimed_valid("22-33-44"),
                preferred: true,
            }],
            emails: vec![Email {
                address: claimed_valid("ivanov@mail"),
                kind: EmailKind::Contact,
            }],
            ..Default::default()
        };
        recompute(&mut r);
        assert_eq!(r.snils.unwrap().problem, Some(Problem::BadChecksum));
        assert_eq!(r.oms_policy.unwrap().problem, Some(Problem::BadChecksum));
        assert_eq!(r.documents[0].problem, Some(Problem::BadFormat));
        assert_eq!(r.phones[0].number.problem, Some(Problem::BadFormat));
        assert!(r.phones[0].preferred);
        assert_eq!(r.emails[0].address.problem, Some(Problem::BadFormat));
    }

    #[test]
    fn a_normalized_record_loads_unchanged() {
        let mut r = PatientRecord {
            snils: normalize::snils("112-233-445 95"),
            oms_policy: normalize::oms_policy("1234567890123452"),
            documents: normalize::document(
                DocumentType::PASSPORT,
                Some("1"),
                Some("45 06"),
                Some("012345"),
            )
            .into_iter()
            .chain(normalize::document(
                DocumentType::PASSPORT,
                None,
                Some("ab"),
                Some("cd"),
            ))
            .collect(),
            phones: vec![Phone {
                number: normalize::phone("8 (912) 345-67-89").unwrap(),
                preferred: false,
            }],
            emails: vec![Email {
                address: normalize::email("Ivanov@Mail.RU").unwrap(),
                kind: EmailKind::Login,
            }],
            ..Default::default()
        };
        let before = r.clone();
        recompute(&mut r);
        assert_eq!(r, before);
        assert!(r.snils.as_ref().unwrap().is_valid());
        assert_eq!(r.documents[1].problem, Some(Problem::BadFormat));
    }
}
