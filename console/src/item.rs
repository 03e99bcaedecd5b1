//! A review item: the two records side by side, each field's agreement
//! level and weight (a bar), the differing letters marked, the other records
//! of each person, and the actions (link, keep apart, skip, note).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde_json::Value;

use crate::i18n::{Lang, Msg};
use crate::page::Decider;
use crate::page::{self, frame, marked, weight_bar};
use crate::records::{self, Item, Record, FIELDS};
use crate::session::{field, fields, Steward};
use crate::{Shared, BASE};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/items/{id}", get(show))
        .route("/items/{id}/next", get(skip))
        .route("/items/{id}/note", post(note))
}

/// The persons of both records and their other members.
struct Side {
    record: Option<Record>,
    person: Option<i64>,
    others: Vec<String>,
}

async fn side(app: &Shared, source: &str, source_id: &str) -> sqlx::Result<Side> {
    let key = [(source.to_string(), source_id.to_string())];
    let record = records::records(&app.pool, &key).await?.into_iter().next();
    let person = matcher::reads::person_of_record(&app.pool, source, source_id)
        .await?
        .map(|(p, _)| p);
    let others = match person {
        Some(p) => matcher::reads::members(&app.pool, p)
            .await?
            .into_iter()
            .map(|m| format!("{}:{}", m.source, m.source_id))
            .filter(|k| *k != format!("{source}:{source_id}"))
            .collect(),
        None => Vec::new(),
    };
    Ok(Side {
        record,
        person,
        others,
    })
}

async fn show(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    Path(id): Path<i64>,
) -> Response {
    match render(&app, &s, id).await {
        Ok(Some(markup)) => page::ok(markup),
        Ok(None) => page::not_found(s.lang),
        Err(e) => page::unavailable(&e),
    }
}

/// The page; the view is in the access log before it is rendered.
pub async fn render(app: &Shared, s: &Steward, id: i64) -> sqlx::Result<Option<Markup>> {
    let Some(item) = records::item(&app.pool, id).await? else {
        return Ok(None);
    };
    let a = side(app, &item.a_source, &item.a_source_id).await?;
    let b = side(app, &item.b_source, &item.b_source_id).await?;
    let notes = records::notes(&app.pool, id).await?;
    let shown = [&a, &b]
        .iter()
        .filter_map(|x| x.record.as_ref().map(Record::key))
        .collect();
    app.log_view(
        s,
        "GET /console/items/{id}",
        format!("review item {id}"),
        shown,
    )
    .await?;
    let l = s.lang;
    let body = html! {
        p.summary {
            (l.t(Msg::Probability)) ": " strong #probability { (format!("{:.3}", item.score)) }
            " · " (l.t(Msg::Reason)) ": " (l.reason(&item.reason))
            " · " (l.t(Msg::Status)) ": " span #status { (l.term(&item.status)) }
            @if let (Some(r), Some(by)) = (&item.resolution, &item.resolved_by) { " (" (l.t(if r == "link" { Msg::Linked } else { Msg::KeptApart })) ", " (by) ")" }
        }
        (comparison(l, &item, &a, &b))
        (actions(l, s, &item))
        h2 { (l.t(Msg::Notes)) }
        ul { @for n in &notes { li { (n.created_at.format("%Y-%m-%d %H:%M")) " " strong { (n.author) } ": " (n.note) } } }
    };
    let title = format!("{} #{id}", l.t(Msg::Item));
    Ok(Some(frame(l, Some(s), &title, body)))
}

