//! A person: the golden view with where each value came from, its records,
//! its history as a timeline with actors; lock / unlock; split a wrong
//! merge (the consequences shown before confirming); undo a decision.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use matcher::operator::{self, OperatorError};
use matcher::reads::{self, History, Resolved};
use maud::{html, Markup};

use crate::i18n::{Lang, Msg};
use crate::page::Decider;
use crate::page::{self, frame};
use crate::records::{self, Record, FIELDS};
use crate::session::{field, fields, Steward};
use crate::{Shared, BASE};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/persons/{id}", get(show))
        .route("/persons/{id}/lock", post(lock))
        .route("/persons/{id}/split/preview", post(split_preview))
        .route("/persons/{id}/split", post(split))
        .route("/decisions/{id}/undo", post(undo))
}

async fn show(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    Path(id): Path<i64>,
) -> Response {
    match reads::resolve(&app.pool, id).await {
        Ok(Resolved::Live(_)) => {}
        Ok(Resolved::Merged { chain }) => {
            let to = chain.last().copied().unwrap_or(id);
            return Redirect::to(&format!("{BASE}/persons/{to}")).into_response();
        }
        Ok(Resolved::Retired { successors, .. }) => return retired(&s, id, &successors),
        Ok(Resolved::Unknown) => return page::not_found(s.lang),
        Err(e) => return page::unavailable(&e),
    }
    match render(&app, &s, id).await {
        Ok(m) => page::ok(m),
        Err(e) => page::unavailable(&e),
    }
}

fn retired(s: &Steward, id: i64, successors: &[i64]) -> Response {
    let l = s.lang;
    let body = html! {
        p #retired { (l.t(Msg::Retired)) }
        ul { @for p in successors { li { a href={(BASE) "/persons/" (p)} { (l.t(Msg::Person)) " " (p) } } } }
    };
    page::ok(frame(
        l,
        Some(s),
        &format!("{} {id}", l.t(Msg::Person)),
        body,
    ))
}

/// The person's records, read and logged as viewed.
async fn viewed_records(
    app: &Shared,
    s: &Steward,
    id: i64,
    page: &str,
) -> sqlx::Result<Vec<Record>> {
    let members = reads::members(&app.pool, id).await?;
    let keys: Vec<(String, String)> = members
        .into_iter()
        .map(|m| (m.source, m.source_id))
        .collect();
    let recs = records::records(&app.pool, &keys).await?;
    let shown = recs.iter().map(Record::key).collect();
    app.log_view(s, page, format!("person {id}"), shown).await?;
    Ok(recs)
}

pub async fn render(app: &Shared, s: &Steward, id: i64) -> sqlx::Result<Markup> {
    let person = match reads::resolve(&app.pool, id).await? {
        Resolved::Live(p) => p,
        _ => return Ok(html! {}),
    };
    let recs = viewed_records(app, s, id, "GET /console/persons/{id}").await?;
    let history = reads::history(&app.pool, id).await?;
    let gold = reads::golden(&app.pool, &[id])
        .await?
        .into_iter()
        .next()
        .map(golden_record);
    let l = s.lang;
    let body = html! {
        p #locked {
            @if person.locked { (l.t(Msg::Locked)) } @else { (l.t(Msg::Unlocked)) }
            @if s.role.can_decide() {
                form.inline method="post" action={(BASE) "/persons/" (id) "/lock"} {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="locked" value=(if person.locked { "false" } else { "true" });
                    button #lock { (l.t(if person.locked { Msg::Unlock } else { Msg::Lock })) }
                }
            }
        }
        h2 { (l.t(Msg::Golden)) }
        (golden(l, gold.as_ref(), &recs))
        h2 { (l.t(Msg::Records)) }
        (records_form(l, s, id, &recs))
        h2 { (l.t(Msg::History)) }
        (timeline(l, s, &history))
    };
    Ok(frame(
        l,
        Some(s),
        &format!("{} {id}", l.t(Msg::Person)),
        body,
    ))
}

/// Each field's golden value (`person_golden`: the most trusted record's),
/// the records it came from (those holding the same value), and the other
/// values the person's records hold.
fn golden(l: Lang, g: Option<&Record>, recs: &[Record]) -> Markup {
    let rows = FIELDS.iter().filter_map(|f| {
        let value = g.and_then(|g| g.value(f, l));
        let mut from = Vec::new();
        let mut others: Vec<String> = Vec::new();
        for r in recs.iter().filter(|r| r.deleted_at.is_none()) {
            match r.value(f, l) {
                Some(v) if Some(&v) == value.as_ref() => from.push(r.key()),
                Some(v) if !others.contains(&v) => others.push(v),
                _ => {}
            }
        }
        (value.is_some() || !others.is_empty()).then_some((*f, value, from, others))
    });
    html! {
        table #golden {
            tr { th { (l.t(Msg::Field)) } th { (l.t(Msg::Value)) } th { (l.t(Msg::From)) } th { (l.t(Msg::OtherValues)) } }
            @for (f, value, from, others) in rows {
                tr data-field=(f) {
                    th { (l.field(f)) }
                    td.golden { (value.unwrap_or_default()) }
                    td { (from.join(", ")) }
                    td.variant { (others.join("; ")) }
                }
            }
        }
    }
}

