//! Sign-in through OpenID Connect against a small provider served by the
//! test over real HTTP (discovery, JWKS with a P-256 key rcgen makes, an
//! authorize endpoint that approves the test's user, a token endpoint that
//! checks the client secret and the PKCE verifier and signs the ID token):
//! the steward signs in; a foreign state, a replayed callback, a wrong
//! nonce and an unknown account sign nobody in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use sha2::{Digest, Sha256};
use steward_console::oidc::{AccountClaim, OidcSettings};
use tokio_util::sync::CancellationToken;

use crate::support::{client, free_port, Console, STEWARD};

const CLIENT_ID: &str = "steward-console";
const CLIENT_SECRET: &str = "a client secret for the tests";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the provider does wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    Nonce,
}

/// A code handed out by the authorize endpoint.
struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    user: String,
}

struct ProviderState {
    issuer: String,
    key: EncodingKey,
    jwk: serde_json::Value,
    /// The user the authorize endpoint approves.
    user: Mutex<String>,
    tamper: Mutex<Tamper>,
    grants: Mutex<HashMap<String, Grant>>,
}

type Shared = Arc<ProviderState>;

struct Provider {
    state: Shared,
    shutdown: CancellationToken,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn json(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn discovery(State(p): State<Shared>) -> Response {
    let i = &p.issuer;
    json(serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"]
    }))
}

async fn jwks(State(p): State<Shared>) -> Response {
    json(serde_json::json!({ "keys": [p.jwk] }))
}

/// Approves the configured user at once and sends the browser back.
async fn authorize(State(p): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"));
    let (Some(redirect), Some(state), Some(nonce), Some(challenge), true) = (
        q.get("redirect_uri"),
        q.get("state"),
        q.get("nonce"),
        q.get("code_challenge"),
        ok,
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let code = b64(&rand::random::<[u8; 16]>());
    let grant = Grant {
        nonce: nonce.clone(),
        challenge: challenge.clone(),
        redirect_uri: redirect.clone(),
        user: p.user.lock().unwrap().clone(),
    };
    p.grants.lock().unwrap().insert(code.clone(), grant);
    let back = format!(
        "{redirect}?code={code}&state={}",
        form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    Redirect::to(&back).into_response()
}

/// Checks the client's secret, the code and its PKCE verifier; answers
/// with a signed ID token.
async fn token(
    State(p): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_urlencoded::byte_serialize(CLIENT_ID.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>()
        ))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "client").into_response();
    }
    let grant = f
        .get("code")
        .and_then(|c| p.grants.lock().unwrap().remove(c));
    let Some(grant) = grant else {
        return (StatusCode::BAD_REQUEST, "code").into_response();
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if b64(&Sha256::digest(verifier.as_bytes())) != grant.challenge
        || f.get("redirect_uri") != Some(&grant.redirect_uri)
        || f.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return (StatusCode::BAD_REQUEST, "verifier").into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let nonce = match *p.tamper.lock().unwrap() {
        Tamper::Nonce => "not the nonce".to_string(),
        Tamper::None => grant.nonce,
    };
    let claims = serde_json::json!({
        "iss": p.issuer, "sub": format!("user-{}", grant.user), "aud": CLIENT_ID,
        "iat": now, "exp": now + 300, "nonce": nonce, "preferred_username": grant.user
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("test-key".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &p.key).expect("signed");
    json(serde_json::json!({
        "access_token": "an access token", "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token
    }))
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        // The public key as an uncompressed point: 0x04, x, y.
        let point = key.public_key_raw();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "test-key",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])
        });
        let state = Arc::new(ProviderState {
            issuer,
            key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("PEM key"),
            jwk,
            user: Mutex::new(STEWARD.to_string()),
            tamper: Mutex::new(Tamper::None),
            grants: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .expect("provider serves");
        });
        Provider { state, shutdown }
    }
}

/// Cookie `name` a response sets, as `name=value`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .find(|kv| kv.starts_with(&format!("{name}=")) && kv.len() > name.len() + 1)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Begins a sign-in and follows it through the provider; gives the state
/// cookie and the callback URL the provider sent the browser to.
async fn through_provider(console: &Console) -> (String, String) {
    let http = client();
    let r = http.get(console.url("/oidc/start")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let state_cookie = set_cookie(&r, "console_oidc").expect("the state cookie");
    let r = http.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 303, "the provider approves");
    (state_cookie, location(&r))
}

async fn callback(cookie: &str, url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_signs_in_through_openid_connect() {
    let provider = Provider::start().await;
    let port = free_port();
    let issuer = provider.state.issuer.clone();
    let console = Console::start_with(|s| {
        s.api.listen = ([127, 0, 0, 1], port).into();
        s.console.oidc = Some(OidcSettings {
            issuer,
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_url: format!("http://127.0.0.1:{port}/console/oidc/callback"),
            account_claim: AccountClaim::PreferredUsername,
            scopes: vec!["profile".into()],
            label: Some("Clinic SSO".into()),
        });
    })
    .await;
    let http = client();
    let page = http
        .get(console.url("/signin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"oidc\"") && page.contains("Clinic SSO"));

    // The steward: a session, the queue under the steward's name.
    let (state, back) = through_provider(&console).await;
    assert!(back.starts_with(&console.url("/oidc/callback?")), "{back}");
    let r = callback(&state, &back).await;
    assert_eq!(r.status(), 200);
    let session = set_cookie(&r, "console_session").expect("a session");
    let (status, queue) = console.get(&session, "/queue").await;
    assert_eq!(status, 200);
    assert!(queue.contains(&format!("{STEWARD} (steward)")), "{queue}");

    // The same callback again: its state is spent.
    let r = callback(&state, &back).await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "console_session").is_none());

    // Another browser's state (a sign-in forced on the steward's browser).
    let (_, back) = through_provider(&console).await;
    let (mine, _) = through_provider(&console).await;
    let r = callback(&mine, &back).await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "console_session").is_none());

    // An ID token with another nonce.
    *provider.state.tamper.lock().unwrap() = Tamper::Nonce;
    let (state, back) = through_provider(&console).await;
    let r = callback(&state, &back).await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "console_session").is_none());
    *provider.state.tamper.lock().unwrap() = Tamper::None;

    // A user of the provider without a console account.
    *provider.state.user.lock().unwrap() = "mallory".into();
    let (state, back) = through_provider(&console).await;
    let r = callback(&state, &back).await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "console_session").is_none());

    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&console.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
}
