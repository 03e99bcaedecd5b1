//! Decisions over HTTP: link, keep apart, revoke, lock, unlock, resolve a
//! review item. The same operations as `etl persons` (`matcher::operator`):
//! written, audited and applied in one transaction under the matcher's
//! lock; the audit names the client as `identity:<client>`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use matcher::operator::{self, OperatorError};
use matcher::Applied;
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use crate::body::{person_id, JsonBody};
use crate::problem::Problem;
use crate::server::{Ctx, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/decisions/link", post(link))
        .route("/v1/decisions/keep-apart", post(keep_apart))
        .route("/v1/decisions/revoke", post(revoke))
        .route("/v1/persons/{id}/lock", post(lock))
        .route("/v1/persons/{id}/unlock", post(unlock))
        .route("/v1/review-items/{id}/resolve", post(resolve))
}

/// A record by source and source id.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    pub source: String,
    pub source_id: String,
}

/// A decision on a pair of records.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairDecision {
    pub a: RecordRef,
    pub b: RecordRef,
    /// Why (kept with the decision; no personal data, please).
    pub note: Option<String>,
}

/// What a decision changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionOutcome {
    /// Records that moved to another person.
    pub moved: u64,
    pub persons_created: u64,
    pub persons_retired: u64,
    /// The persons of the records after the decision.
    pub persons: Vec<i64>,
}

fn problem(e: OperatorError) -> Problem {
    match e {
        OperatorError::UnknownRecord(..) => Problem::not_found("a record of the pair is not known"),
        OperatorError::UnknownPerson(id) => Problem::not_found(format!("person {id} is not known")),
        OperatorError::NotOpen(id) => Problem::new(
            StatusCode::CONFLICT,
            "review-item-not-open",
            "Review item not open",
            format!("review item {id} is not open (resolved, obsolete or unknown)"),
        ),
        OperatorError::SameRecord => {
            Problem::bad_request("same-record", "a record cannot be paired with itself")
        }
        // Splits are the console's; the API does not offer them.
        e @ (OperatorError::NotMember(..) | OperatorError::NothingToSplit) => {
            Problem::bad_request("bad-split", e.to_string())
        }
        OperatorError::Database(e) => Problem::internal(&e),
    }
}

fn rec(r: &RecordRef) -> Result<(String, String), Problem> {
    if r.source.is_empty() || r.source_id.is_empty() {
        return Err(Problem::bad_request(
            "invalid-record",
            "a record needs source and source_id",
        ));
    }
    Ok((r.source.clone(), r.source_id.clone()))
}

async fn outcome(
    app: &Shared,
    applied: &Applied,
    recs: &[(String, String)],
) -> Result<DecisionOutcome, Problem> {
    let mut persons: Vec<i64> = crate::store::persons_of(&app.pool, recs)
        .await?
        .into_iter()
        .map(|(_, _, p)| p)
        .collect();
    persons.sort_unstable();
    persons.dedup();
    Ok(DecisionOutcome {
        moved: applied.moved,
        persons_created: applied.persons_created,
        persons_retired: applied.persons_retired,
        persons,
    })
}

async fn pair(
    app: Shared,
    ctx: Ctx,
    kind: &str,
    d: PairDecision,
) -> Result<Json<DecisionOutcome>, Problem> {
    ctx.caller.require(Scope::DecisionsWrite)?;
    let (a, b) = (rec(&d.a)?, rec(&d.b)?);
    let applied = operator::decide(
        &app.engine,
        &app.pool,
        kind,
        &a,
        &b,
        &ctx.caller.actor(),
        d.note.as_deref(),
    )
    .await
    .map_err(problem)?;
    Ok(Json(outcome(&app, &applied, &[a, b]).await?))
}

/// `POST /v1/decisions/link`: the two records are one person, whatever the
/// rules say.
#[utoipa::path(post, path = "/v1/decisions/link", tag = "decisions", request_body = PairDecision,
    responses((status = 200, body = DecisionOutcome), (status = 404, body = crate::problem::ProblemDocument)),
    security(("bearer" = ["decisions:write"])))]
pub async fn link(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    JsonBody(d): JsonBody<PairDecision>,
) -> Result<Json<DecisionOutcome>, Problem> {
    pair(app, ctx, "link", d).await
}

/// `POST /v1/decisions/keep-apart`: the two records are different persons.
#[utoipa::path(post, path = "/v1/decisions/keep-apart", tag = "decisions", request_body = PairDecision,
    responses((status = 200, body = DecisionOutcome)),
    security(("bearer" = ["decisions:write"])))]