/// The golden view as a record, so that it shows as the records do.
fn golden_record(g: reads::Golden) -> Record {
    let json = |v: Option<sqlx::types::Json<serde_json::Value>>| v.map(|j| j.0).unwrap_or_default();
    Record {
        source: "golden".into(),
        source_id: g.person_id.to_string(),
        last_name: g.last_name,
        first_name: g.first_name,
        middle_name: g.middle_name,
        birth_date: g.birth_date,
        sex: g.sex,
        snils: g.snils,
        oms_policy: g.oms_policy,
        documents: json(g.documents),
        phones: json(g.phones),
        emails: json(g.emails),
        updated_at: Utc::now(),
        deleted_at: None,
    }
}

fn records_form(l: Lang, s: &Steward, id: i64, recs: &[Record]) -> Markup {
    html! {
        form #split method="post" action={(BASE) "/persons/" (id) "/split/preview"} {
            input type="hidden" name="csrf" value=(s.csrf);
            table #records {
                tr { th {} th { (l.t(Msg::Record)) } th { (l.t(Msg::Name)) } th { (l.field("birth_date")) } th { (l.t(Msg::Updated)) } }
                @for r in recs {
                    tr {
                        td { @if s.role.can_decide() { input type="checkbox" name="leave" value=(r.key()); } }
                        td { (r.key()) }
                        td { (r.value("last_name", l).unwrap_or_default()) " " (r.value("first_name", l).unwrap_or_default()) " " (r.value("middle_name", l).unwrap_or_default()) }
                        td { (r.value("birth_date", l).unwrap_or_default()) }
                        td { (r.updated_at.format("%Y-%m-%d")) }
                    }
                }
            }
            @if s.role.can_decide() && recs.len() > 1 {
                button #split-preview { (l.t(Msg::SplitChosen)) }
            }
        }
    }
}

/// One line of the timeline.
struct Line {
    at: DateTime<Utc>,
    actor: String,
    what: String,
    undo: Option<i64>,
}

fn timeline(l: Lang, s: &Steward, h: &History) -> Markup {
    let mut lines: Vec<Line> = Vec::new();
    for p in &h.placements {
        let from = p
            .from_person_id
            .map(|f| format!(" ← {} {f}", l.t(Msg::Person)))
            .unwrap_or_default();
        lines.push(Line {
            at: p.joined_at,
            actor: p.actor.clone().unwrap_or_else(|| "matcher".into()),
            what: format!("{} {}:{}{from}", l.t(Msg::Joined), p.source, p.source_id),
            undo: None,
        });
        if let Some(left) = p.left_at {
            lines.push(Line {
                at: left,
                actor: String::new(),
                what: format!("{} {}:{}", l.t(Msg::Left), p.source, p.source_id),
                undo: None,
            });
        }
    }
    for e in &h.events {
        let rec = e
            .source
            .as_ref()
            .map(|src| format!(" {src}:{}", e.source_id.clone().unwrap_or_default()))
            .unwrap_or_default();
        lines.push(Line {
            at: e.at,
            actor: e.actor.clone(),
            what: format!("{}{rec}", e.action),
            undo: None,
        });
    }
    for d in &h.decisions {
        let revoked = if d.revoked_at.is_some() {
            format!(" ({})", l.t(Msg::Revoked))
        } else {
            String::new()
        };
        lines.push(Line {
            at: d.created_at,
            actor: d.actor.clone(),
            what: format!(
                "{} #{}: {} {}:{} ↔ {}:{}{revoked}",
                l.t(Msg::Decision),
                d.id,
                d.kind,
                d.a_source,
                d.a_source_id,
                d.b_source,
                d.b_source_id
            ),
            undo: d.revoked_at.is_none().then_some(d.id),
        });
    }
    lines.sort_by_key(|x| std::cmp::Reverse(x.at));
    html! {
        ol.timeline #timeline {
            @for x in &lines {
                li {
                    time { (x.at.format("%Y-%m-%d %H:%M:%S")) } " " strong.actor { (x.actor) } " " (x.what)
                    @if let (Some(d), true) = (x.undo, s.role.can_decide()) {
                        form.inline method="post" action={(BASE) "/decisions/" (d) "/undo"} {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button.undo data-decision=(d) { (l.t(Msg::Undo)) }
                        }
                    }
                }
            }
        }
    }
}

