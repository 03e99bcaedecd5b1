//! Sign-in through an OpenID Connect provider (`[console.oidc]`): the
//! authorization-code flow with PKCE (S256), a random `state` bound to the
//! browser by a short-lived cookie and a random `nonce` checked in the ID
//! token, whose signature (the provider's published keys), issuer,
//! audience and expiry are checked by the `openidconnect` crate. The
//! provider's user is a console account by name (the configured claim):
//! accounts, and so roles, are created beforehand as for passwords; an
//! unknown or disabled name signs nobody in.
//!
//! The provider's discovery document and keys are read at each sign-in:
//! sign-ins are rare, and a provider's new keys are then used without a
//! restart. Flows begun and not yet back are kept in memory for ten
//! minutes: several instances behind one address need sticky sessions.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How long a browser may take at the provider.
const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// Most flows begun and not yet back (beyond it, new ones are refused).
const MAX_PENDING: usize = 10_000;
/// The cookie that binds a flow's `state` to the browser that began it.
pub const STATE_COOKIE: &str = "console_oidc";

/// `[console.oidc]`: sign-in through an OpenID Connect provider, beside
/// (not instead of) passwords. Present means enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer URL, e.g. `https://sso.example.org/realms/clinic`;
    /// its `/.well-known/openid-configuration` is read at each sign-in.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// The client secret (sent to the token endpoint with HTTP Basic
    /// authentication). Prefer `ETL__CONSOLE__OIDC__CLIENT_SECRET` to the
    /// file.
    pub client_secret: SecretString,
    /// Where the provider sends the browser back: the console's
    /// `/console/oidc/callback` at the address stewards use, e.g.
    /// `https://mpi.example.org/console/oidc/callback`; registered at the
    /// provider as the client's redirect URI.
    pub redirect_url: String,
    /// The ID-token claim that names the console account:
    /// `preferred_username` (default), `email` or `sub`. The account must
    /// exist and be active (`etl console user add …`); its role applies.
    #[serde(default)]
    pub account_claim: AccountClaim,
    /// Scopes asked for besides `openid` (default: `profile`, `email`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The text of the sign-in page's button (default: the issuer's host).
    #[serde(default)]
    pub label: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["profile".into(), "email".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountClaim {
    #[default]
    PreferredUsername,
    Email,
    Sub,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("console.oidc: {0}")]
    Settings(String),
    #[error("the provider could not be asked: {0}")]
    Provider(String),
    #[error("the token exchange failed: {0}")]
    Token(String),
    #[error("the provider sent no ID token")]
    NoIdToken,
    #[error("the ID token was refused: {0}")]
    IdToken(String),
    #[error("the ID token has no {0:?} claim")]
    NoAccountClaim(AccountClaim),
}

/// A flow begun: what the callback checks and sends.
struct Started {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    at: Instant,
}

/// HTTP for the `openidconnect` crate through the workspace's reqwest
/// client (rustls on ring), without following redirects.
struct Http(reqwest::Client);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            let mut built = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                built = built.header(name, value);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            built
                .body(bytes.to_vec())
                .map_err(|e| HttpError(e.to_string()))
        })
    }
}

pub struct Oidc {
    pub settings: OidcSettings,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: Http,
    pending: Mutex<HashMap<String, Started>>,
}

impl Oidc {
    /// Checks the settings' URLs now, so that a typo stops the service at
    /// start rather than at the first sign-in.
    pub fn new(settings: OidcSettings) -> Result<Oidc, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Settings(format!("issuer: {e}")))?;
        let redirect = RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| OidcError::Settings(format!("redirect_url: {e}")))?;
        let client = etl_runtime::tls::http_client(None)
            .map_err(|e| OidcError::Settings(format!("TLS: {e}")))?
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Settings(format!("HTTP client: {e}")))?;
        Ok(Oidc {
            settings,
            issuer,
            redirect,
            http: Http(client),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The button's text.
    pub fn label(&self) -> String {
        self.settings.label.clone().unwrap_or_else(|| {
            self.issuer
                .url()
                .host_str()
                .unwrap_or("OpenID Connect")
                .to_string()
        })
    }

    async fn client(
        &self,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let secret = ClientSecret::new(self.settings.client_secret.expose_secret().to_string());
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(secret),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Begins a flow: the provider's authorization URL and the `state`
    /// the browser's cookie is to hold.
    pub async fn begin(&self) -> Result<(String, String), OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.retain(|_, s| s.at.elapsed() < FLOW_LIFETIME);
        if pending.len() >= MAX_PENDING {
            return Err(OidcError::Provider("too many sign-ins under way".into()));
        }
        let started = Started {
            nonce,
            verifier,
            at: Instant::now(),
        };
        pending.insert(state.secret().clone(), started);
        Ok((url.to_string(), state.secret().clone()))
    }

    /// The flow `state` began, if it is still under way (once only).
    fn take(&self, state: &str) -> Option<Started> {
        let mut pending = self.pending.lock().expect("not poisoned");
        pending
            .remove(state)
            .filter(|s| s.at.elapsed() < FLOW_LIFETIME)
    }

    /// Ends the flow `state` began with the provider's `code`: the code
    /// exchanged (with the PKCE verifier), the ID token checked (signature,
    /// issuer, audience, expiry, nonce). Gives the account name the token
    /// names; `None` when `state` began no flow under way.
    pub async fn finish(&self, state: &str, code: &str) -> Result<Option<String>, OidcError> {
        let Some(started) = self.take(state) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(started.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Token(e.to_string()))?;
        let id_token = token.id_token().ok_or(OidcError::NoIdToken)?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &started.nonce)
            .map_err(|e| OidcError::IdToken(e.to_string()))?;
        let claim = self.settings.account_claim;
        let name = match claim {
            AccountClaim::PreferredUsername => claims.preferred_username().map(|u| u.to_string()),
            // Only an address the provider has verified: at some providers
            // users type their own.
            AccountClaim::Email => claims
                .email()
                .filter(|_| claims.email_verified() == Some(true))
                .map(|e| e.to_string()),
            AccountClaim::Sub => Some(claims.subject().to_string()),
        };
        name.map(Some).ok_or(OidcError::NoAccountClaim(claim))
    }
}
