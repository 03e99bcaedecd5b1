//! The wire format: round trips, and compatibility in both directions
//! between today's reader and writer and the next version's.

use chrono::{NaiveDate, TimeZone, Utc};
use proto::normalize::{self, Problem};
use proto::record::FieldIssue;
use proto::{
    DocumentType, Email, EmailKind, Envelope, IdentityDocument, Operation, PatientRecord, Phone,
    Sex,
};
use serde::Deserialize;

fn full_record() -> PatientRecord {
    PatientRecord {
        business_unit: Some("main".into()),
        last_name: Some("Фёдорова-Петрова".into()),
        first_name: Some("Алёна".into()),
        middle_name: Some("Игоревна".into()),
        birth_date: NaiveDate::from_ymd_opt(2012, 2, 29),
        sex: Some(Sex::Female),
        documents: vec![
            IdentityDocument {
                doc_type: DocumentType::BIRTH_CERTIFICATE,
                source_type_code: Some("3".into()),
                series: Some("IV-АИ".into()),
                number: "012345".into(),
                problem: None,
            },
            IdentityDocument {
                doc_type: DocumentType::UNKNOWN,
                source_type_code: None,
                series: None,
                number: "000777".into(),
                problem: Some(Problem::BadFormat),
            },
        ],
        snils: normalize::snils("112-233-445 95"),
        oms_policy: normalize::oms_policy("7700000000000001"),
        phones: vec![Phone {
            number: normalize::phone("8 (912) 345-67-89").unwrap(),
            preferred: true,
        }],
        emails: vec![Email {
            address: normalize::email(" Alena@Mail.RU ").unwrap(),
            kind: EmailKind::Login,
        }],
        issues: vec![FieldIssue {
            field: "birth_date".into(),
            problem: Problem::OutOfRange,
            raw: Some("0001-01-01".into()),
        }],
    }
}

fn envelope() -> Envelope {
    Envelope::upsert(
        "qms",
        "41449/A22",
        17,
        Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
        full_record(),
    )
}

#[test]
fn round_trip_keeps_everything_including_text_document_numbers() {
    let original = envelope();
    let decoded = Envelope::decode(&original.encode()).unwrap();
    assert_eq!(decoded, original);
    let doc = &decoded.record.as_ref().unwrap().documents[0];
    assert_eq!(
        (doc.series.as_deref(), doc.number.as_str()),
        (Some("IV-АИ"), "012345")
    );

    let delete = Envelope::delete("infoclinica", "1001", 5, Utc::now());
    let decoded = Envelope::decode(&delete.encode()).unwrap();
    assert_eq!(decoded.op, Operation::Delete);
    assert_eq!(decoded.record, None);
}

#[test]
fn encoded_as_a_map_with_named_fields() {
    let bytes = envelope().encode();
    let value = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
    let map = value.as_map().expect("the envelope is a map");
    let keys: Vec<&str> = map.iter().filter_map(|(k, _)| k.as_str()).collect();
    for key in [
        "schema_version",
        "source",
        "source_id",
        "op",
        "version",
        "observed_at",
        "content_hash",
        "record",
    ] {
        assert!(keys.contains(&key), "missing key {key}: {keys:?}");
    }
}

fn map_mut(v: &mut rmpv::Value) -> &mut Vec<(rmpv::Value, rmpv::Value)> {
    match v {
        rmpv::Value::Map(m) => m,
        _ => panic!("not a map"),
    }
}

/// Adds `key: value` to the map at `path` (empty: the top level); on an
/// array, to each of its maps.
fn add_field(value: &mut rmpv::Value, path: &[&str], key: &str, new: rmpv::Value) {
    let mut at = value;
    for step in path {
        at = map_mut(at)
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(step))
            .map(|(_, v)| v)
            .unwrap();
    }
    match at {
        rmpv::Value::Map(m) => m.push((key.into(), new)),
        rmpv::Value::Array(items) => {
            for item in items {
                map_mut(item).push((key.into(), new.clone()));
            }
        }
        _ => panic!("not a map"),
    }
}

fn set_field(value: &mut rmpv::Value, path: &[&str], new: rmpv::Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut at = value;
    for step in parents {
        at = map_mut(at)
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(step))
            .map(|(_, v)| v)
            .unwrap();
    }
    let slot = map_mut(at)
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(last))
        .map(|(_, v)| v)
        .unwrap();
    *slot = new;
}

fn to_value(e: &Envelope) -> rmpv::Value {
    rmpv::decode::read_value(&mut e.encode().as_slice()).unwrap()
}

fn to_bytes(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).unwrap();
    bytes
}

