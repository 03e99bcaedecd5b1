//! Canonical identity-document types (the target's `document_types`
//! reference table) and the mapping from each source's codes.
//!
//! A type is a number, not a Rust enum, so that a reader that predates a new
//! type still carries its code through to the database instead of failing.
//! A missing or unmapped source code is [`DocumentType::UNKNOWN`]: the system
//! we replace defaulted to "passport", which made different documents collide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentType(pub u16);

macro_rules! document_types {
    ($($name:ident = $id:literal, $code:literal, $title:literal;)*) => {
        impl DocumentType {
            $(pub const $name: DocumentType = DocumentType($id);)*

            /// Every canonical type: id, stable code, human name. The
            /// migrations seed the `document_types` table with exactly these.
            pub const ALL: &'static [(DocumentType, &'static str, &'static str)] =
                &[$((DocumentType($id), $code, $title),)*];
        }
    };
}

document_types! {
    UNKNOWN = 0, "unknown", "Unknown or missing document type";
    PASSPORT = 1, "passport", "Russian internal passport";
    INTERNATIONAL_PASSPORT = 2, "international_passport", "Russian international passport";
    BIRTH_CERTIFICATE = 3, "birth_certificate", "Russian birth certificate";
    FOREIGN_BIRTH_CERTIFICATE = 4, "foreign_birth_certificate", "Birth certificate issued abroad";
    MERCHANT_NAVY_PASSPORT = 5, "merchant_navy_passport", "Merchant-navy passport";
    SEAMANS_PASSPORT = 6, "seamans_passport", "Seaman's passport";
    MILITARY_ID = 7, "military_id", "Soldier's military ID";
    RESERVE_OFFICER_ID = 8, "reserve_officer_id", "Reserve officer's military ID";
    DIPLOMATIC_PASSPORT = 9, "diplomatic_passport", "Diplomatic passport";
    FOREIGN_PASSPORT = 10, "foreign_passport", "Foreign citizen's passport";
    REFUGEE_APPLICATION = 11, "refugee_application", "Refugee application certificate";
    RESIDENCE_PERMIT = 12, "residence_permit", "Residence permit";
    REFUGEE_ID = 13, "refugee_id", "Refugee ID";
    FORCED_MIGRANT_ID = 14, "forced_migrant_id", "Forced-migrant ID";
    TEMPORARY_ID = 15, "temporary_id", "Temporary Russian ID";
    TEMPORARY_RESIDENCE_PERMIT = 16, "temporary_residence_permit", "Temporary residence permit";
    OTHER = 17, "other", "Other documents";
    FOREIGN_NATIONAL_ID = 18, "foreign_national_id", "National identity or social-security number issued abroad";
}

impl DocumentType {
    /// Whether this is one of the canonical types this version knows.
    pub fn is_known(self) -> bool {
        Self::ALL.iter().any(|(t, _, _)| *t == self)
    }

    /// Stable code (`passport`, `birth_certificate`, …), `None` for a type
    /// this version does not know.
    pub fn code(self) -> Option<&'static str> {
        Self::ALL
            .iter()
            .find(|(t, _, _)| *t == self)
            .map(|(_, c, _)| *c)
    }

    /// qMS document type code → canonical type, by
    /// [`DocumentTypeMap::qms_default`].
    ///
    /// Code 47 means "no documents": it maps to `UNKNOWN`, and an extractor
    /// should publish no document at all when series and number are empty.
    pub fn from_qms(code: Option<&str>) -> DocumentType {
        DocumentTypeMap::qms_default().map_text(code)
    }

    /// Infoclinica `CLIENTS.PASPTYPE` → canonical type, by
    /// [`DocumentTypeMap::infoclinica_default`]: 1–17 are already the
    /// canonical numbering, 88 and 99 mean "other", anything else is unknown.
    pub fn from_infoclinica(code: Option<i64>) -> DocumentType {
        DocumentTypeMap::infoclinica_default().map(code)
    }

    /// The canonical type with this stable code (`passport`, …).
    pub fn from_code(code: &str) -> Option<DocumentType> {
        Self::ALL
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(t, _, _)| *t)
    }
}

