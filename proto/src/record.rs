//! The normalized patient record: the content every extractor publishes.
//!
//! A record says nothing about where it came from: source, source id and
//! ordering live in the [`Envelope`](crate::Envelope). Every field is either
//! normalized by [`crate::normalize`] or, when it could not be, kept as
//! received beside a [`Problem`](crate::Problem), so that nothing a source
//! said is silently dropped or "fixed" into something else.
//!
//! Compatibility rules (tested in `tests/compat.rs`): fields are encoded by
//! name; a field added later must be optional or have a default, so that the
//! next version reads today's messages and today's reader skips what it does
//! not know. Never rename or re-purpose a field.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::doctype::DocumentType;
pub use crate::normalize::FieldIssue;
use crate::normalize::{Checked, Problem};

/// One patient as one source system knows them. No passwords, ever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatientRecord {
    /// Business unit (hospital, branch) the record belongs to, as the
    /// operator's mapping names it.
    pub business_unit: Option<String>,
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    /// Patronymic; many foreign patients have none.
    pub middle_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    /// Identity documents, series and number always TEXT as normalized.
    pub documents: Vec<IdentityDocument>,
    pub snils: Option<Checked>,
    pub oms_policy: Option<Checked>,
    pub phones: Vec<Phone>,
    pub emails: Vec<Email>,
    /// Fields the extractor could not map at all (a birth date of
    /// 0001-01-01, bytes invalid in the declared charset…), with why and the
    /// raw text, so an operator can see and fix them at the source.
    pub issues: Vec<FieldIssue>,
}

/// Sex where a source states it. Values a reader does not know become
/// `Unknown` instead of failing the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
    #[serde(other)]
    Unknown,
}

impl Sex {
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "M",
            Sex::Female => "F",
            Sex::Unknown => "U",
        }
    }
}

/// An identity document. Series and number are text exactly as normalized:
/// leading zeros and letter series such as `IV-АИ` survive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityDocument {
    /// Canonical type; [`DocumentType::UNKNOWN`] when the source gave none or
    /// one we cannot map — never "passport" by default.
    #[serde(rename = "type")]
    pub doc_type: DocumentType,
    /// The source's own type code, kept for audit and for re-mapping.
    #[serde(default)]
    pub source_type_code: Option<String>,
    #[serde(default)]
    pub series: Option<String>,
    pub number: String,
    /// Set when series/number do not fit the type's format; they are then
    /// kept as received (trimmed).
    #[serde(default)]
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    pub number: Checked,
    /// The number the source marks as the one to call.
    #[serde(default)]
    pub preferred: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub address: Checked,
    #[serde(default = "EmailKind::contact")]
    pub kind: EmailKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    /// An address to write to.
    Contact,
    /// The login of the patient's portal account (the password is never read).
    Login,
    #[serde(other)]
    Other,
}

impl EmailKind {
    fn contact() -> Self {
        EmailKind::Contact
    }
}
