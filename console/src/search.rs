//! Search: by source and source id (straight to the person); by SNILS, OMS
//! policy or identity document (normalized as on load); by name and birth
//! date, scored as the identity service's `$match` scores (the matcher's
//! blocking keys and the model in use, `matcher::candidates`). Results name
//! persons and records by identifier only; every search by personal data is
//! written to the access log before its results are shown.
//!
//! The scoring lives in the matcher rather than behind a callback the
//! identity service would hand the console: it only needs the matcher's
//! features, keys and model, so both services call the one function
//! directly, and the console searches the same way wherever it is mounted
//! (tests, the benchmark).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::NaiveDate;
use matcher::candidates::Candidate;
use matcher::features::{Features, SourceRow};
use matcher::reads::Holder;
use maud::{html, Markup};
use proto::{normalize, DocumentType, PatientRecord};

use crate::i18n::{Lang, Msg};
use crate::page::{self, frame};
use crate::session::Steward;
use crate::{Shared, BASE};

/// Most records (or candidate persons) a search lists.
const MAX_RESULTS: i64 = 50;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    pub source: String,
    pub source_id: String,
    pub snils: String,
    pub oms: String,
    /// A document type's code (`passport`, …).
    pub doc_type: String,
    pub series: String,
    pub number: String,
    pub last_name: String,
    pub first_name: String,
    pub middle_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// What a search found.
enum Found {
    /// The live records holding an identifier, with their persons.
    Holders(Vec<Holder>),
    /// Candidate persons by name and birth date, best first.
    Candidates(Vec<Candidate>),
}

impl Found {
    /// The records shown, as the access log names them.
    fn records(&self) -> Vec<String> {
        match self {
            Found::Holders(h) => h
                .iter()
                .map(|h| format!("{}:{}", h.source, h.source_id))
                .collect(),
            Found::Candidates(c) => c
                .iter()
                .map(|c| format!("{}:{}", c.source, c.source_id))
                .collect(),
        }
    }
}

pub fn routes() -> Router<Shared> {
    Router::new().route("/search", get(search))
}

async fn search(
    State(app): State<Shared>,
    Extension(s): Extension<Steward>,
    Query(q): Query<SearchQuery>,
) -> Response {
    if !q.source.is_empty() && !q.source_id.is_empty() {
        return match matcher::reads::person_of_record(&app.pool, &q.source, q.source_id.trim())
            .await
        {
            Ok(Some((p, _))) => Redirect::to(&format!("{BASE}/persons/{p}")).into_response(),
            Ok(None) => results(&s, &q, Some(Found::Holders(Vec::new()))),
            Err(e) => page::unavailable(&e),
        };
    }
    let found = match find(&app, &s, &q).await {
        Ok(f) => f,
        Err(e) => return page::unavailable(&e),
    };
    results(&s, &q, found)
}

/// The kind of identifier the query gives and its blocking key as the
/// matcher spells it (`s:…`, `o:…`, `d:…`), normalized as the loader
/// normalizes; no key when it is not valid (it can find nothing), `None`
/// when no identifier was given.
fn identifier_key(q: &SearchQuery) -> Option<(&'static str, Option<String>)> {
    let mut record = PatientRecord::default();
    let kind = if !q.snils.trim().is_empty() {
        record.snils = normalize::snils(&q.snils).filter(|c| c.is_valid());
        "snils"
    } else if !q.oms.trim().is_empty() {
        record.oms_policy = normalize::oms_policy(&q.oms).filter(|c| c.is_valid());
        "oms"
    } else if !q.number.trim().is_empty() {
        let doc = DocumentType::from_code(q.doc_type.trim())
            .filter(|t| *t != DocumentType::UNKNOWN)
            .and_then(|t| normalize::document(t, None, Some(&q.series), Some(&q.number)));
        record.documents.extend(doc.filter(|d| d.problem.is_none()));
        "document"
    } else {
        return None;
    };
    // The one key the record holds: the matcher's own spelling of it.
    let key = Features::of(&SourceRow::of_record("", "", &record))
        .keys()
        .into_iter()
        .next();
    Some((kind, key))
}