pub async fn keep_apart(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    JsonBody(d): JsonBody<PairDecision>,
) -> Result<Json<DecisionOutcome>, Problem> {
    pair(app, ctx, "keep_apart", d).await
}

/// A pair whose decision is withdrawn.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairRef {
    pub a: RecordRef,
    pub b: RecordRef,
}

/// Decisions revoked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// `POST /v1/decisions/revoke`: withdraw the decision on a pair; the rules
/// apply again.
#[utoipa::path(post, path = "/v1/decisions/revoke", tag = "decisions", request_body = PairRef,
    responses((status = 200, body = Revoked)),
    security(("bearer" = ["decisions:write"])))]
pub async fn revoke(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    JsonBody(p): JsonBody<PairRef>,
) -> Result<Json<Revoked>, Problem> {
    ctx.caller.require(Scope::DecisionsWrite)?;
    let (a, b) = (rec(&p.a)?, rec(&p.b)?);
    let revoked = operator::revoke(&app.engine, &app.pool, &a, &b, &ctx.caller.actor())
        .await
        .map_err(problem)?;
    Ok(Json(Revoked { revoked }))
}

/// A person's lock state after the request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LockState {
    pub person_id: i64,
    pub locked: bool,
}

async fn set_lock(
    app: Shared,
    ctx: Ctx,
    raw: &str,
    locked: bool,
) -> Result<Json<LockState>, Problem> {
    ctx.caller.require(Scope::DecisionsWrite)?;
    let id = person_id(raw)?;
    operator::set_lock(&app.engine, &app.pool, id, locked, &ctx.caller.actor())
        .await
        .map_err(problem)?;
    Ok(Json(LockState {
        person_id: id,
        locked,
    }))
}

/// `POST /v1/persons/{id}/lock`: freeze a person against automatic changes.
#[utoipa::path(post, path = "/v1/persons/{id}/lock", tag = "decisions",
    params(("id" = i64, Path)), responses((status = 200, body = LockState)),
    security(("bearer" = ["decisions:write"])))]
pub async fn lock(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    Path(raw): Path<String>,
) -> Result<Json<LockState>, Problem> {
    set_lock(app, ctx, &raw, true).await
}

/// `POST /v1/persons/{id}/unlock`: the rules apply to it again.
#[utoipa::path(post, path = "/v1/persons/{id}/unlock", tag = "decisions",
    params(("id" = i64, Path)), responses((status = 200, body = LockState)),
    security(("bearer" = ["decisions:write"])))]
pub async fn unlock(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    Path(raw): Path<String>,
) -> Result<Json<LockState>, Problem> {
    set_lock(app, ctx, &raw, false).await
}

/// How a review item is resolved.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// `link` or `keep_apart`.
    pub resolution: String,
}

/// `POST /v1/review-items/{id}/resolve`.
#[utoipa::path(post, path = "/v1/review-items/{id}/resolve", tag = "decisions",
    params(("id" = i64, Path)), request_body = Resolution,
    responses((status = 200, body = DecisionOutcome), (status = 409, body = crate::problem::ProblemDocument)),
    security(("bearer" = ["decisions:write"])))]
pub async fn resolve(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    Path(raw): Path<String>,
    JsonBody(r): JsonBody<Resolution>,
) -> Result<Json<DecisionOutcome>, Problem> {
    ctx.caller.require(Scope::DecisionsWrite)?;
    let item: i64 = raw.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
        Problem::bad_request(
            "invalid-review-item",
            "a review item id is a positive integer",
        )
    })?;
    let resolution = match r.resolution.as_str() {
        "link" => "link",
        "keep_apart" | "keep-apart" => "keep_apart",
        _ => {
            return Err(Problem::bad_request(
                "invalid-resolution",
                "resolution is link or keep_apart",
            ))
        }
    };
    let recs: Option<(String, String, String, String)> = sqlx::query_as(
        "SELECT a_source, a_source_id, b_source, b_source_id FROM review_items WHERE id = $1",
    )
    .bind(item)
    .fetch_optional(&app.pool)
    .await?;
    let applied = operator::resolve(
        &app.engine,
        &app.pool,
        item,
        resolution,
        &ctx.caller.actor(),
    )
    .await
    .map_err(problem)?;
    let recs: Vec<(String, String)> = recs
        .map(|(a0, a1, b0, b1)| vec![(a0, a1), (b0, b1)])
        .unwrap_or_default();
    Ok(Json(outcome(&app, &applied, &recs).await?))
}
