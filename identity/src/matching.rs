//! `$match`: the persons a set of demographics may belong to, with the
//! model's probability and each field's contribution, best first. Nothing
//! is written.
//!
//! The query is read as the loader reads a record (`proto::normalize`,
//! `loader::validity`); its candidates are found and scored by
//! `matcher::candidates` (the matcher's features, blocking keys and model),
//! which the steward console's search by name shares.

use chrono::NaiveDate;
use proto::normalize::{self, Checked};
use proto::{Email, EmailKind, IdentityDocument, PatientRecord, Phone, Sex};
use serde::Deserialize;

pub use matcher::candidates::{candidates, Candidate, FieldContribution, Scorer};

use crate::identifiers::document_type;
use crate::problem::Problem;

/// Demographics to match (all optional; at least one field).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    /// Patronymic.
    pub middle_name: Option<String>,
    #[schema(value_type = Option<String>, format = Date)]
    pub birth_date: Option<NaiveDate>,
    /// `M` or `F` (also `male`, `female`); anything else is unknown.
    pub sex: Option<String>,
    pub snils: Option<String>,
    pub oms_policy: Option<String>,
    #[serde(default)]
    pub documents: Vec<DocumentIn>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
}

/// An identity document of a query.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// Canonical type code (`passport`, `birth_certificate`, …) or number.
    #[serde(rename = "type")]
    pub doc_type: String,
    pub series: Option<String>,
    pub number: String,
}

fn checked(field: &str, value: Option<Checked>) -> Result<Option<Checked>, Problem> {
    match value {
        Some(c) if !c.is_valid() => Err(Problem::bad_request(
            "invalid-identifier",
            format!(
                "{field} is not valid ({})",
                c.problem.map_or("bad_format", |p| p.code())
            ),
        )
        .with("field", field)),
        other => Ok(other),
    }
}

impl Demographics {
    /// The query as a record, normalized as the loader normalizes; an
    /// identifier that is not valid is a problem (it could match nothing).
    pub fn record(&self) -> Result<PatientRecord, Problem> {
        let mut documents = Vec::new();
        for (n, d) in self.documents.iter().enumerate() {
            let t = document_type(&d.doc_type)?;
            let doc: Option<IdentityDocument> =
                normalize::document(t, None, d.series.as_deref(), Some(&d.number));
            match doc {
                Some(doc) if doc.problem.is_none() => documents.push(doc),
                _ => {
                    return Err(Problem::bad_request(
                        "invalid-identifier",
                        format!("documents[{n}] does not fit its type's format"),
                    )
                    .with("field", format!("documents[{n}]")))
                }
            }
        }
        let mut phones = Vec::new();
        for (n, p) in self.phones.iter().enumerate() {
            let number = checked(&format!("phones[{n}]"), normalize::phone(p))?;
            phones.extend(number.map(|number| Phone {
                number,
                preferred: false,
            }));
        }
        let mut emails = Vec::new();
        for (n, e) in self.emails.iter().enumerate() {
            let address = checked(&format!("emails[{n}]"), normalize::email(e))?;
            emails.extend(address.map(|address| Email {
                address,
                kind: EmailKind::Contact,
            }));
        }
        let sex = match self.sex.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("m" | "male") => Some(Sex::Male),
            Some("f" | "female") => Some(Sex::Female),
            Some(_) => Some(Sex::Unknown),
            None => None,
        };
        let record = PatientRecord {
            last_name: self.last_name.as_deref().and_then(normalize::name),
            first_name: self.first_name.as_deref().and_then(normalize::name),
            middle_name: self.middle_name.as_deref().and_then(normalize::name),
            birth_date: self.birth_date,
            sex,
            documents,
            snils: checked("snils", self.snils.as_deref().and_then(normalize::snils))?,
            oms_policy: checked(
                "oms_policy",
                self.oms_policy.as_deref().and_then(normalize::oms_policy),
            )?,
            phones,
            emails,
            ..Default::default()
        };
        if record == PatientRecord::default() {
            return Err(Problem::bad_request(
                "empty-query",
                "give at least one field to match on",
            ));
        }
        Ok(record)
    }
}
