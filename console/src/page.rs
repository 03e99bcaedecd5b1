//! The frame of every page (header, navigation, language switch, sign-out)
//! and the small pieces pages share: error pages, ages, bars, differences.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::accounts::Steward;
use crate::i18n::{Lang, Msg};
use crate::BASE;

/// A whole page: `title`, the steward's navigation (none on sign-in).
pub fn frame(lang: Lang, steward: Option<&Steward>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t(Msg::Console)) }
                link rel="stylesheet" href={(BASE) "/assets/console.css"};
                script src={(BASE) "/assets/htmx.min.js"} defer {}
                script src={(BASE) "/assets/console.js"} defer {}
            }
            // htmx sends the CSRF token with every request it makes.
            body hx-headers=[steward.map(|s| format!(r#"{{"X-CSRF-Token": "{}"}}"#, s.csrf))] {
                header {
                    strong { (lang.t(Msg::Console)) }
                    @if let Some(s) = steward {
                        nav {
                            a href={(BASE) "/queue"} { (lang.t(Msg::Queue)) }
                            a href={(BASE) "/search"} { (lang.t(Msg::Search)) }
                            a href={(BASE) "/overview"} { (lang.t(Msg::Overview)) }
                            @if s.role.can_manage() {
                                a href={(BASE) "/accounts"} { (lang.t(Msg::Accounts)) }
                            }
                        }
                    }
                    span.right {
                        a href={(BASE) "/lang/ru"} { "RU" } " | " a href={(BASE) "/lang/en"} { "EN" }
                        @if let Some(s) = steward {
                            " · " span #who { (s.name) " (" (s.role.as_str()) ")" }
                            form.inline method="post" action={(BASE) "/signout"} {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button #signout { (lang.t(Msg::SignOut)) }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [("content-type", "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

pub fn ok(markup: Markup) -> Response {
    html_response(StatusCode::OK, markup)
}

pub fn message(status: StatusCode, lang: Lang, title: Msg, text: &str) -> Response {
    let body =
        html! { p.problem { (text) } p { a href={(BASE) "/queue"} { (lang.t(Msg::Queue)) } } };
    html_response(status, frame(lang, None, lang.t(title), body))
}

pub fn forbidden(lang: Lang, why: Msg) -> Response {
    message(StatusCode::FORBIDDEN, lang, Msg::Forbidden, lang.t(why))
}

pub fn not_found(lang: Lang) -> Response {
    message(
        StatusCode::NOT_FOUND,
        lang,
        Msg::NotFound,
        lang.t(Msg::NotFound),
    )
}

/// A database failure: logged with its kind, shown without details.
pub fn unavailable(error: &sqlx::Error) -> Response {
    tracing::error!(error = %etl_runtime::database::describe(error), "console: database error");
    let lang = Lang::Ru;
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        Msg::Unavailable,
        lang.t(Msg::Unavailable),
    )
}

/// How long ago, in the largest whole unit.
pub fn age(lang: Lang, at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 3600 => (s / 60, Msg::Minutes),
        s if s < 86_400 => (s / 3600, Msg::Hours),
        s => (s / 86_400, Msg::Days),
    };
    format!("{n} {}", lang.t(unit))
}

/// A horizontal bar for a field's weight: to the right (green) for
/// agreement, to the left (red) for disagreement, scaled to `max`.
pub fn weight_bar(weight: f64, max: f64) -> Markup {
    let pct = if max > 0.0 {
        (weight.abs() / max * 50.0).min(50.0)
    } else {
        0.0
    };
    let (class, left) = if weight >= 0.0 {
        ("bar pos", 50.0)
    } else {
        ("bar neg", 50.0 - pct)
    };
    html! {
        span.track {
            span class=(class) style=(format!("left:{left:.1}%;width:{pct:.1}%")) {}
        }
    }
}

/// `a` with the letters that `b` does not share (outside their longest
/// common subsequence) marked: a typo shows as one or two marked letters.
pub fn marked(a: &str, b: &str) -> Markup {
    let x: Vec<char> = a.chars().collect();
    let y: Vec<char> = b.chars().collect();
    let keep = common(&x, &y);
    html! {
        @for (i, c) in x.iter().enumerate() {
            @if keep[i] { (c) } @else { mark { (c) } }
        }
    }
}

/// Which chars of `x` belong to a longest common subsequence with `y`.
fn common(x: &[char], y: &[char]) -> Vec<bool> {
    let (n, m) = (x.len(), y.len());
    let mut len = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            len[i][j] = if x[i] == y[j] {
                len[i + 1][j + 1] + 1
            } else {
                len[i + 1][j].max(len[i][j + 1])
            };
        }
    }
    let mut keep = vec![false; n];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if x[i] == y[j] {
            keep[i] = true;
            i += 1;
            j += 1;
        } else if len[i + 1][j] >= len[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    keep
}

/// The signed-in account of a request that decides: any account that may
/// not decide (a viewer) gets the "stewards only" page before the handler
/// runs.
pub struct Decider(pub Steward);

impl<S: Send + Sync> FromRequestParts<S> for Decider {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let Some(s) = parts.extensions.get::<Steward>().cloned() else {
            // The session layer puts the account in before every page.
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        if !s.role.can_decide() {
            return Err(forbidden(s.lang, Msg::StewardsOnly));
        }
        Ok(Decider(s))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_typo_marks_the_changed_letter() {
        let m = super::marked("Иванова", "Иваново").into_string();
        assert_eq!(m, "Иванов<mark>а</mark>");
        assert_eq!(super::marked("abc", "abc").into_string(), "abc");
    }
}
