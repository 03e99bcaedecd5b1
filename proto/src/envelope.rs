//! The envelope: what one bus message carries, and its MessagePack codec.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::naming;
use crate::record::PatientRecord;

/// The schema version this crate writes. Readers accept every version:
/// fields are encoded by name, unknown ones are skipped and missing ones take
/// their defaults. A change that cannot be expressed that way needs a new
/// stream, not a new number here.
pub const SCHEMA_VERSION: u16 = 1;

/// Longest source id accepted (qMS his numbers and PCODEs are far shorter).
pub const MAX_SOURCE_ID_LEN: usize = 128;

pub use crate::normalize::earliest_birth_date;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// The record exists with this content.
    Upsert,
    /// The record no longer exists at the source (kept, soft-deleted, downstream).
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
        }
    }
}

/// One change of one source record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u16,
    /// Source system name, as in the subject `patients.<source>`.
    pub source: String,
    /// The record's id in its source (qMS his number, Infoclinica PCODE), text.
    pub source_id: String,
    pub op: Operation,
    /// Orders changes of the same record: the loader keeps the highest
    /// `(version, content_hash)` it has seen. Extractors use the source's own
    /// monotonic version where it has one, else the observation time in
    /// microseconds since the Unix epoch.
    pub version: i64,
    /// When the extractor read the record.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub observed_at: DateTime<Utc>,
    /// BLAKE3 of the operation and the record's content: equal content, equal
    /// hash. Part of the message id, so republishing the same content is
    /// dropped by the stream's duplicate window.
    #[serde(with = "serde_bytes_array")]
    pub content_hash: [u8; 32],
    /// The content; `None` for a delete.
    #[serde(default)]
    pub record: Option<PatientRecord>,
}

impl Envelope {
    /// An upsert of `record`, hashed.
    pub fn upsert(
        source: impl Into<String>,
        source_id: impl Into<String>,
        version: i64,
        observed_at: DateTime<Utc>,
        record: PatientRecord,
    ) -> Self {
        let content_hash = content_hash(Operation::Upsert, Some(&record));
        Envelope {
            schema_version: SCHEMA_VERSION,
            source: source.into(),
            source_id: source_id.into(),
            op: Operation::Upsert,
            version,
            observed_at,
            content_hash,
            record: Some(record),
        }
    }

    /// A deletion of the record.
    pub fn delete(
        source: impl Into<String>,
        source_id: impl Into<String>,
        version: i64,
        observed_at: DateTime<Utc>,
    ) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            source: source.into(),
            source_id: source_id.into(),
            op: Operation::Delete,
            version,
            observed_at,
            content_hash: content_hash(Operation::Delete, None),
            record: None,
        }
    }

    /// MessagePack, as a map with named fields.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("an envelope always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        rmp_serde::from_slice(bytes).map_err(|_| DecodeError::explain(bytes))
    }

    /// The id the stream deduplicates on: source, source id and content hash.
    pub fn message_id(&self) -> String {
        naming::message_id(&self.source, &self.source_id, &self.content_hash)
    }

    /// Checks what the schema requires beyond decoding. `today` bounds birth
    /// dates (a birth date in the future is a broken record, not data).
    pub fn validate(&self, today: NaiveDate) -> Result<(), SchemaViolation> {
        if self.schema_version == 0 {
            return Err(SchemaViolation::SchemaVersion);
        }
        if !naming::is_valid_source_name(&self.source) {
            return Err(SchemaViolation::SourceName);
        }
        if self.source_id.trim().is_empty() {
            return Err(SchemaViolation::MissingSourceId);
        }
        // An id is printed by operators' tools and written to logs: an ESC
        // sequence or a newline in it could fake or hide lines there.
        if self.source_id.chars().any(char::is_control) {
            return Err(SchemaViolation::SourceIdControlCharacter);
        }
        if self.source_id.len() > MAX_SOURCE_ID_LEN || self.source_id.trim() != self.source_id {
            return Err(SchemaViolation::SourceIdFormat);
        }
        let record = match (self.op, &self.record) {
            (Operation::Upsert, None) => return Err(SchemaViolation::MissingRecord),
            (_, Some(r)) => r,
            (Operation::Delete, None) => return Ok(()),
        };
        if let Some(birth) = record.birth_date {
            if birth > today {
                return Err(SchemaViolation::BirthDateInFuture);
            }
            if birth < earliest_birth_date() {
                return Err(SchemaViolation::BirthDateTooOld);
            }
        }
        if let Some(field) = field_with_nul(record) {
            return Err(SchemaViolation::NulCharacter(field));
        }
        Ok(())
    }
}

