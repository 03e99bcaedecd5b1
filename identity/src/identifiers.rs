//! Identifiers a caller looks persons up by, normalized exactly as the
//! loader normalizes what it stores (`proto::normalize`), and their FHIR
//! identifier systems.
//!
//! | system | identifier | value |
//! |---|---|---|
//! | `urn:oid:1.2.643.100.3` | SNILS (the OID Russian qualified certificates use for it) | 11 digits, any layout (`112-233-445 95`) |
//! | `urn:etl-bus:oms-policy` | OMS policy (unified policy number, or an older policy's number) | as issued |
//! | `urn:etl-bus:document:<code>` | an identity document of canonical type `<code>` (`passport`, `birth_certificate`, …; proto `DocumentType`) | series and number in one text (`4506 123456`, `IV-АИ 123456`, `KA3394495`) |
//! | `urn:etl-bus:source:<source>` | a source record (`qms`, `infoclinica`, …) | its source id |

use proto::normalize::{self, Checked};
use proto::{identifier_key, DocumentType};

use crate::problem::Problem;

pub const SNILS_SYSTEM: &str = "urn:oid:1.2.643.100.3";
pub const OMS_SYSTEM: &str = "urn:etl-bus:oms-policy";
pub const DOCUMENT_SYSTEM_PREFIX: &str = "urn:etl-bus:document:";
pub const SOURCE_SYSTEM_PREFIX: &str = "urn:etl-bus:source:";

/// An identifier as a caller gives it.
#[derive(Debug, Clone)]
pub enum Identifier {
    Snils(String),
    Oms(String),
    Document {
        doc_type: String,
        series: Option<String>,
        number: String,
    },
    /// A source record (FHIR only; the JSON API has `/v1/records`).
    Record {
        source: String,
        source_id: String,
    },
}

impl Identifier {
    /// The kind, for the access log and problems (never the value).
    pub fn kind(&self) -> String {
        match self {
            Identifier::Snils(_) => "snils".into(),
            Identifier::Oms(_) => "oms".into(),
            Identifier::Document { doc_type, .. } => format!("document {}", printable(doc_type)),
            Identifier::Record { .. } => "source record".into(),
        }
    }

    /// The blocking key (`matcher::features`) of the normalized identifier;
    /// a problem if it is not valid.
    pub fn key(&self) -> Result<String, Problem> {
        match self {
            Identifier::Snils(raw) => Ok(identifier_key::snils(&valid(
                "snils",
                normalize::snils(raw),
            )?)),
            Identifier::Oms(raw) => Ok(identifier_key::oms(&valid(
                "oms_policy",
                normalize::oms_policy(raw),
            )?)),
            Identifier::Document {
                doc_type,
                series,
                number,
            } => document_key(doc_type, series.as_deref(), number),
            Identifier::Record { .. } => Err(Problem::bad_request(
                "invalid-identifier",
                "a source record is not looked up by key",
            )),
        }
    }

    /// Reads a FHIR `identifier` search value `system|value`.
    pub fn from_fhir(token: &str) -> Result<Identifier, Problem> {
        let (system, value) = token.split_once('|').ok_or_else(|| {
            Problem::bad_request(
                "invalid-identifier",
                "identifier must be `system|value` with one of the documented systems",
            )
        })?;
        if value.trim().is_empty() {
            return Err(Problem::bad_request(
                "invalid-identifier",
                "the identifier's value is empty",
            ));
        }
        let value = value.to_string();
        if system == SNILS_SYSTEM {
            Ok(Identifier::Snils(value))
        } else if system == OMS_SYSTEM {
            Ok(Identifier::Oms(value))
        } else if let Some(code) = system.strip_prefix(DOCUMENT_SYSTEM_PREFIX) {
            Ok(Identifier::Document {
                doc_type: code.to_string(),
                series: None,
                number: value,
            })
        } else if let Some(source) = system.strip_prefix(SOURCE_SYSTEM_PREFIX) {
            Ok(Identifier::Record {
                source: source.to_string(),
                source_id: value,
            })
        } else {
            Err(Problem::bad_request(
                "unknown-identifier-system",
                "unknown identifier system; the README lists the systems",
            ))
        }
    }
}

fn valid(field: &str, checked: Option<Checked>) -> Result<String, Problem> {
    match checked {
        Some(c) if c.is_valid() => Ok(c.value),
        Some(c) => Err(Problem::bad_request(
            "invalid-identifier",
            format!(
                "{field} is not valid ({})",
                c.problem.map_or("bad_format", |p| p.code())
            ),
        )
        .with("field", field)),
        None => Err(
            Problem::bad_request("invalid-identifier", format!("{field} is empty"))
                .with("field", field),
        ),
    }
}

/// A document type by its code (`passport`) or number (`1`); `unknown`
/// is refused (it never links anything).
pub fn document_type(code: &str) -> Result<DocumentType, Problem> {
    let t = DocumentType::from_code(code)
        .or_else(|| {
            code.parse::<u16>()
                .ok()
                .map(DocumentType)
                .filter(|t| t.is_known())
        })
        .filter(|t| *t != DocumentType::UNKNOWN);
    t.ok_or_else(|| {
        Problem::bad_request(
            "invalid-identifier",
            format!(
                "document type {} is not a canonical type (codes: passport, birth_certificate, …)",
                printable(code)
            ),
        )
    })
}

/// The blocking key of a document, normalized as on load.
pub fn document_key(code: &str, series: Option<&str>, number: &str) -> Result<String, Problem> {
    let t = document_type(code)?;
    let doc = normalize::document(t, None, series, Some(number)).ok_or_else(|| {
        Problem::bad_request("invalid-identifier", "the document's number is empty")
    })?;
    if let Some(p) = doc.problem {
        return Err(Problem::bad_request(
            "invalid-identifier",
            format!("the document does not fit its type's format ({})", p.code()),
        )
        .with("field", "document"));
    }
    Ok(identifier_key::document(
        t.0,
        doc.series.as_deref().unwrap_or_default(),
        &doc.number,
    ))
}

/// A code for a message: known type codes as they are, anything else
/// replaced (it may be a value typed into the wrong field).
fn printable(code: &str) -> String {
    if code.len() <= 40 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("`{code}`")
    } else {
        "(not shown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_normalize_as_on_load() {
        let s = Identifier::Snils("112-233-445 95".into());
        assert_eq!(s.key().unwrap(), "s:11223344595");
        assert!(Identifier::Snils("112-233-445 96".into()).key().is_err());
        let d = document_key("passport", Some("45 06"), "123456").unwrap();
        assert_eq!(d, "d:1:4506:123456");
        assert_eq!(document_key("1", None, "4506 123456").unwrap(), d);
        assert!(document_key("unknown", None, "4506 123456").is_err());
        assert!(document_key("passport", None, "4506 12345").is_err());
    }

    #[test]
    fn fhir_systems() {
        let i = Identifier::from_fhir("urn:oid:1.2.643.100.3|11223344595").unwrap();
        assert!(matches!(i, Identifier::Snils(_)));
        let i = Identifier::from_fhir("urn:etl-bus:document:passport|4506 123456").unwrap();
        assert_eq!(i.key().unwrap(), "d:1:4506:123456");
        assert!(Identifier::from_fhir("urn:x|1").is_err());
        assert!(Identifier::from_fhir("11223344595").is_err());
    }
}
