//! Who is calling, and what they may do.
//!
//! Every request carries `Authorization: Bearer <credential>`: either an API
//! key (`idk_…`, table `identity_clients`, stored as its SHA-256) or a JWT
//! signed by one of the configured keys (`[auth] jwt_keys`), whose `sub`
//! names the client and whose `scope` (space-separated) or `scp` (a list)
//! gives its scopes. Scopes: `ids:read` (ids, memberships, history,
//! candidates), `personal:read` (the persons' data as well), and
//! `decisions:write` (link, keep apart, lock, unlock, resolve).
//! Each client has its own token bucket (`[auth] rate_per_second`, `burst`).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::problem::Problem;
use crate::settings::{AuthSettings, JwtKey};

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    IdsRead,
    PersonalRead,
    DecisionsWrite,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::IdsRead, Scope::PersonalRead, Scope::DecisionsWrite];

    pub fn name(self) -> &'static str {
        match self {
            Scope::IdsRead => "ids:read",
            Scope::PersonalRead => "personal:read",
            Scope::DecisionsWrite => "decisions:write",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's name: an API client's name, or `jwt:<sub>`.
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(scope.name()))
        }
    }

    /// Whether responses may carry personal data.
    pub fn personal(&self) -> bool {
        self.has(Scope::PersonalRead)
    }

    /// The actor the audit log names for this client's decisions.
    pub fn actor(&self) -> String {
        format!("identity:{}", self.name)
    }
}

/// A refused credential: the problem for the caller and, when the
/// credential named one, the client for the access log.
pub struct Refused {
    pub problem: Problem,
    pub client: Option<String>,
}

/// The SHA-256 of an API key, as `identity_clients.key_hash` stores it.
pub fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new API key: `idk_` and 256 random bits in hex.
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("idk_{}", hex::encode(bytes))
}

struct Verifier {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks credentials and rates.
pub struct Authenticator {
    pool: PgPool,
    verifiers: Vec<Verifier>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    limiter: DefaultKeyedRateLimiter<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
}

impl Authenticator {
    /// Reads the JWT keys: a key that cannot be read is a configuration
    /// error (the service does not start).
    pub fn new(pool: PgPool, settings: &AuthSettings) -> anyhow::Result<Authenticator> {
        let verifiers = settings
            .jwt_keys
            .iter()
            .map(verifier)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rate = NonZeroU32::new(settings.rate_per_second)
            .ok_or_else(|| anyhow::anyhow!("auth.rate_per_second must be at least 1"))?;
        let burst = NonZeroU32::new(settings.burst)
            .ok_or_else(|| anyhow::anyhow!("auth.burst must be at least 1"))?;
        Ok(Authenticator {
            pool,
            verifiers,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            leeway: settings.jwt_leeway.as_secs(),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// The caller of a request, or why it is refused.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let refused = |detail: &str| Refused {
            problem: Problem::unauthorized(detail),
            client: None,
        };
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(refused("send Authorization: Bearer <API key or JWT>"));
        };
        let credential = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| refused("the Authorization header is not `Bearer <credential>`"))?;
        let caller = if credential.matches('.').count() == 2 {
            self.jwt(credential).map_err(refused)?
        } else {
            self.api_key(credential)
                .await
                .map_err(|problem| Refused {
                    problem,
                    client: None,
                })?
                .ok_or_else(|| refused("unknown or revoked API key"))?
        };
        if let Err(not_until) = self.limiter.check_key(&caller.name) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "this client's request rate is over its limit (auth.rate_per_second)",
            );
            problem.retry_after = Some(wait.as_secs().max(1));
            return Err(Refused {
                problem,
                client: Some(caller.name),
            });
        }
        Ok(caller)
    }

    async fn api_key(&self, key: &str) -> Result<Option<Caller>, Problem> {
        let row: Option<(String, Vec<String>)> = sqlx::query_as(
            "SELECT name, scopes FROM identity_clients WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(name, scopes)| Caller {
            name,
            scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        }))
    }

    fn jwt(&self, token: &str) -> Result<Caller, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed JWT")?;
        let verifier = self
            .verifiers
            .iter()
            .find(|v| v.kid == header.kid && v.algorithm == header.alg)
            .ok_or("no configured key verifies this JWT (kid or alg)")?;
        let mut validation = Validation::new(verifier.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &validation)
            .map_err(|_| "invalid or expired JWT")?;
        let claims = data.claims;
        let names: Vec<String> = match (claims.scope, claims.scp) {
            (Some(s), _) => s.split_whitespace().map(str::to_string).collect(),
            (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        let sub: String = claims
            .sub
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        Ok(Caller {
            name: format!("jwt:{sub}"),
            scopes: names.iter().filter_map(|s| Scope::parse(s)).collect(),
        })
    }

    /// Forgets the buckets of clients idle long enough to be full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

fn verifier(key: &JwtKey) -> anyhow::Result<Verifier> {
    let algorithm: Algorithm = key
        .algorithm
        .parse()
        .map_err(|_| anyhow::anyhow!("auth.jwt_keys: unknown algorithm {:?}", key.algorithm))?;
    let pem = || -> anyhow::Result<Vec<u8>> {
        let path = key.public_key_file.as_ref().ok_or_else(|| {
            anyhow::anyhow!("auth.jwt_keys: {:?} needs public_key_file", key.algorithm)
        })?;
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("auth.jwt_keys: reading {}: {e}", path.display()))
    };
    let bad = |e: jsonwebtoken::errors::Error| anyhow::anyhow!("auth.jwt_keys: {e}");
    let decoding = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = key.secret.as_ref().ok_or_else(|| {
                anyhow::anyhow!("auth.jwt_keys: {:?} needs secret", key.algorithm)
            })?;
            DecodingKey::from_secret(secret.expose_secret().as_bytes())
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem()?).map_err(bad)?,
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem()?).map_err(bad)?,
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem()?).map_err(bad)?,
    };
    Ok(Verifier {
        kid: key.kid.clone(),
        algorithm,
        key: decoding,
    })
}

/// Shared handle.
pub type SharedAuthenticator = Arc<Authenticator>;