/// The fast path of an upsert: the record is serialized once, and those
/// bytes are both hashed and spliced into the message. The result is
/// byte-for-byte what `Envelope::upsert(…).encode()` gives (same content
/// hash, same message), without the second serialization of the record and
/// without owning the envelope's strings: what a bulk load spends most of
/// its time on otherwise.
///
/// `scratch` holds the record's bytes and `out` receives the message; both
/// are cleared first and can be reused from one record to the next.
pub fn encode_upsert(
    source: &str,
    source_id: &str,
    version: i64,
    observed_at: DateTime<Utc>,
    record: &PatientRecord,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> [u8; 32] {
    out.clear();
    append_upsert(
        source,
        source_id,
        version,
        observed_at,
        record,
        scratch,
        out,
    )
}

/// [`encode_upsert`] appending the message to `out` instead of replacing
/// it: how a batch message is built ([`crate::batch::BatchBuilder`]).
pub fn append_upsert(
    source: &str,
    source_id: &str,
    version: i64,
    observed_at: DateTime<Utc>,
    record: &PatientRecord,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> [u8; 32] {
    scratch.clear();
    rmp_serde::encode::write_named(scratch, record).expect("a record always serializes");
    let content_hash = hash_upsert_bytes(scratch);
    out.reserve(scratch.len() + 160 + source.len() + source_id.len());
    // The field order and encodings of `Envelope`'s derived `Serialize`
    // (rmp_serde, named): a map of its 8 fields (fixmap marker 0x80 | 8).
    out.push(0x88);
    let mut field = |name: &str, value: &dyn erased::Value| {
        rmp_serde::encode::write(out, name).expect("writes to a Vec");
        value.write(out);
    };
    field("schema_version", &SCHEMA_VERSION);
    field("source", &source);
    field("source_id", &source_id);
    field("op", &Operation::Upsert);
    field("version", &version);
    field("observed_at", &observed_at.timestamp_micros());
    field("content_hash", &erased::Bin(&content_hash));
    rmp_serde::encode::write(out, "record").expect("writes to a Vec");
    // `Some(record)` serializes as the record itself.
    out.extend_from_slice(scratch);
    content_hash
}

/// [`content_hash`] of an upsert whose record serialized (named) to `record`:
/// the hashed value is the pair `(op, record)`, a 2-element array.
fn hash_upsert_bytes(record: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x92]); // fixarray of 2
    hasher.update(UPSERT_MSGPACK);
    hasher.update(record);
    *hasher.finalize().as_bytes()
}

/// `Operation::Upsert` as rmp_serde writes it: the string "upsert"
/// (checked by a test against the serializer).
const UPSERT_MSGPACK: &[u8] = b"\xa6upsert";

/// Writing one envelope field value the way the derived `Serialize` does.
mod erased {
    use serde::Serialize;

    pub trait Value {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: Serialize> Value for T {
        fn write(&self, out: &mut Vec<u8>) {
            rmp_serde::encode::write_named(out, self).expect("writes to a Vec");
        }
    }

    /// `[u8; 32]` as MessagePack bin, as `serde_bytes_array` writes it.
    pub struct Bin<'a>(pub &'a [u8; 32]);

    impl Serialize for Bin<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serde_bytes_array::serialize(self.0, s)
        }
    }
}

/// BLAKE3 over the MessagePack of the operation and the record.
pub fn content_hash(op: Operation, record: Option<&PatientRecord>) -> [u8; 32] {
    let bytes = rmp_serde::to_vec_named(&(op, record)).expect("a record always serializes");
    *blake3::hash(&bytes).as_bytes()
}

/// PostgreSQL text cannot hold NUL; find the first field that has one.
fn field_with_nul(r: &PatientRecord) -> Option<&'static str> {
    let has = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains('\0'));
    if has(&r.business_unit) {
        return Some("business_unit");
    }
    if has(&r.last_name) || has(&r.first_name) || has(&r.middle_name) {
        return Some("name");
    }
    if r.documents
        .iter()
        .any(|d| d.number.contains('\0') || has(&d.series) || has(&d.source_type_code))
    {
        return Some("documents");
    }
    if [&r.snils, &r.oms_policy]
        .iter()
        .any(|c| c.as_ref().is_some_and(|c| c.value.contains('\0')))
    {
        return Some("identifiers");
    }
    if r.phones.iter().any(|p| p.number.value.contains('\0'))
        || r.emails.iter().any(|e| e.address.value.contains('\0'))
    {
        return Some("contacts");
    }
    if r.issues
        .iter()
        .any(|i| i.field.contains('\0') || has(&i.raw))
    {
        return Some("issues");
    }
    None
}

