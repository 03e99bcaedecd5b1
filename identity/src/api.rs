//! The JSON API under `/v1`: persons, cross-references, identifiers,
//! `$match`, review items and decisions.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use crate::body::{person_id, JsonBody, QueryParams};
use crate::identifiers::Identifier;
use crate::matching::{Candidate, Demographics};
use crate::problem::Problem;
use crate::server::{Ctx, Shared};
use crate::store::{self, Golden, History, Holder, Member, Resolved};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/persons/{id}", get(person))
        .route("/v1/records", get(by_record))
        .route("/v1/identifiers", get(by_identifier))
        .route("/v1/match", post(match_demographics))
        .route("/v1/review-items", get(review_items))
}

/// A person: its state, records, history and (with `personal:read`) its
/// golden view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonView {
    pub person_id: i64,
    /// `active` or `retired`.
    pub status: &'static str,
    pub locked: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub records: Vec<Member>,
    pub history: History,
    /// Only with the scope `personal:read`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<Golden>,
}

/// Where a merged person's id leads.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MergedView {
    pub person_id: i64,
    pub status: &'static str,
    /// The live person that holds its records now.
    pub merged_into: i64,
    /// Every id after the asked one, ending with `merged_into`.
    pub chain: Vec<i64>,
}

/// Reads a live person's view (records, history, golden if allowed and
/// logged).
pub async fn person_view(
    app: &Shared,
    ctx: &Ctx,
    row: store::PersonRow,
) -> Result<PersonView, Problem> {
    let records = store::members(&app.pool, row.person_id).await?;
    let history = store::history(&app.pool, row.person_id).await?;
    let golden = golden_if_allowed(app, ctx, row.person_id, &records).await?;
    Ok(PersonView {
        person_id: row.person_id,
        status: if row.retired_at.is_some() {
            "retired"
        } else {
            "active"
        },
        locked: row.locked,
        created_at: row.created_at,
        updated_at: row.updated_at,
        records,
        history,
        golden,
    })
}

async fn golden_if_allowed(
    app: &Shared,
    ctx: &Ctx,
    person: i64,
    records: &[Member],
) -> Result<Option<Golden>, Problem> {
    if !ctx.caller.personal() {
        return Ok(None);
    }
    let shown = records
        .iter()
        .map(|m| format!("{}:{}", m.source, m.source_id))
        .collect();
    ctx.log_view(app, format!("person {person}"), shown).await?;
    Ok(store::golden(&app.pool, &[person])
        .await?
        .into_iter()
        .next())
}

/// `GET /v1/persons/{id}`: a person; a merged id answers 308 to the
/// survivor (body: the chain), a retired one 410.
#[utoipa::path(get, path = "/v1/persons/{id}", tag = "persons",
    params(("id" = i64, Path, description = "person id")),
    responses(
        (status = 200, body = PersonView),
        (status = 308, body = MergedView, description = "merged: Location names the surviving person"),
        (status = 404, body = crate::problem::ProblemDocument),
        (status = 410, body = crate::problem::ProblemDocument, description = "retired"),
    ),
    security(("bearer" = ["ids:read"])))]
pub async fn person(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let id = person_id(&raw)?;
    match store::resolve(&app.pool, id).await? {
        Resolved::Live(row) => Ok(Json(person_view(&app, &ctx, row).await?).into_response()),
        Resolved::Merged { chain } => {
            let into = *chain.last().expect("a chain ends in the survivor");
            let body = MergedView {
                person_id: id,
                status: "merged",
                merged_into: into,
                chain,
            };
            Ok((
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, format!("/v1/persons/{into}"))],
                Json(body),
            )
                .into_response())
        }
        Resolved::Retired { person, successors } => {
            Err(Problem::retired(person.person_id, &successors))
        }
        Resolved::Unknown => Err(Problem::not_found(format!("person {id} is not known"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    pub source: Option<String>,
    pub source_id: Option<String>,
}

/// A record's person and every record of that person (PIX).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CrossReference {
    pub source: String,
    pub source_id: String,
    pub person_id: i64,
    /// When the record joined the person.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Every current record of the person, this one included.
    pub records: Vec<Member>,
    /// Only with the scope `personal:read`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<Golden>,
}

/// `GET /v1/records?source=&source_id=`: the record's person and all its
/// records.
#[utoipa::path(get, path = "/v1/records", tag = "persons",
    params(("source" = String, Query), ("source_id" = String, Query)),
    responses((status = 200, body = CrossReference), (status = 404, body = crate::problem::ProblemDocument)),
    security(("bearer" = ["ids:read"])))]
