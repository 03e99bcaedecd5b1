//! Sign-in, sign-out, the language switch and the administrators' page of
//! accounts.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;

use crate::accounts::{self, Role};
use crate::i18n::{Lang, Msg};
use crate::page::{self, frame};
use crate::session::{self, field, fields, Steward};
use crate::{Shared, BASE};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|| async { Redirect::to(&format!("{BASE}/queue")) }),
        )
        .route("/signin", get(form).post(sign_in))
        .route("/lang/{code}", get(language))
}

pub fn signed_in_routes() -> Router<Shared> {
    Router::new()
        .route("/signout", post(sign_out))
        .route("/accounts", get(account_list).post(account_action))
}

fn sign_in_page(lang: Lang, failed: bool) -> maud::Markup {
    let body = html! {
        @if failed { p.problem #signin-failed { (lang.t(Msg::SignInFailed)) } }
        form.signin method="post" action={(BASE) "/signin"} {
            label { (lang.t(Msg::Name)) input #name name="name" autocomplete="username" required; }
            label { (lang.t(Msg::Password)) input #password name="password" type="password" autocomplete="current-password" required; }
            button #signin type="submit" { (lang.t(Msg::SignIn)) }
        }
    };
    frame(lang, None, lang.t(Msg::SignIn), body)
}

async fn form(State(app): State<Shared>, headers: HeaderMap) -> Response {
    page::ok(sign_in_page(session::lang_of(&headers, app.lang), false))
}

/// Checks the password (argon2, off the async threads) and starts a
/// session. A failure says nothing about which half was wrong.
async fn sign_in(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let lang = session::lang_of(&headers, app.lang);
    let f = fields(&body);
    let name = field(&f, "name").unwrap_or_default().to_string();
    let password = field(&f, "password").unwrap_or_default().to_string();
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
        tracing::info!("console sign-in refused");
        return page::html_response(StatusCode::UNAUTHORIZED, sign_in_page(lang, true));
    };
    let lifetime = app.settings.session_lifetime;
    let token = match session::create(&app.pool, account.id, lifetime).await {
        Ok(t) => t,
        Err(e) => return page::unavailable(&e),
    };
    tracing::info!(steward = %account.name, "console sign-in");
    let cookie = session::set_cookie(&token, lifetime.as_secs(), app.https);
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{BASE}/queue")),
    )
        .into_response()
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