/// Why a message broke the schema. Messages name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaViolation {
    #[error("schema_version is 0")]
    SchemaVersion,
    #[error("source name is not a valid subject token ([a-z0-9_-], 1-32 chars)")]
    SourceName,
    #[error("source_id is missing or empty")]
    MissingSourceId,
    #[error("source_id is too long or padded with spaces")]
    SourceIdFormat,
    #[error("source_id contains a control character (ESC, newline, NUL…)")]
    SourceIdControlCharacter,
    #[error("upsert without a record")]
    MissingRecord,
    #[error("birth_date is in the future")]
    BirthDateInFuture,
    #[error("birth_date is before 1880-01-01")]
    BirthDateTooOld,
    #[error("field {0} contains a NUL character")]
    NulCharacter(&'static str),
}

impl SchemaViolation {
    /// Stable code for metrics and the dead-letter table.
    pub fn code(&self) -> &'static str {
        match self {
            SchemaViolation::SchemaVersion => "schema_version",
            SchemaViolation::SourceName => "source_name",
            SchemaViolation::MissingSourceId => "missing_source_id",
            SchemaViolation::SourceIdFormat => "source_id_format",
            SchemaViolation::SourceIdControlCharacter => "source_id_control_character",
            SchemaViolation::MissingRecord => "missing_record",
            SchemaViolation::BirthDateInFuture => "birth_date_in_future",
            SchemaViolation::BirthDateTooOld => "birth_date_too_old",
            SchemaViolation::NulCharacter(_) => "nul_character",
        }
    }
}

/// A message that is not a valid envelope. The text never holds a value:
/// it is a fixed category and the path of the field where decoding failed
/// (`wrong_type at record.documents[0].number`), never the decoder's own
/// message (serde quotes the offending value, in quotes or backticks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable message: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// A reason of our own (never a value).
    pub(crate) fn new(reason: &str) -> Self {
        DecodeError(reason.to_string())
    }

    /// Why `bytes` are not an envelope: decoded once more, tracking the
    /// path (only on failure, so a valid message pays nothing for it).
    fn explain(bytes: &[u8]) -> Self {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        match serde_path_to_error::deserialize::<_, Envelope>(&mut de) {
            Ok(_) => DecodeError::new("malformed"),
            Err(e) => {
                let path = value_free_path(e.path());
                let category = category(e.inner());
                match path.as_str() {
                    "" | "." => DecodeError(category.to_string()),
                    _ => DecodeError(format!("{category} at {path}")),
                }
            }
        }
    }
}

/// A decoder error as a fixed category. serde's messages carry the value
/// (`invalid type: integer `4509123456``, `unknown variant `x``): only
/// their fixed start is read.
fn category(e: &rmp_serde::decode::Error) -> String {
    use rmp_serde::decode::Error;
    match e {
        Error::InvalidMarkerRead(_) | Error::InvalidDataRead(_) => "cut_short".into(),
        Error::TypeMismatch(_) => "wrong_type".into(),
        Error::OutOfRange => "out_of_range".into(),
        Error::LengthMismatch(_) => "wrong_length".into(),
        Error::Utf8Error(_) => "invalid_utf8".into(),
        Error::DepthLimitExceeded => "too_deep".into(),
        Error::Uncategorized(_) => "malformed".into(),
        Error::Syntax(msg) => {
            let fixed = [
                ("invalid type", "wrong_type"),
                ("invalid value", "invalid_value"),
                ("invalid length", "wrong_length"),
                ("unknown variant", "unknown_variant"),
                ("duplicate field", "duplicate_field"),
            ];
            if let Some((_, category)) = fixed.iter().find(|(start, _)| msg.starts_with(start)) {
                return category.to_string();
            }
            // `missing field `name``: the name is the schema's, not the message's.
            match msg
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                Some(field) if is_schema_name(field) => format!("missing_field {field}"),
                _ => "malformed".into(),
            }
        }
    }
}