/// qMS codes (see the qMS extractor's README) → canonical types.
const QMS_CODES: &[(i64, DocumentType)] = &[
    (16, DocumentType::PASSPORT),
    (17, DocumentType::INTERNATIONAL_PASSPORT),
    (3, DocumentType::BIRTH_CERTIFICATE),
    (732, DocumentType::BIRTH_CERTIFICATE),
    (18, DocumentType::FOREIGN_BIRTH_CERTIFICATE),
    (6, DocumentType::MERCHANT_NAVY_PASSPORT),
    (19, DocumentType::SEAMANS_PASSPORT),
    (7, DocumentType::MILITARY_ID),
    (20, DocumentType::RESERVE_OFFICER_ID),
    (289, DocumentType::RESERVE_OFFICER_ID),
    (9, DocumentType::DIPLOMATIC_PASSPORT),
    (10, DocumentType::FOREIGN_PASSPORT),
    (735, DocumentType::FOREIGN_PASSPORT),
    (11, DocumentType::REFUGEE_APPLICATION),
    (13, DocumentType::REFUGEE_ID),
    (12, DocumentType::RESIDENCE_PERMIT),
    (14, DocumentType::FORCED_MIGRANT_ID),
    (15, DocumentType::TEMPORARY_ID),
    (52, DocumentType::TEMPORARY_RESIDENCE_PERMIT),
    (51, DocumentType::OTHER),
    (90, DocumentType::OTHER),
    (99, DocumentType::OTHER),
    (100, DocumentType::OTHER),
    (101, DocumentType::OTHER),
    (412, DocumentType::OTHER),
    (1374, DocumentType::OTHER),
];

/// One source's document-type codes → canonical types: what a source's own
/// dictionary of document types means. A code the map does not list is
/// [`DocumentType::UNKNOWN`], never a guess.
///
/// In a configuration file it is a table from the source's code to the
/// canonical type's stable code (see [`DocumentType::ALL`]):
///
/// ```toml
/// [document_types]
/// 1 = "passport"
/// 3 = "international_passport"
/// 5 = "birth_certificate"
/// 99 = "other"
/// ```
///
/// A configured table replaces the default map whole: a code it leaves out
/// is `unknown` (a code of a dictionary that differs from the default must
/// not silently keep the default's meaning). Keys are integers, values
/// canonical codes; anything else is refused when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct DocumentTypeMap {
    codes: BTreeMap<i64, DocumentType>,
}

impl DocumentTypeMap {
    /// qMS's codes (the qMS extractor's default).
    pub fn qms_default() -> DocumentTypeMap {
        DocumentTypeMap {
            codes: QMS_CODES.iter().copied().collect(),
        }
    }

    /// Infoclinica's usual `PASPTYPE` dictionary (the Infoclinica
    /// extractor's default): 1–17 in the canonical numbering, 88 and 99
    /// "other".
    pub fn infoclinica_default() -> DocumentTypeMap {
        let canonical = (1..=17).map(|n| (n, DocumentType(n as u16)));
        let other = [88, 99].map(|n| (n, DocumentType::OTHER));
        DocumentTypeMap {
            codes: canonical.chain(other).collect(),
        }
    }

    /// The canonical type of an integer code; `UNKNOWN` when missing or not
    /// in the map.
    pub fn map(&self, code: Option<i64>) -> DocumentType {
        code.and_then(|c| self.codes.get(&c).copied())
            .unwrap_or(DocumentType::UNKNOWN)
    }

    /// The canonical type of a code given as text (` 16 `); `UNKNOWN` when
    /// blank, not an integer, or not in the map.
    pub fn map_text(&self, code: Option<&str>) -> DocumentType {
        self.map(code.and_then(|c| c.trim().parse().ok()))
    }

    /// Every code and its type, in code order.
    pub fn entries(&self) -> impl Iterator<Item = (i64, DocumentType)> + '_ {
        self.codes.iter().map(|(c, t)| (*c, *t))
    }
}

/// Why a configured document-type map was refused (names the key or value,
/// which are configuration, never patient data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDocumentTypeMap {
    #[error("document type code {0:?} is not an integer")]
    Code(String),
    #[error(
        "document type {0:?} is not a canonical type (passport, \
         international_passport, birth_certificate, …, other, unknown)"
    )]
    Type(String),
}

impl TryFrom<BTreeMap<String, String>> for DocumentTypeMap {
    type Error = InvalidDocumentTypeMap;

