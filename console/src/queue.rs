//! The review queue: open items with probability, reason and age; filters,
//! sorting; link / keep apart in place (htmx) and keyboard triage
//! (assets/console.js: j/k next/previous, l link, a keep apart, s skip,
//! Enter open).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use matcher::operator::{self, OperatorError};
use maud::{html, Markup};

use crate::i18n::{Lang, Msg};
use crate::page::Decider;
use crate::page::{self, age, frame};
use crate::records::{self, QueueFilter, QueueRow};
use crate::session::{field, fields, Steward};
use crate::{Shared, BASE};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/queue", get(queue))
        .route("/items/{id}/resolve", post(resolve))
}

async fn queue(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    Query(filter): Query<QueueFilter>,
) -> Response {
    let filter = QueueFilter {
        reason: filter.reason.filter(|r| !r.is_empty()),
        pair: filter.pair.filter(|r| !r.is_empty()),
        ..filter
    };
    let listed = records::queue(&app.pool, &filter, app.settings.page_size).await;
    let choices = records::queue_choices(&app.pool).await;
    let ((rows, total), (reasons, pairs)) = match (listed, choices) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return page::unavailable(&e),
    };
    let l = s.lang;
    let body = html! {
        (filters(l, &filter, &reasons, &pairs))
        p #total { (l.t(Msg::OpenItems)) ": " (total) }
        p.keys { (l.t(Msg::KeysHelp)) }
        table #queue {
            tr {
                th { (l.t(Msg::Probability)) } th { (l.t(Msg::Reason)) } th { (l.t(Msg::Records)) }
                th { (l.t(Msg::Age)) } th {}
            }
            @for (n, row) in rows.iter().enumerate() { (queue_row(l, &s, row, n == 0)) }
        }
    };
    page::ok(frame(l, Some(&s), l.t(Msg::Queue), body))
}

fn filters(l: Lang, f: &QueueFilter, reasons: &[String], pairs: &[String]) -> Markup {
    let selected = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    html! {
        form.filters method="get" action={(BASE) "/queue"} {
            label { (l.t(Msg::Reason)) select name="reason" {
                option value="" { "—" }
                @for r in reasons { option value=(r) selected[selected(&f.reason, r)] { (l.reason(r)) } }
            } }
            label { (l.t(Msg::SourcePair)) select name="pair" {
                option value="" { "—" }
                @for p in pairs { option value=(p) selected[selected(&f.pair, p)] { (p) } }
            } }
            label { (l.t(Msg::Probability)) select name="band" {
                option value="" { "—" }
                @for (v, m) in [("high", Msg::BandHigh), ("mid", Msg::BandMid), ("low", Msg::BandLow)] {
                    option value=(v) selected[selected(&f.band, v)] { (l.t(m)) }
                }
            } }
            label { (l.t(Msg::Sort)) select name="sort" {
                @for (v, m) in [("-score", Msg::SortProbDesc), ("score", Msg::SortProbAsc), ("age", Msg::SortOldest), ("-age", Msg::SortNewest)] {
                    option value=(v) selected[selected(&f.sort, v)] { (l.t(m)) }
                }
            } }
            button { (l.t(Msg::Apply)) }
        }
    }
}

fn queue_row(l: Lang, s: &Steward, r: &QueueRow, current: bool) -> Markup {
    let class = if current { "item current" } else { "item" };
    html! {
        tr class=(class) id={"item-" (r.id)} data-id=(r.id) data-href={(BASE) "/items/" (r.id)} {
            td.num { (format!("{:.3}", r.score)) }
            td { (l.reason(&r.reason)) }
            td { a href={(BASE) "/items/" (r.id)} { (r.a_source) ":" (r.a_source_id) " ↔ " (r.b_source) ":" (r.b_source_id) } }
            td { (age(l, r.created_at)) }
            td.actions {
                @if s.role.can_decide() {
                    @for (kind, m) in [("link", Msg::Link), ("keep_apart", Msg::KeepApart)] {
                        form class={"inline " (kind)} method="post" action={(BASE) "/items/" (r.id) "/resolve"}
                            hx-post={(BASE) "/items/" (r.id) "/resolve"} hx-target="closest tr" hx-swap="outerHTML" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            input type="hidden" name="resolution" value=(kind);
                            button { (l.t(m)) }
                        }
                    }
                }
            }
        }
    }
}

/// Resolves an item as `link` or `keep_apart` (steward's name as actor).
/// From the queue (htmx): the row, marked done; from the item page: the
/// next open item.
async fn resolve(
    State(app): State<Shared>,
    Decider(s): Decider,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let resolution = match field(&f, "resolution") {
        Some(r @ ("link" | "keep_apart")) => r.to_string(),
        _ => return page::not_found(s.lang),
    };
    let l = s.lang;
    match operator::resolve(&app.engine, &app.pool, id, &resolution, &s.name).await {
        Ok(_) => {}
        Err(OperatorError::NotOpen(_)) => {
            return page::message(StatusCode::CONFLICT, l, Msg::NotOpen, l.t(Msg::NotOpen))
        }
        Err(OperatorError::Database(e)) => return page::unavailable(&e),
        Err(e) => return page::message(StatusCode::BAD_REQUEST, l, Msg::NotFound, &e.to_string()),
    }
    tracing::info!(steward = %s.name, item = id, %resolution, "review item resolved in the console");
    if headers.contains_key("hx-request") {
        let done = html! {
            tr.item.done id={"item-" (id)} data-id=(id) {
                td colspan="5" { "#" (id) ": " (l.t(if resolution == "link" { Msg::Linked } else { Msg::KeptApart })) }
            }
        };
        return page::ok(done);
    }
    let next = match records::item(&app.pool, id).await {
        Ok(Some(item)) => records::next_open(&app.pool, &item).await.ok().flatten(),
        _ => None,
    };
    match next {
        Some(n) => Redirect::to(&format!("{BASE}/items/{n}")).into_response(),
        None => Redirect::to(&format!("{BASE}/queue")).into_response(),
    }
}
