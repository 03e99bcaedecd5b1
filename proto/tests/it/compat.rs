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

/// A batch message (several envelopes in one message) as
/// `proto::batch::BatchBuilder` writes it: a MessagePack array of exactly
/// the maps `Envelope::encode` writes.
fn batch_of(envelopes: &[Envelope]) -> proto::batch::Encoded {
    let mut builder = proto::batch::BatchBuilder::new(
        envelopes[0].source.clone(),
        proto::batch::BatchLimits {
            max_records: 1000,
            max_bytes: 1 << 20,
        },
    );
    for e in envelopes {
        assert!(builder
            .push_upsert(
                &e.source_id,
                e.version,
                e.observed_at,
                e.record.as_ref().unwrap()
            )
            .is_none());
    }
    builder.finish().unwrap()
}

fn infoclinica(i: u32) -> Envelope {
    let mut record = full_record();
    record.last_name = Some(format!("Петров{i}"));
    Envelope::upsert(
        "infoclinica",
        i.to_string(),
        1_000 + i as i64,
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        record,
    )
}

#[test]
fn a_batch_round_trips_element_by_element() {
    for n in [2u32, 15, 16, 17, 400] {
        let envelopes: Vec<Envelope> = (0..n).map(infoclinica).collect();
        let batch = batch_of(&envelopes);
        assert_eq!(batch.records, n as usize);
        // A MessagePack array of the single-envelope maps, byte for byte.
        let value = rmpv::decode::read_value(&mut batch.payload.as_ref()).unwrap();
        let elements = value.as_array().expect("a batch is an array");
        assert_eq!(elements.len(), n as usize);
        let items = proto::batch::decode_message(&batch.payload).unwrap();
        for (i, (item, original)) in items.iter().zip(&envelopes).enumerate() {
            assert_eq!(item.index as usize, i);
            assert_eq!(item.bytes, original.encode().as_slice());
            assert_eq!(item.envelope.as_ref().unwrap(), original);
        }
        // The id names the source and is the same for the same records.
        assert!(batch.message_id.starts_with("infoclinica:batch:"));
        assert_eq!(batch_of(&envelopes).message_id, batch.message_id);
        let mut other = envelopes.clone();
        other.swap(0, 1);
        assert_ne!(batch_of(&other).message_id, batch.message_id);
    }
}

#[test]
fn the_first_byte_tells_a_batch_from_a_single_envelope() {
    use proto::batch::{shape, Shape};
    let single = envelope().encode();
    assert_eq!(single[0], 0x88, "fixmap of 8 fields");
    assert_eq!(shape(&single), Shape::Single);
    // The next version's envelope with 16 fields or more is a map16: still
    // a single envelope.
    let mut value = to_value(&envelope());
    for i in 0..8 {
        add_field(&mut value, &[], &format!("future_{i}"), i.into());
    }
    let map16 = to_bytes(&value);
    assert_eq!(map16[0], 0xde);
    assert_eq!(shape(&map16), Shape::Single);
    let items = proto::batch::decode_message(&map16).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].envelope.as_ref().unwrap(), &envelope());

    // fixarray, array16 (and array32 beyond 65,535 envelopes): a batch.
    let few = batch_of(&(0..3).map(infoclinica).collect::<Vec<_>>());
    assert_eq!(few.payload[0], 0x93);
    let many = batch_of(&(0..16).map(infoclinica).collect::<Vec<_>>());
    assert_eq!(&many.payload[..3], &[0xdc, 0, 16]);
    assert_eq!(shape(&few.payload), Shape::Batch);
    assert_eq!(shape(&[0xdd, 0, 1, 0, 0]), Shape::Batch);
    assert_eq!(shape(b"not msgpack"), Shape::Other);
}

#[test]
fn batches_carry_the_next_versions_envelopes_too() {
    // A batch written by the next version (new fields in its envelopes):
    // today's reader reads every element, skipping what it does not know.
    let original = infoclinica(1);
    let mut value = to_value(&original);
    add_field(&mut value, &[], "trace_parent", "00-abc-def-01".into());
    add_field(&mut value, &["record"], "nationality", "RU".into());
    let batch = to_bytes(&rmpv::Value::Array(vec![value, to_value(&infoclinica(2))]));
    let items = proto::batch::decode_message(&batch).unwrap();
    assert_eq!(items[0].envelope.as_ref().unwrap(), &original);
    assert_eq!(items[1].envelope.as_ref().unwrap(), &infoclinica(2));
}

#[test]
fn a_reader_older_than_batches_refuses_them_as_undecodable() {
    // What a loader older than batch messages does with one: it reads a
    // message as one envelope, fails, and dead-letters it whole (kept, and
    // retriable once the loader is upgraded). Hence: upgrade loaders first.
    let batch = batch_of(&(0..3).map(infoclinica).collect::<Vec<_>>());
    assert!(Envelope::decode(&batch.payload).is_err());
}

#[test]
fn a_batch_of_one_is_the_single_envelope_message() {
    let one = infoclinica(7);
    let batch = batch_of(std::slice::from_ref(&one));
    assert_eq!(batch.payload.as_ref(), one.encode().as_slice());
    assert_eq!(batch.message_id, one.message_id());
}