    fn try_from(table: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        let mut codes = BTreeMap::new();
        for (code, name) in table {
            let code_number = code
                .trim()
                .parse()
                .map_err(|_| InvalidDocumentTypeMap::Code(code.clone()))?;
            let doc_type = DocumentType::from_code(name.trim())
                .ok_or_else(|| InvalidDocumentTypeMap::Type(name.clone()))?;
            codes.insert(code_number, doc_type);
        }
        Ok(DocumentTypeMap { codes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_unknown_is_never_passport() {
        assert_eq!(DocumentType::from_qms(None), DocumentType::UNKNOWN);
        assert_eq!(DocumentType::from_qms(Some("  ")), DocumentType::UNKNOWN);
        assert_eq!(DocumentType::from_qms(Some("4242")), DocumentType::UNKNOWN);
        assert_eq!(DocumentType::from_qms(Some("abc")), DocumentType::UNKNOWN);
        assert_eq!(DocumentType::from_qms(Some("47")), DocumentType::UNKNOWN);
        assert_eq!(DocumentType::from_infoclinica(None), DocumentType::UNKNOWN);
        assert_eq!(
            DocumentType::from_infoclinica(Some(0)),
            DocumentType::UNKNOWN
        );
        assert_eq!(
            DocumentType::from_infoclinica(Some(18)),
            DocumentType::UNKNOWN
        );
    }

    #[test]
    fn qms_codes_map_to_canonical_types() {
        assert_eq!(DocumentType::from_qms(Some("16")), DocumentType::PASSPORT);
        assert_eq!(
            DocumentType::from_qms(Some(" 3 ")),
            DocumentType::BIRTH_CERTIFICATE
        );
        assert_eq!(
            DocumentType::from_qms(Some("289")),
            DocumentType::RESERVE_OFFICER_ID
        );
        assert_eq!(
            DocumentType::from_qms(Some("735")),
            DocumentType::FOREIGN_PASSPORT
        );
        assert_eq!(DocumentType::from_qms(Some("1374")), DocumentType::OTHER);
    }

    #[test]
    fn infoclinica_codes_map_to_canonical_types() {
        assert_eq!(
            DocumentType::from_infoclinica(Some(1)),
            DocumentType::PASSPORT
        );
        assert_eq!(
            DocumentType::from_infoclinica(Some(17)),
            DocumentType::OTHER
        );
        assert_eq!(
            DocumentType::from_infoclinica(Some(99)),
            DocumentType::OTHER
        );
        assert_eq!(
            DocumentType::from_infoclinica(Some(88)),
            DocumentType::OTHER
        );
    }

    #[test]
    fn a_configured_map_replaces_the_default() {
        let table: BTreeMap<String, String> = [
            ("1", "passport"),
            ("3", "international_passport"),
            (" 5 ", "birth_certificate"),
            ("99", "other"),
        ]
        .into_iter()
        .map(|(c, t)| (c.to_string(), t.to_string()))
        .collect();
        let map = DocumentTypeMap::try_from(table).unwrap();
        assert_eq!(map.map(Some(3)), DocumentType::INTERNATIONAL_PASSPORT);
        assert_eq!(map.map(Some(5)), DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(map.map_text(Some(" 5")), DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(map.map(Some(1)), DocumentType::PASSPORT);
        // Left out: unknown, not the default's "international passport".
        assert_eq!(map.map(Some(2)), DocumentType::UNKNOWN);
        assert_eq!(map.map(None), DocumentType::UNKNOWN);
        assert_eq!(map.entries().count(), 4);
    }

    #[test]
    fn a_bad_map_is_refused_with_its_key_or_value() {
        let one = |c: &str, t: &str| BTreeMap::from([(c.to_string(), t.to_string())]);
        assert_eq!(
            DocumentTypeMap::try_from(one("x1", "passport")),
            Err(InvalidDocumentTypeMap::Code("x1".into()))
        );
        assert_eq!(
            DocumentTypeMap::try_from(one("1", "pasport")),
            Err(InvalidDocumentTypeMap::Type("pasport".into()))
        );
        let unknown = DocumentTypeMap::try_from(one("47", "unknown")).unwrap();
        assert_eq!(unknown.map(Some(47)), DocumentType::UNKNOWN);
    }

    #[test]
    fn defaults_read_as_before() {
        let qms = DocumentTypeMap::qms_default();
        assert_eq!(qms.entries().count(), QMS_CODES.len());
        assert_eq!(qms.map_text(Some("016")), DocumentType::PASSPORT);
        let ic = DocumentTypeMap::infoclinica_default();
        for n in 1..=17 {
            assert_eq!(ic.map(Some(n)), DocumentType(n as u16));
        }
        assert_eq!(
            DocumentType::from_code("birth_certificate"),
            Some(DocumentType::BIRTH_CERTIFICATE)
        );
        assert_eq!(DocumentType::from_code("nope"), None);
    }

    #[test]
    fn reference_table_is_dense_and_coded() {
        let ids: Vec<u16> = DocumentType::ALL.iter().map(|(t, _, _)| t.0).collect();
        assert_eq!(ids, (0..=18).collect::<Vec<_>>());
        assert_eq!(DocumentType::PASSPORT.code(), Some("passport"));
        assert_eq!(DocumentType(19).code(), None);
    }
}