async fn lock(
    State(app): State<Shared>,
    Decider(s): Decider,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let locked = field(&fields(&body), "locked") == Some("true");
    match operator::set_lock(&app.engine, &app.pool, id, locked, &s.name).await {
        Ok(()) => Redirect::to(&format!("{BASE}/persons/{id}")).into_response(),
        Err(e) => operator_failed(s.lang, e),
    }
}

fn operator_failed(l: Lang, e: OperatorError) -> Response {
    match e {
        OperatorError::Database(e) => page::unavailable(&e),
        OperatorError::UnknownPerson(_) => page::not_found(l),
        other => page::message(StatusCode::BAD_REQUEST, l, Msg::Refused, &other.to_string()),
    }
}

fn leaving(f: &[(String, String)]) -> Vec<(String, String)> {
    f.iter()
        .filter(|(k, _)| k == "leave")
        .filter_map(|(_, v)| operator::parse_rec(v))
        .collect()
}

/// What a split would do, before it is done: which records leave, which
/// stay, how many keep-apart decisions are recorded.
async fn split_preview(
    State(app): State<Shared>,
    Decider(s): Decider,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let l = s.lang;
    let leave = leaving(&fields(&body));
    let recs = match viewed_records(&app, &s, id, "POST /console/persons/{id}/split/preview").await
    {
        Ok(r) => r,
        Err(e) => return page::unavailable(&e),
    };
    let key = |r: &Record| (r.source.clone(), r.source_id.clone());
    let (go, stay): (Vec<&Record>, Vec<&Record>) =
        recs.iter().partition(|r| leave.contains(&key(r)));
    if go.is_empty() || stay.is_empty() || go.len() != leave.len() {
        return page::message(
            StatusCode::BAD_REQUEST,
            l,
            Msg::Refused,
            l.t(Msg::SplitNeedsBoth),
        );
    }
    let list = |rs: &[&Record]| html! { ul { @for r in rs { li { (r.key()) " — " (r.value("last_name", l).unwrap_or_default()) " " (r.value("first_name", l).unwrap_or_default()) " " (r.value("birth_date", l).unwrap_or_default()) } } } };
    let body = html! {
        h2 { (l.t(Msg::Leaving)) } (list(&go))
        h2 { (l.t(Msg::Staying)) } (list(&stay))
        p #consequence { (l.t(Msg::SplitConsequence)) " " strong { (go.len() * stay.len()) } }
        form method="post" action={(BASE) "/persons/" (id) "/split"} {
            input type="hidden" name="csrf" value=(s.csrf);
            @for r in &go { input type="hidden" name="leave" value=(r.key()); }
            button #split-confirm { (l.t(Msg::ConfirmSplit)) }
            " " a href={(BASE) "/persons/" (id)} { (l.t(Msg::Cancel)) }
        }
    };
    page::ok(frame(l, Some(&s), l.t(Msg::SplitChosen), body))
}

async fn split(
    State(app): State<Shared>,
    Decider(s): Decider,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let leave = leaving(&fields(&body));
    match operator::split(&app.engine, &app.pool, id, &leave, &s.name).await {
        Ok((decisions, _)) => {
            tracing::info!(steward = %s.name, person = id, decisions = decisions.len(), "person split in the console");
            Redirect::to(&format!("{BASE}/persons/{id}")).into_response()
        }
        Err(e) => operator_failed(s.lang, e),
    }
}

/// Undoes a decision: revokes it (kept, with `revoked_at`) and lets the
/// rules decide the pair again; back to the person of its first record.
async fn undo(State(app): State<Shared>, Decider(s): Decider, Path(id): Path<i64>) -> Response {
    let d = match records::decision(&app.pool, id).await {
        Ok(Some(d)) if d.revoked_at.is_none() => d,
        Ok(_) => return page::not_found(s.lang),
        Err(e) => return page::unavailable(&e),
    };
    let a = (d.a_source.clone(), d.a_source_id.clone());
    let b = (d.b_source.clone(), d.b_source_id.clone());
    if let Err(e) = operator::revoke(&app.engine, &app.pool, &a, &b, &s.name).await {
        return operator_failed(s.lang, e);
    }
    tracing::info!(steward = %s.name, decision = id, kind = %d.kind, "decision undone in the console");
    match reads::person_of_record(&app.pool, &a.0, &a.1).await {
        Ok(Some((p, _))) => Redirect::to(&format!("{BASE}/persons/{p}")).into_response(),
        _ => Redirect::to(&format!("{BASE}/queue")).into_response(),
    }
}