/// The path as `record.documents[0].number`; a map key that is not a
/// plausible field name of the schema (a message's own key is data) is `?`.
fn value_free_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if is_schema_name(key) { key } else { "?" });
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// The shape of the schema's field names: `[a-z_]`, digits after the first
/// character, 1–32 long.
fn is_schema_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[u8; 32]` as MessagePack bin, not as an array of 32 integers.
mod serde_bytes_array {
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = [u8; 32];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; 32], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<[u8; 32], A::Error> {
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_upsert_is_upsert_then_encode() {
        use crate::normalize::Problem;
        use crate::record::FieldIssue;
        let observed_at = DateTime::from_timestamp_micros(1_764_633_600_123_456).unwrap();
        let mut full = PatientRecord {
            business_unit: Some("branch-7".into()),
            last_name: Some("Иванов".into()),
            first_name: Some("Пётр".into()),
            birth_date: NaiveDate::from_ymd_opt(1970, 3, 1),
            ..Default::default()
        };
        full.issues.push(FieldIssue {
            field: "middle_name".into(),
            problem: Problem::BadCharacters,
            raw: Some("\u{FFFD}".into()),
        });
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        for (record, version) in [(PatientRecord::default(), 0), (full, i64::MAX)] {
            let envelope =
                Envelope::upsert("infoclinica", "12345", version, observed_at, record.clone());
            let hash = encode_upsert(
                "infoclinica",
                "12345",
                version,
                observed_at,
                &record,
                &mut scratch,
                &mut out,
            );
            assert_eq!(hash, envelope.content_hash);
            assert_eq!(out, envelope.encode());
        }
    }

    #[test]
    fn upsert_constant_is_what_the_serializer_writes() {
        let mut op = Vec::new();
        rmp_serde::encode::write(&mut op, &Operation::Upsert).unwrap();
        assert_eq!(op, UPSERT_MSGPACK);
    }

    #[test]
    fn decode_errors_name_a_category_and_the_path_never_the_value() {
        use serde::Serialize;
        #[derive(Serialize)]
        struct IntegerId {
            schema_version: u16,
            source: &'static str,
            source_id: u64,
        }
        let bytes = rmp_serde::to_vec_named(&IntegerId {
            schema_version: 1,
            source: "qms",
            source_id: 4509123456,
        })
        .unwrap();
        let e = Envelope::decode(&bytes).unwrap_err().to_string();
        assert_eq!(e, "undecodable message: wrong_type at source_id");

        // A quote inside the value cannot end a redaction early.
        #[derive(Serialize)]
        struct QuotedVersion {
            schema_version: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&QuotedVersion {
            schema_version: "a\"4509123456\"b",
        })
        .unwrap();
        let e = Envelope::decode(&bytes).unwrap_err().to_string();
        assert_eq!(e, "undecodable message: wrong_type at schema_version");

        // Deep inside the record.
        #[derive(Serialize)]
        struct Document {
            #[serde(rename = "type")]
            doc_type: u8,
            number: u64,
        }
        #[derive(Serialize)]
        struct Record {
            documents: Vec<Document>,
        }
        #[derive(Serialize)]
        struct Wrong {
            schema_version: u16,
            source: &'static str,
            source_id: &'static str,
            op: &'static str,
            version: i64,
            observed_at: i64,
            #[serde(serialize_with = "serde_bytes_array::serialize")]
            content_hash: [u8; 32],
            record: Record,
        }
        let bytes = rmp_serde::to_vec_named(&Wrong {
            schema_version: 1,
            source: "qms",
            source_id: "1",
            op: "upsert",
            version: 1,
            observed_at: 0,
            content_hash: [0; 32],
            record: Record {
                documents: vec![Document {
                    doc_type: 1,
                    number: 4509123456,
                }],
            },
        })
        .unwrap();
        let e = Envelope::decode(&bytes).unwrap_err().to_string();
        assert_eq!(
            e,
            "undecodable message: wrong_type at record.documents[0].number"
        );
        assert!(!e.contains("4509123456"));

        let e = Envelope::decode(&bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("undecodable message: cut_short"), "{e}");
    }

    #[test]
    fn a_key_of_the_message_is_not_printed() {
        assert!(!is_schema_name("Иванов"));
        assert!(!is_schema_name("4509123456"));
        assert!(is_schema_name("last_name"));
    }
}