/// The record a search by name and birth date stands for, names normalized
/// as on load; `None` without a last name or a valid date.
fn name_query(q: &SearchQuery) -> Option<PatientRecord> {
    let birth_date = NaiveDate::parse_from_str(q.birth_date.trim(), "%Y-%m-%d").ok()?;
    let last_name = normalize::name(&q.last_name)?;
    Some(PatientRecord {
        last_name: Some(last_name),
        first_name: normalize::name(&q.first_name),
        middle_name: normalize::name(&q.middle_name),
        birth_date: Some(birth_date),
        ..Default::default()
    })
}

/// The records found by an identifier, or the persons by name and birth
/// date; `None` when nothing was asked. The access-log line (the kind of
/// search and the records shown, never the values typed) is written first.
async fn find(app: &Shared, s: &Steward, q: &SearchQuery) -> sqlx::Result<Option<Found>> {
    let (kind, found) = if let Some((kind, key)) = identifier_key(q) {
        let holders = match key {
            Some(key) => matcher::reads::holders(&app.pool, &key, MAX_RESULTS).await?,
            None => Vec::new(),
        };
        (kind, Found::Holders(holders))
    } else if let Some(record) = name_query(q) {
        let (candidates, _model) = matcher::candidates::candidates(
            &app.pool,
            &app.scorer,
            &record,
            app.max_birth_date_block,
            MAX_RESULTS as usize,
        )
        .await?;
        ("name and birth date", Found::Candidates(candidates))
    } else {
        return Ok(None);
    };
    app.log_view(
        s,
        "GET /console/search",
        format!("search by {kind}"),
        found.records(),
    )
    .await?;
    Ok(Some(found))
}

fn form(l: Lang, q: &SearchQuery) -> Markup {
    let types = DocumentType::ALL
        .iter()
        .filter(|(t, _, _)| *t != DocumentType::UNKNOWN);
    html! {
        form.search method="get" action={(BASE) "/search"} {
            fieldset { legend { (l.t(Msg::ByRecord)) }
                input name="source" value=(q.source) placeholder=(l.t(Msg::Source));
                input name="source_id" value=(q.source_id) placeholder=(l.t(Msg::SourceId)); }
            fieldset { legend { (l.t(Msg::ByIdentifier)) }
                input name="snils" placeholder=(l.field("snils"));
                input name="oms" placeholder=(l.field("oms")); }
            fieldset { legend { (l.t(Msg::ByDocument)) }
                select name="doc_type" {
                    @for (t, code, _) in types { option value=(code) selected[*code == q.doc_type] { (l.document_type(t.0)) } }
                }
                input name="series" placeholder=(l.t(Msg::Series));
                input name="number" placeholder=(l.t(Msg::Number)); }
            fieldset { legend { (l.t(Msg::ByName)) }
                input name="last_name" placeholder=(l.field("last_name"));
                input name="first_name" placeholder=(l.field("first_name"));
                input name="middle_name" placeholder=(l.field("middle_name"));
                input name="birth_date" type="date"; }
            button { (l.t(Msg::Search)) }
        }
    }
}

fn person_link(l: Lang, person: Option<i64>) -> Markup {
    html! {
        @if let Some(p) = person { a href={(BASE) "/persons/" (p)} { (l.t(Msg::Person)) " " (p) } } @else { "—" }
    }
}

fn results(s: &Steward, q: &SearchQuery, found: Option<Found>) -> Response {
    let l = s.lang;
    let empty = match &found {
        Some(Found::Holders(h)) => h.is_empty(),
        Some(Found::Candidates(c)) => c.is_empty(),
        None => false,
    };
    let body = html! {
        (form(l, q))
        @if empty { p #nothing { (l.t(Msg::NothingFound)) } }
        @match &found {
            Some(Found::Holders(found)) => ul #found { @for h in found {
                li { (h.source) ":" (h.source_id) " → " (person_link(l, h.person_id)) }
            } },
            Some(Found::Candidates(found)) => table #candidates {
                tr { th { (l.t(Msg::Person)) } th { (l.t(Msg::Probability)) } th { (l.t(Msg::Grade)) } th { (l.t(Msg::Record)) } }
                @for c in found {
                    tr.candidate data-person=(c.person_id) {
                        td { (person_link(l, Some(c.person_id))) }
                        td.num { (format!("{:.3}", c.probability)) }
                        td { (l.term(c.grade)) }
                        td { (c.source) ":" (c.source_id) }
                    }
                }
            },
            None => {},
        }
    };
    page::ok(frame(l, Some(s), l.t(Msg::Search), body))
}