pub async fn by_record(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    QueryParams(q): QueryParams<RecordQuery>,
) -> Result<Json<CrossReference>, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let (Some(source), Some(source_id)) = (q.source, q.source_id) else {
        return Err(Problem::bad_request(
            "invalid-query",
            "give both parameters source and source_id",
        ));
    };
    Ok(Json(cross_reference(&app, &ctx, source, source_id).await?))
}

pub async fn cross_reference(
    app: &Shared,
    ctx: &Ctx,
    source: String,
    source_id: String,
) -> Result<CrossReference, Problem> {
    let Some((person_id, since)) = store::person_of_record(&app.pool, &source, &source_id).await?
    else {
        let detail = if store::record_known(&app.pool, &source, &source_id).await? {
            "the record has no person (deleted, or not matched yet)"
        } else {
            "no such record"
        };
        return Err(Problem::not_found(detail));
    };
    let records = store::members(&app.pool, person_id).await?;
    let golden = golden_if_allowed(app, ctx, person_id, &records).await?;
    Ok(CrossReference {
        source,
        source_id,
        person_id,
        since,
        records,
        golden,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierQuery {
    pub snils: Option<String>,
    pub oms_policy: Option<String>,
    pub document_type: Option<String>,
    pub series: Option<String>,
    pub number: Option<String>,
}

impl IdentifierQuery {
    fn identifier(self) -> Result<Identifier, Problem> {
        match (self.snils, self.oms_policy, self.document_type, self.number) {
            (Some(s), None, None, None) if self.series.is_none() => Ok(Identifier::Snils(s)),
            (None, Some(o), None, None) if self.series.is_none() => Ok(Identifier::Oms(o)),
            (None, None, Some(t), Some(n)) => Ok(Identifier::Document {
                doc_type: t,
                series: self.series,
                number: n,
            }),
            _ => Err(Problem::bad_request(
                "invalid-query",
                "give one identifier: snils, oms_policy, or document_type with number (and series)",
            )),
        }
    }
}

/// The persons holding an identifier.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentifierMatches {
    /// The live records holding it, with their persons.
    pub records: Vec<Holder>,
    /// Their distinct persons.
    pub persons: Vec<i64>,
}

/// Most records one identifier lookup lists.
const HOLDERS_LIMIT: i64 = 1_000;

/// The records and persons holding `identifier`; the lookup is written to
/// the access log (who asked whose identifier: by the persons found).
pub async fn holders(
    app: &Shared,
    ctx: &Ctx,
    identifier: &Identifier,
) -> Result<IdentifierMatches, Problem> {
    let key = identifier.key()?;
    let records = store::holders(&app.pool, &key, HOLDERS_LIMIT).await?;
    let mut persons: Vec<i64> = records.iter().filter_map(|h| h.person_id).collect();
    persons.sort_unstable();
    persons.dedup();
    let shown = records
        .iter()
        .map(|h| format!("{}:{}", h.source, h.source_id))
        .collect();
    ctx.log_view(app, format!("lookup by {}", identifier.kind()), shown)
        .await?;
    Ok(IdentifierMatches { records, persons })
}

/// `GET /v1/identifiers?snils=…` (or `oms_policy=…`, or
/// `document_type=…&series=…&number=…`): normalized as on load.
#[utoipa::path(get, path = "/v1/identifiers", tag = "persons",
    params(
        ("snils" = Option<String>, Query), ("oms_policy" = Option<String>, Query),
        ("document_type" = Option<String>, Query), ("series" = Option<String>, Query),
        ("number" = Option<String>, Query)),
    responses((status = 200, body = IdentifierMatches), (status = 400, body = crate::problem::ProblemDocument)),
    security(("bearer" = ["ids:read"])))]
