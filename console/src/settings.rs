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
    /// Failed sign-ins for one account name after which signing in as that
    /// name is refused (HTTP 429, before any password is checked) until
    /// `sign_in_lockout` has passed since the last failure. Counted for any
    /// name typed, existing or not.
    pub sign_in_failures_per_account: u32,
    /// The same for one client address, whatever names it tries.
    pub sign_in_failures_per_address: u32,
    /// How long failures are remembered and sign-in then refused, e.g.
    /// `"15m"`. Counts are kept in memory: a restart forgets them.
    #[serde(with = "humantime_serde")]
    pub sign_in_lockout: Duration,
    /// Sign-in through an OpenID Connect provider besides passwords
    /// (`[console.oidc]`); absent: passwords only.
    pub oidc: Option<crate::oidc::OidcSettings>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            session_lifetime: Duration::from_secs(8 * 3600),
            language: "ru".into(),
            page_size: 100,
            sign_in_failures_per_account: 5,
            sign_in_failures_per_address: 20,
            sign_in_lockout: Duration::from_secs(15 * 60),
            oidc: None,
        }
    }
}
