//! Sign-in (password, or an OpenID Connect provider when configured),
//! sign-out, the language switch and the administrators' page of accounts.

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;

use crate::accounts::{self, Credentials, Role};
use crate::i18n::{Lang, Msg};
use crate::page::{self, frame};
use crate::session::{self, field, fields, Steward};
use crate::{oidc, Shared, BASE};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|| async { Redirect::to(&format!("{BASE}/queue")) }),
        )
        .route("/signin", get(form).post(sign_in))
        .route("/oidc/start", get(oidc_start))
        .route("/oidc/callback", get(oidc_callback))
        .route("/lang/{code}", get(language))
}

pub fn signed_in_routes() -> Router<Shared> {
    Router::new()
        .route("/signout", post(sign_out))
        .route("/accounts", get(account_list).post(account_action))
}

/// The sign-in form (and the provider's button when OpenID Connect is
/// configured), with why the last attempt failed.
fn sign_in_page(app: &Shared, lang: Lang, problem: Option<String>) -> maud::Markup {
    let body = html! {
        @if let Some(problem) = problem { p.problem #signin-failed { (problem) } }
        @if let Some(oidc) = &app.oidc {
            p { a.button #oidc href={(BASE) "/oidc/start"} { (lang.t(Msg::SignInWith)) " " (oidc.label()) } }
        }
        form.signin method="post" action={(BASE) "/signin"} {
            label { (lang.t(Msg::Name)) input #name name="name" autocomplete="username" required; }
            label { (lang.t(Msg::Password)) input #password name="password" type="password" autocomplete="current-password" required; }
            button #signin type="submit" { (lang.t(Msg::SignIn)) }
        }
    };
    frame(lang, None, lang.t(Msg::SignIn), body)
}

async fn form(State(app): State<Shared>, headers: HeaderMap) -> Response {
    page::ok(sign_in_page(
        &app,
        session::lang_of(&headers, app.lang),
        None,
    ))
}

/// Checks the password (argon2, off the async threads) and starts a
/// session. A failure says nothing about which half was wrong. Too many
/// failures for the name or from the client's address are refused before
/// the password is checked.
async fn sign_in(
    State(app): State<Shared>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = session::lang_of(&headers, app.lang);
    let address = client.map(|Extension(ConnectInfo(a))| a.ip());
    let f = fields(&body);
    let name = field(&f, "name").unwrap_or_default().to_string();
    let password = field(&f, "password").unwrap_or_default().to_string();
    if let Err((by, wait)) = app.throttle.check(&name, address) {
        // Neither the name typed nor the address: which count, only.
        tracing::warn!(by = by.as_str(), "console sign-in throttled");
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let text = format!("{} {minutes})", lang.t(Msg::SignInThrottled));
        let mut r = page::html_response(
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_page(&app, lang, Some(text)),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        return r;
    }
    let found = match accounts::credentials(&app.pool, &name).await {
        Ok(found) => found,
        Err(e) => return page::unavailable(&e),
    };
    let matches = match found {
        Some(c) => {
            let stored = c.password_hash.clone();
            let ok =
                tokio::task::spawn_blocking(move || accounts::password_matches(&password, &stored))
                    .await
                    .unwrap_or(false);
            ok.then_some(c)
        }
        None => None,
    };
    let Some(account) = matches else {
        app.throttle.failed(&name, address);
        tracing::info!("console sign-in refused");
        let text = lang.t(Msg::SignInFailed).to_string();
        return page::html_response(
            StatusCode::UNAUTHORIZED,
            sign_in_page(&app, lang, Some(text)),
        );
    };
    app.throttle.succeeded(&name);
    match session_cookie(&app, &account).await {
        Ok(cookie) => (
            [(header::SET_COOKIE, cookie)],
            Redirect::to(&format!("{BASE}/queue")),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Starts `account`'s session; gives the cookie that carries it.
async fn session_cookie(app: &Shared, account: &Credentials) -> Result<String, Response> {
    let lifetime = app.settings.session_lifetime;
    let token = match session::create(&app.pool, account.id, lifetime).await {
        Ok(t) => t,
        Err(e) => return Err(page::unavailable(&e)),
    };
    tracing::info!(steward = %account.name, "console sign-in");
    Ok(session::set_cookie(&token, lifetime.as_secs(), app.https))
}

/// Sends the browser to the OpenID Connect provider, with a fresh state
/// in a cookie of its own.
async fn oidc_start(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let lang = session::lang_of(&headers, app.lang);
    let Some(oidc) = &app.oidc else {
        return page::not_found(lang);
    };
    let (url, state) = match oidc.begin().await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "console OpenID Connect sign-in could not begin");
            let text = lang.t(Msg::ProviderUnavailable).to_string();
            return page::html_response(
                StatusCode::BAD_GATEWAY,
                sign_in_page(&app, lang, Some(text)),
            );
        }
    };
    // `Lax`, unlike the session cookie: the provider sends the browser back
    // by a top-level navigation from its own site, which `Strict` would
    // strip the cookie from.
    let secure = if app.https { "; Secure" } else { "" };
    let cookie = format!(
        "{}={state}; Path={BASE}/oidc; HttpOnly; SameSite=Lax; Max-Age=600{secure}",
        oidc::STATE_COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider sends the browser back: the state must be the browser's
/// own (its cookie) and under way, the ID token valid, and the account it
/// names active. The page then loads the queue itself: a redirect would
/// still count as the provider's cross-site navigation, and the browser
/// would not send the new (`Strict`) session cookie with it.
async fn oidc_callback(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let lang = session::lang_of(&headers, app.lang);
    let Some(oidc) = &app.oidc else {
        return page::not_found(lang);
    };
    let refused = |why: &str| {
        // Why, never who: no claim value is logged.
        tracing::warn!(why, "console OpenID Connect sign-in refused");
        let text = lang.t(Msg::SignInFailed).to_string();
        page::html_response(
            StatusCode::UNAUTHORIZED,
            sign_in_page(&app, lang, Some(text)),
        )
    };
    let mine = session::cookie(&headers, oidc::STATE_COOKIE);
    let (Some(code), Some(state), None) = (&q.code, &q.state, &q.error) else {
        return refused("the provider sent an error or no code");
    };
    if mine != Some(state.as_str()) {
        return refused("the state is not the browser's");
    }
    let name = match oidc.finish(state, code).await {
        Ok(Some(name)) => name,
        Ok(None) => return refused("no sign-in under way for the state"),
        Err(e) => {
            tracing::warn!(error = %e, "console OpenID Connect sign-in failed");
            return refused("the provider's answer was not accepted");
        }
    };
    let account = match accounts::credentials(&app.pool, &name).await {
        Ok(Some(a)) => a,
        Ok(None) => return refused("no active account of that name"),
        Err(e) => return page::unavailable(&e),
    };
    let cookie = match session_cookie(&app, &account).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let clear = format!(
        "{}=; Path={BASE}/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
        oidc::STATE_COOKIE
    );
    let queue = format!("{BASE}/queue");
    let body = html! {
        (maud::DOCTYPE)
        html { head { meta http-equiv="refresh" content={"0;url=" (queue)}; }
            body { a #continue href=(queue) { (lang.t(Msg::Queue)) } } }
    };
    let mut r = page::ok(body);
    for c in [cookie, clear] {
        if let Ok(v) = header::HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn sign_out(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(token) = session::cookie(&headers, session::COOKIE) {
        if let Err(e) = session::end(&app.pool, token).await {
            return page::unavailable(&e);
        }
    }
    let cookie = session::clear_cookie(app.https);
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{BASE}/signin")),
    )
        .into_response()
}

/// Sets the language cookie and goes back where the steward was.
async fn language(Path(code): Path<String>, headers: HeaderMap) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::Ru);
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find(BASE).map(|at| r[at..].to_string()))
        .unwrap_or_else(|| format!("{BASE}/queue"));
    let cookie = format!(
        "{}={}; Path={BASE}; SameSite=Strict; Max-Age=31536000",
        session::LANG_COOKIE,
        lang.code()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

async fn account_list(State(app): State<Shared>, Extension(s): Extension<Steward>) -> Response {
    if !s.role.can_manage() {
        return page::forbidden(s.lang, Msg::AdministratorsOnly);
    }
    let list = match accounts::list(&app.pool).await {
        Ok(l) => l,
        Err(accounts::AccountError::Database(e)) => return page::unavailable(&e),
        Err(_) => return page::not_found(s.lang),
    };
    let l = s.lang;
    let body = html! {
        table {
            tr { th { (l.t(Msg::Name)) } th { (l.t(Msg::Role)) } th { (l.t(Msg::Created)) } th {} }
            @for a in &list {
                tr {
                    td { (a.name) } td { (a.role) } td { (a.created_at.format("%Y-%m-%d")) }
                    td {
                        @if a.disabled_at.is_some() { (l.t(Msg::Disabled)) } @else {
                            form.inline method="post" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="action" value="disable";
                                input type="hidden" name="name" value=(a.name);
                                button { (l.t(Msg::Disable)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { (l.t(Msg::AddAccount)) }
        form method="post" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="action" value="add";
            label { (l.t(Msg::Name)) input name="name" required; }
            label { (l.t(Msg::Role)) select name="role" {
                @for r in [Role::Steward, Role::Viewer, Role::Administrator] { option value=(r.as_str()) { (r.as_str()) } }
            } }
            label { (l.t(Msg::Password)) input name="password" type="password" required; }
            button { (l.t(Msg::AddAccount)) }
        }
    };
    page::ok(frame(l, Some(&s), l.t(Msg::Accounts), body))
}

async fn account_action(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    body: Bytes,
) -> Response {
    if !s.role.can_manage() {
        return page::forbidden(s.lang, Msg::AdministratorsOnly);
    }
    let f = fields(&body);
    let name = field(&f, "name").unwrap_or_default();
    let done = match field(&f, "action") {
        Some("add") => {
            let role = field(&f, "role").unwrap_or_default();
            let password = field(&f, "password").unwrap_or_default();
            accounts::add(&app.pool, name, role, password).await
        }
        Some("disable") => accounts::disable(&app.pool, name).await,
        _ => return page::not_found(s.lang),
    };
    match done {
        Ok(()) => {
            tracing::info!(administrator = %s.name, account = %name, "console account changed");
            Redirect::to(&format!("{BASE}/accounts")).into_response()
        }
        Err(accounts::AccountError::Database(e)) => page::unavailable(&e),
        Err(e) => page::message(
            StatusCode::BAD_REQUEST,
            s.lang,
            Msg::Accounts,
            &e.to_string(),
        ),
    }
}
