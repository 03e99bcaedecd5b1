//! The identity service's configuration. Doc comments here are the user
//! documentation; `deploy/config/identity.toml` shows every setting with its
//! default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use etl_runtime::database::DatabaseSettings;
use matcher::settings::MatcherSettings;
use secrecy::SecretString;
use serde::Deserialize;

etl_runtime::service_settings! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        pub database: DatabaseSettings,
        /// The API: address, TLS, body limit.
        pub api: ApiSettings,
        /// Who may call the API and how often.
        pub auth: AuthSettings,
        /// The matcher's settings that decide a pair (`scoring`, `weights`,
        /// `model`, `max_block_size`): keep them equal to the matcher's, so that
        /// `$match` and decisions agree with it. The other settings of the
        /// section are not used here.
        pub matcher: MatcherSettings,
        /// The steward console under `/console/` (console/README.md).
        pub console: steward_console::ConsoleSettings,
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address of the API (JSON under `/v1`, FHIR under `/fhir`), e.g.
    /// `"0.0.0.0:8443"`; port 0: any free port, logged at start.
    pub listen: SocketAddr,
    /// TLS of the API: set both to serve HTTPS (PEM files: the certificate
    /// chain and its private key). Unset: plain HTTP, for a TLS-terminating
    /// proxy on the same host only.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Most candidates `$match` returns.
    pub max_candidates: usize,
    /// Most records of one birth date (and its day/month swap) that
    /// `$match` reads to find the candidates sharing a name key; a date held
    /// by more (a placeholder such as 1900-01-01) is not used for names.
    pub max_birth_date_block: i64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: ([127, 0, 0, 1], 8443).into(),
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: 64 * 1024,
            max_candidates: 20,
            max_birth_date_block: 20_000,
        }
    }
}

/// `[auth]`: API keys (table `identity_clients`, `etl identity client
/// add`) and JWT bearer tokens are both accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Requests per second one client may make (a token bucket; refused
    /// requests get 429 with `Retry-After`).
    pub rate_per_second: u32,
    /// Requests a client may make at once after being idle.
    pub burst: u32,
    /// Keys that verify JWT bearer tokens. None: JWTs are refused.
    pub jwt_keys: Vec<JwtKey>,
    /// Required `iss` of a JWT, if set.
    pub jwt_issuer: Option<String>,
    /// Required `aud` of a JWT, if set.
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            rate_per_second: 50,
            burst: 100,
            jwt_keys: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(30),
        }
    }
}

/// One key verifying JWTs. A token names its key by `kid` when several are
/// configured; a key without `kid` verifies tokens without one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    pub kid: Option<String>,
    /// `HS256`, `HS384`, `HS512` (shared secret), `RS256`, `RS384`,
    /// `RS512`, `PS256`, `ES256`, `ES384` (PEM public key) or `EdDSA`.
    pub algorithm: String,
    /// The shared secret of an HMAC algorithm.
    pub secret: Option<SecretString>,
    /// The PEM public key of the other algorithms.
    pub public_key_file: Option<PathBuf>,
}
