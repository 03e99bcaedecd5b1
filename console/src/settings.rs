//! `[console]` of the identity service: the steward console. Doc comments
//! here are the user documentation.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the steward console under `/console/` on the API's listener
    /// (and its TLS). Off by default: a service that only answers other
    /// systems has no pages.
    pub enabled: bool,
    /// How long a sign-in lasts; the steward signs in again after it.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// The language of a browser that has not chosen one: `ru` or `en`.
    pub language: String,
    /// Most review items one queue page lists.
    pub page_size: i64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            session_lifetime: Duration::from_secs(8 * 3600),
            language: "ru".into(),
            page_size: 100,
        }
    }
}