pub async fn by_identifier(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    QueryParams(q): QueryParams<IdentifierQuery>,
) -> Result<Json<IdentifierMatches>, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let identifier = q.identifier()?;
    Ok(Json(holders(&app, &ctx, &identifier).await?))
}

/// A `$match` request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    pub demographics: Demographics,
    /// Most candidates returned (default and ceiling: `api.max_candidates`).
    pub limit: Option<usize>,
}

/// Candidates, best first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchResponse {
    /// The model version that scored them; none: the shipped priors.
    pub model_version: Option<i64>,
    /// The link probability threshold in use (model scoring).
    pub link_probability: Option<f64>,
    pub candidates: Vec<Candidate>,
    /// Only with `personal:read`: the candidates' golden views.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<Vec<Golden>>,
}

/// Scores `demographics` and logs the candidates found (and, with
/// `personal:read`, their golden views).
pub async fn run_match(
    app: &Shared,
    ctx: &Ctx,
    demographics: &Demographics,
    limit: Option<usize>,
) -> Result<MatchResponse, Problem> {
    let record = demographics.record()?;
    let max = app.settings.api.max_candidates;
    let limit = limit.unwrap_or(max).clamp(1, max);
    let (candidates, model_version) = crate::matching::candidates(
        &app.pool,
        &app.scorer,
        &record,
        app.settings.api.max_birth_date_block,
        limit,
    )
    .await?;
    let persons: Vec<i64> = candidates.iter().map(|c| c.person_id).collect();
    let shown = candidates
        .iter()
        .map(|c| format!("{}:{}", c.source, c.source_id))
        .collect();
    let subject = format!(
        "match: persons {}",
        persons
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    ctx.log_view(app, subject, shown).await?;
    let golden = if ctx.caller.personal() {
        Some(store::golden(&app.pool, &persons).await?)
    } else {
        None
    };
    Ok(MatchResponse {
        model_version,
        link_probability: app.scorer.link_probability(),
        candidates,
        golden,
    })
}

/// `POST /v1/match`: candidate persons for demographics; nothing is
/// created.
#[utoipa::path(post, path = "/v1/match", tag = "match", request_body = MatchRequest,
    responses((status = 200, body = MatchResponse), (status = 422, body = crate::problem::ProblemDocument)),
    security(("bearer" = ["ids:read"])))]
pub async fn match_demographics(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    JsonBody(req): JsonBody<MatchRequest>,
) -> Result<Json<MatchResponse>, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    Ok(Json(
        run_match(&app, &ctx, &req.demographics, req.limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// `GET /v1/review-items?after=&limit=`: open review items, oldest first.
#[utoipa::path(get, path = "/v1/review-items", tag = "decisions",
    params(("after" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Vec<store::ReviewItem>)),
    security(("bearer" = ["ids:read"])))]
pub async fn review_items(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    QueryParams(q): QueryParams<ReviewQuery>,
) -> Result<Json<Vec<store::ReviewItem>>, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let number = |v: Option<String>, default: i64, what: &str| -> Result<i64, Problem> {
        v.map_or(Ok(default), |v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                Problem::bad_request("invalid-query", format!("{what} is a whole number"))
            })
        })
    };
    let after = number(q.after, 0, "after")?;
    let limit = number(q.limit, 100, "limit")?.clamp(1, 1000);
    Ok(Json(store::open_reviews(&app.pool, after, limit).await?))
}
