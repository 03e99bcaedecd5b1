//! Canonical identity-document types (the target's `document_types`
//! reference table) and the mapping from each source's codes.
//!
//! A type is a number, not a Rust enum, so that a reader that predates a new
//! type still carries its code through to the database instead of failing.
//! A missing or unmapped source code is [`DocumentType::UNKNOWN`]: the system
//! we replace defaulted to "passport", which made different documents collide.

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

    /// qMS document type code → canonical type.
    ///
    /// Code 47 means "no documents": it maps to `UNKNOWN`, and an extractor
    /// should publish no document at all when series and number are empty.
    pub fn from_qms(code: Option<&str>) -> DocumentType {
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Self::UNKNOWN;
        };
        match code.parse::<u32>() {
            Ok(16) => Self::PASSPORT,
            Ok(17) => Self::INTERNATIONAL_PASSPORT,
            Ok(3) | Ok(732) => Self::BIRTH_CERTIFICATE,
            Ok(18) => Self::FOREIGN_BIRTH_CERTIFICATE,
            Ok(6) => Self::MERCHANT_NAVY_PASSPORT,
            Ok(19) => Self::SEAMANS_PASSPORT,
            Ok(7) => Self::MILITARY_ID,
            Ok(20) | Ok(289) => Self::RESERVE_OFFICER_ID,
            Ok(9) => Self::DIPLOMATIC_PASSPORT,
            Ok(10) | Ok(735) => Self::FOREIGN_PASSPORT,
            Ok(11) => Self::REFUGEE_APPLICATION,
            Ok(13) => Self::REFUGEE_ID,
            Ok(12) => Self::RESIDENCE_PERMIT,
            Ok(14) => Self::FORCED_MIGRANT_ID,
            Ok(15) => Self::TEMPORARY_ID,
            Ok(52) => Self::TEMPORARY_RESIDENCE_PERMIT,
            Ok(51) | Ok(90) | Ok(99) | Ok(100) | Ok(101) | Ok(412) | Ok(1374) => Self::OTHER,
            _ => Self::UNKNOWN,
        }
    }

    /// Infoclinica `CLIENTS.PASPTYPE` → canonical type: 1–17 are already the
    /// canonical numbering, 88 and 99 mean "other", anything else is unknown.
    pub fn from_infoclinica(code: Option<i64>) -> DocumentType {
        match code {
            Some(n @ 1..=17) => DocumentType(n as u16),
            Some(88) | Some(99) => Self::OTHER,
            _ => Self::UNKNOWN,
        }
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
    fn reference_table_is_dense_and_coded() {
        let ids: Vec<u16> = DocumentType::ALL.iter().map(|(t, _, _)| t.0).collect();
        assert_eq!(ids, (0..=18).collect::<Vec<_>>());
        assert_eq!(DocumentType::PASSPORT.code(), Some("passport"));
        assert_eq!(DocumentType(19).code(), None);
    }
}
