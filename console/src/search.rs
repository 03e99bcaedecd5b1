//! Search: by source and source id, by SNILS or OMS policy (normalized as
//! on load), by last name and birth date. Results name persons and records
//! by identifier only; a search by personal data is written to the access
//! log.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::NaiveDate;
use matcher::reads::Holder;
use maud::html;
use proto::normalize;

use crate::i18n::Msg;
use crate::page::{self, frame};
use crate::session::Steward;
use crate::{Shared, BASE};

/// Most records a search lists.
const MAX_RESULTS: i64 = 50;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    pub source: String,
    pub source_id: String,
    pub snils: String,
    pub oms: String,
    pub last_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
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
            Ok(None) => results(&s, &q, Some(Vec::new())),
            Err(e) => page::unavailable(&e),
        };
    }
    let found = match find(&app, &s, &q).await {
        Ok(f) => f,
        Err(e) => return page::unavailable(&e),
    };
    results(&s, &q, found)
}

/// The records found by an identifier or by name and birth date; `None`
/// when nothing was asked.
async fn find(app: &Shared, s: &Steward, q: &SearchQuery) -> sqlx::Result<Option<Vec<Holder>>> {
    let key = if !q.snils.trim().is_empty() {
        Some(normalize::snils(&q.snils).map(|c| format!("s:{}", c.value)))
    } else if !q.oms.trim().is_empty() {
        Some(normalize::oms_policy(&q.oms).map(|c| format!("o:{}", c.value)))
    } else {
        None
    };
    let found = match key {
        Some(Some(key)) => matcher::reads::holders(&app.pool, &key, MAX_RESULTS).await?,
        Some(None) => Vec::new(),
        None => {
            let date = NaiveDate::parse_from_str(q.birth_date.trim(), "%Y-%m-%d").ok();
            let (Some(date), false) = (date, q.last_name.trim().is_empty()) else {
                return Ok(None);
            };
            by_name(app, q.last_name.trim(), date).await?
        }
    };
    let shown = found
        .iter()
        .map(|h| format!("{}:{}", h.source, h.source_id))
        .collect();
    app.log_view(
        s,
        "GET /console/search",
        "search by personal data".into(),
        shown,
    )
    .await?;
    Ok(Some(found))
}

async fn by_name(app: &Shared, last_name: &str, date: NaiveDate) -> sqlx::Result<Vec<Holder>> {
    sqlx::query_as(
        "SELECT r.source, r.source_id, m.person_id FROM source_records r
         LEFT JOIN person_memberships m ON m.source = r.source COLLATE \"C\"
              AND m.source_id = r.source_id COLLATE \"C\" AND m.valid_to IS NULL
         WHERE r.birth_date = $2 AND lower(r.last_name) = lower($1) AND r.deleted_at IS NULL
         ORDER BY r.source, r.source_id LIMIT $3",
    )
    .bind(last_name)
    .bind(date)
    .bind(MAX_RESULTS)
    .fetch_all(&app.pool)
    .await
}

fn results(s: &Steward, q: &SearchQuery, found: Option<Vec<Holder>>) -> Response {
    let l = s.lang;
    let body = html! {
        form.search method="get" action={(BASE) "/search"} {
            fieldset { legend { (l.t(Msg::ByRecord)) }
                input name="source" value=(q.source) placeholder=(l.t(Msg::Source));
                input name="source_id" value=(q.source_id) placeholder=(l.t(Msg::SourceId)); }
            fieldset { legend { (l.t(Msg::ByIdentifier)) }
                input name="snils" placeholder=(l.field("snils"));
                input name="oms" placeholder=(l.field("oms")); }
            fieldset { legend { (l.t(Msg::ByName)) }
                input name="last_name" placeholder=(l.field("last_name"));
                input name="birth_date" type="date"; }
            button { (l.t(Msg::Search)) }
        }
        @if let Some(found) = found {
            @if found.is_empty() { p #nothing { (l.t(Msg::NothingFound)) } }
            ul #found { @for h in &found {
                li { (h.source) ":" (h.source_id) " → "
                    @if let Some(p) = h.person_id { a href={(BASE) "/persons/" (p)} { (l.t(Msg::Person)) " " (p) } } @else { "—" } }
            } }
        }
    };
    page::ok(frame(l, Some(s), l.t(Msg::Search), body))
}