#[test]
fn todays_reader_skips_fields_of_the_next_version() {
    let original = envelope();
    let mut value = to_value(&original);
    add_field(&mut value, &[], "trace_parent", "00-abc-def-01".into());
    add_field(&mut value, &["record"], "nationality", "RU".into());
    add_field(
        &mut value,
        &["record"],
        "addresses",
        rmpv::Value::Array(vec!["x".into()]),
    );
    add_field(
        &mut value,
        &["record", "documents"],
        "issued_on",
        20200101.into(),
    );
    set_field(&mut value, &["schema_version"], 2.into());

    let decoded = Envelope::decode(&to_bytes(&value)).expect("unknown fields are skipped");
    assert_eq!(decoded.schema_version, 2);
    assert_eq!(
        Envelope {
            schema_version: 1,
            ..decoded
        },
        original
    );
}

#[test]
fn todays_reader_maps_unknown_enum_values_instead_of_failing() {
    let mut value = to_value(&envelope());
    set_field(&mut value, &["record", "sex"], "X".into());
    let decoded = Envelope::decode(&to_bytes(&value)).unwrap();
    assert_eq!(decoded.record.unwrap().sex, Some(Sex::Unknown));
}

/// What the next version's reader could look like: today's fields plus new
/// ones with defaults.
#[derive(Debug, Deserialize)]
struct NextEnvelope {
    schema_version: u16,
    source_id: String,
    #[serde(default)]
    trace_parent: Option<String>,
    record: Option<NextRecord>,
}

#[derive(Debug, Deserialize)]
struct NextRecord {
    last_name: Option<String>,
    documents: Vec<IdentityDocument>,
    #[serde(default)]
    nationality: Option<String>,
}

#[test]
fn the_next_reader_reads_todays_messages() {
    let decoded: NextEnvelope = rmp_serde::from_slice(&envelope().encode()).unwrap();
    assert_eq!(decoded.schema_version, proto::SCHEMA_VERSION);
    assert_eq!(decoded.source_id, "41449/A22");
    assert_eq!(decoded.trace_parent, None);
    let record = decoded.record.unwrap();
    assert_eq!(record.last_name.as_deref(), Some("Фёдорова-Петрова"));
    assert_eq!(record.documents[0].number, "012345");
    assert_eq!(record.nationality, None);
}

#[test]
fn content_hash_follows_content_only() {
    let a = envelope();
    let later = Envelope::upsert("qms", "41449/A22", 99, Utc::now(), full_record());
    assert_eq!(
        a.content_hash, later.content_hash,
        "version and time are not content"
    );
    assert_eq!(a.message_id(), later.message_id());
    let mut changed = full_record();
    changed.documents[0].number = "12345".into();
    let b = Envelope::upsert("qms", "41449/A22", 17, Utc::now(), changed);
    assert_ne!(
        a.content_hash, b.content_hash,
        "a lost leading zero is a different document"
    );
    let deleted = Envelope::delete("qms", "41449/A22", 18, Utc::now());
    assert_ne!(a.content_hash, deleted.content_hash);
    assert!(a.message_id().starts_with("qms:41449/A22:"));
}

#[test]
fn validation_rejects_what_breaks_the_schema() {
    let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    assert!(envelope().validate(today).is_ok());
    let mut e = envelope();
    e.record.as_mut().unwrap().birth_date = NaiveDate::from_ymd_opt(2027, 1, 1);
    assert_eq!(
        e.validate(today).unwrap_err().code(),
        "birth_date_in_future"
    );
    let mut e = envelope();
    e.record.as_mut().unwrap().birth_date = NaiveDate::from_ymd_opt(1, 1, 1);
    assert_eq!(e.validate(today).unwrap_err().code(), "birth_date_too_old");
    let mut e = envelope();
    e.source_id = String::new();
    assert_eq!(e.validate(today).unwrap_err().code(), "missing_source_id");
    let mut e = envelope();
    e.source = "Q M S".into();
    assert_eq!(e.validate(today).unwrap_err().code(), "source_name");
    let mut e = envelope();
    e.record.as_mut().unwrap().first_name = Some("А\0".into());
    assert_eq!(e.validate(today).unwrap_err().code(), "nul_character");
    let mut e = envelope();
    e.record = None;
    assert_eq!(e.validate(today).unwrap_err().code(), "missing_record");
}

#[test]
fn decode_errors_do_not_quote_values() {
    let mut value = to_value(&envelope());
    set_field(&mut value, &["version"], "Иванов".into());
    let error = Envelope::decode(&to_bytes(&value)).unwrap_err().to_string();
    assert!(error.starts_with("undecodable message"), "{error}");
    assert!(!error.contains("Иванов"), "{error}");
}