fn comparison(l: Lang, item: &Item, a: &Side, b: &Side) -> Markup {
    let empty = Value::Null;
    let fields_ev = item.evidence.get("fields").unwrap_or(&empty);
    let max = FIELDS
        .iter()
        .filter_map(|f| weight_of(fields_ev, f))
        .fold(0.0f64, |m, w| m.max(w.abs()));
    html! {
        table.compare #compare {
            tr {
                th { (l.t(Msg::Field)) }
                th { (item.a_source) ":" (item.a_source_id) " " (person_link(l, a.person)) }
                th { (item.b_source) ":" (item.b_source_id) " " (person_link(l, b.person)) }
                th { (l.t(Msg::Agreement)) } th { (l.t(Msg::Weight)) }
            }
            @for f in FIELDS {
                @let va = a.record.as_ref().and_then(|r| r.value(f, l)).unwrap_or_default();
                @let vb = b.record.as_ref().and_then(|r| r.value(f, l)).unwrap_or_default();
                @let ev = evidence_of(fields_ev, f);
                tr class=(if va != vb { "differs" } else { "same" }) data-field=(f) {
                    th { (l.field(f)) }
                    td { (marked(&va, &vb)) }
                    td { (marked(&vb, &va)) }
                    td.level { @if let Some((level, _)) = &ev { (l.term(level)) } }
                    td {
                        @if let Some((_, w)) = ev { (weight_bar(w, max)) " " span.num { (format!("{w:+.2}")) } }
                    }
                }
            }
        }
        table.others {
            tr { th { (l.t(Msg::OtherRecords)) } td { (a.others.join(", ")) } td { (b.others.join(", ")) } }
        }
    }
}

fn person_link(l: Lang, p: Option<i64>) -> Markup {
    html! { @if let Some(p) = p { a href={(BASE) "/persons/" (p)} { "(" (l.t(Msg::Person)) " " (p) ")" } } }
}

/// The model's evidence names passport and other documents apart; the
/// console shows them as one `documents` row with the passport's level.
fn evidence_of(fields: &Value, name: &str) -> Option<(String, f64)> {
    let key = match name {
        "documents" => "passport",
        other => other,
    };
    let e = fields.get(key)?;
    Some((
        e.get("level")?.as_str()?.to_string(),
        e.get("weight")?.as_f64()?,
    ))
}

fn weight_of(fields: &Value, name: &str) -> Option<f64> {
    evidence_of(fields, name).map(|(_, w)| w)
}

fn actions(l: Lang, s: &Steward, item: &Item) -> Markup {
    let base = format!("{BASE}/items/{}", item.id);
    html! {
        div.actions #actions {
            @if s.role.can_decide() && item.status == "open" {
                @for (kind, m, key) in [("link", Msg::Link, "l"), ("keep_apart", Msg::KeepApart, "a")] {
                    form class={"inline " (kind)} method="post" action={(base) "/resolve"} {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="resolution" value=(kind);
                        button data-key=(key) { (l.t(m)) " [" (key) "]" }
                    }
                }
            }
            a.button.skip href={(base) "/next"} data-key="s" { (l.t(Msg::Skip)) " [s]" }
            @if s.role.can_decide() {
                form.note method="post" action={(base) "/note"} {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input name="note" maxlength="2000" placeholder=(l.t(Msg::Note));
                    button { (l.t(Msg::AddNote)) }
                }
            }
        }
    }
}

/// Skip: the next open item without deciding this one.
async fn skip(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    Path(id): Path<i64>,
) -> Response {
    let item = match records::item(&app.pool, id).await {
        Ok(Some(i)) => i,
        Ok(None) => return page::not_found(s.lang),
        Err(e) => return page::unavailable(&e),
    };
    match records::next_open(&app.pool, &item).await {
        Ok(Some(n)) => Redirect::to(&format!("{BASE}/items/{n}")).into_response(),
        Ok(None) => Redirect::to(&format!("{BASE}/queue")).into_response(),
        Err(e) => page::unavailable(&e),
    }
}

async fn note(
    State(app): State<Shared>,
    Decider(s): Decider,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let text = field(&f, "note").unwrap_or_default().trim();
    if !text.is_empty() {
        let text: String = text.chars().take(2000).collect();
        if let Err(e) = records::add_note(&app.pool, id, &s.name, &text).await {
            return page::unavailable(&e);
        }
    }
    Redirect::to(&format!("{BASE}/items/{id}")).into_response()
}
