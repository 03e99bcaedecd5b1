//! Normalization shared by every extractor.
//!
//! Each helper returns the canonical form of a valid value, or keeps the
//! value as received (trimmed) beside a [`Problem`] when it is not valid:
//! nothing is silently dropped, and nothing invalid is "fixed" into
//! something that looks valid. Empty input yields `None`.

use serde::{Deserialize, Serialize};

mod birth_date;
mod document;
mod email;
mod name;
mod oms;
mod phone;
mod snils;

pub use birth_date::{birth_date_yyyymmdd, earliest_birth_date};
pub use document::document;
pub use email::email;
pub use name::{fold_lookalikes_to_cyrillic, name};
pub use oms::{oms_check_digit, oms_policy};
pub use phone::{phone, split_phones};
pub use snils::{snils, snils_checksum};

/// A normalized identifier, or the raw value with why it is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checked {
    /// Canonical form when valid; otherwise the value as received, trimmed.
    pub value: String,
    /// `None` when `value` is valid and canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

impl Checked {
    pub fn valid(value: impl Into<String>) -> Self {
        Checked {
            value: value.into(),
            problem: None,
        }
    }

    pub fn invalid(raw: impl Into<String>, problem: Problem) -> Self {
        Checked {
            value: raw.into(),
            problem: Some(problem),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Why a value is not valid. Codes are stable: they are stored and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Wrong length or shape for its kind.
    BadFormat,
    /// Right shape, wrong checksum or check digit.
    BadChecksum,
    /// Characters that cannot belong to the value (or bytes invalid in the
    /// declared charset).
    BadCharacters,
    /// A date or number outside any plausible range.
    OutOfRange,
    /// A required value is missing.
    Missing,
    /// A problem this version of the reader does not know.
    #[serde(other)]
    Other,
}

impl Problem {
    pub fn code(self) -> &'static str {
        match self {
            Problem::BadFormat => "bad_format",
            Problem::BadChecksum => "bad_checksum",
            Problem::BadCharacters => "bad_characters",
            Problem::OutOfRange => "out_of_range",
            Problem::Missing => "missing",
            Problem::Other => "other",
        }
    }
}

/// A field the extractor could not map, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldIssue {
    /// Field name in this record (`birth_date`, `last_name`, …).
    pub field: String,
    pub problem: Problem,
    /// The value as received, lossily decoded if it was not valid text.
    #[serde(default)]
    pub raw: Option<String>,
}
