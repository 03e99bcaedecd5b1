//! Server-side sessions (table `console_sessions`) and the guard every page
//! passes: the session cookie names a signed-in steward, or the browser is
//! sent to sign in; every state-changing request carries the session's
//! CSRF token (form field `csrf` or header `X-CSRF-Token`), or is refused.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::accounts::Role;
use crate::i18n::Lang;
use crate::{Shared, BASE};

pub const COOKIE: &str = "console_session";
pub const LANG_COOKIE: &str = "console_lang";

/// Largest form a page sends (a split names at most a few hundred records).
pub const MAX_FORM_BYTES: usize = 256 * 1024;

pub use crate::accounts::Steward;

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session cookie of a new session (`Secure` when served over TLS).
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// Starts a session; gives its token (only the cookie holds it).
pub async fn create(
    pool: &PgPool,
    user: i64,
    lifetime: std::time::Duration,
) -> sqlx::Result<String> {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, user_id, csrf, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(token_hash(&token))
    .bind(user)
    .bind(csrf)
    .bind(lifetime.as_secs_f64())
    .execute(pool)
    .await?;
    // Expired sessions go when someone signs in: no timer needed.
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(token)
}

pub async fn end(pool: &PgPool, token: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(pool)
        .await
        .map(drop)
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    name: String,
    role: String,
    csrf: String,
}

async fn lookup(pool: &PgPool, token: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT u.id, u.name, u.role, s.csrf FROM console_sessions s
         JOIN console_users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now() AND u.disabled_at IS NULL",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await
}

/// The browser's language: its cookie, else the configured default.
pub fn lang_of(headers: &HeaderMap, default: Lang) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or(default)
}

/// Sends to sign-in; htmx requests are told to load the page instead of
/// swapping it into a row.
fn to_sign_in(headers: &HeaderMap) -> Response {
    let target = format!("{BASE}/signin");
    if headers.contains_key("hx-request") {
        ([("hx-redirect", target)], StatusCode::UNAUTHORIZED).into_response()
    } else {
        Redirect::to(&target).into_response()
    }
}

/// The guard: a signed-in steward (else to sign-in), the CSRF token on
/// every state-changing request (else 403). The steward goes into the
/// request's extensions.
pub async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let Some(token) = cookie(&headers, COOKIE).filter(|t| !t.is_empty()) else {
        return to_sign_in(&headers);
    };
    let row = match lookup(&app.pool, token).await {
        Ok(Some(row)) => row,
        Ok(None) => return to_sign_in(&headers),
        Err(e) => return crate::page::unavailable(&e),
    };
    let Some(role) = Role::parse(&row.role) else {
        return to_sign_in(&headers);
    };
    let steward = Steward {
        id: row.id,
        name: row.name,
        role,
        csrf: row.csrf,
        lang: lang_of(&headers, app.lang),
    };
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        if !csrf_ok(&headers, &bytes, &steward.csrf) {
            tracing::warn!(steward = %steward.name, "request without a valid CSRF token refused");
            return crate::page::forbidden(steward.lang, crate::i18n::Msg::CsrfRefused);
        }
        Body::from(bytes)
    };
    parts.extensions.insert(steward);
    next.run(Request::from_parts(parts, body)).await
}

fn csrf_ok(headers: &HeaderMap, body: &[u8], expected: &str) -> bool {
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form_urlencoded::parse(body)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
        });
    // Equal length and a constant-time comparison: the token is a secret.
    given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The fields of a form body, repeated names kept (a split's records).
pub fn fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
