//! Errors as RFC 9457 problem documents (`application/problem+json`) on the
//! JSON API, and as FHIR `OperationOutcome`s under `/fhir`. A problem
//! names fields, identifier kinds and ids, never a value a caller sent or
//! a record holds: they reach proxies' and clients' logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

/// The base of every problem `type` URI; the README lists them.
pub const TYPE_BASE: &str = "urn:etl-bus:identity:problem:";

/// One problem: status, a stable kind (the last part of its `type`), a
/// title for people and a detail without personal data, plus extension
/// members (ids only).
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: serde_json::Map<String, Value>,
    /// Render as a FHIR OperationOutcome.
    pub fhir: bool,
    /// `Retry-After` (seconds) of a 429.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: serde_json::Map::new(),
            fhir: false,
            retry_after: None,
        }
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(scope: &str) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Scope missing",
            format!("this request needs the scope {scope}"),
        )
        .with("required_scope", scope)
    }

    /// A failure of ours (PostgreSQL down, a bug): 503 when it may pass,
    /// else 500; the log gets the database's description (never values).
    pub fn internal(error: &sqlx::Error) -> Problem {
        let transient = etl_runtime::database::is_transient(error);
        tracing::error!(error = %etl_runtime::database::describe(error), transient, "request failed");
        if transient {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                "the database is not reachable; retry later",
            )
        } else {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the request failed on the server; it is logged",
            )
        }
    }

    /// A retired person's id (410): why, and where its records went if
    /// they went to several persons.
    pub fn retired(id: i64, successors: &[i64]) -> Problem {
        let detail = if successors.is_empty() {
            format!("person {id} is retired: its records were deleted")
        } else {
            format!("person {id} is retired: its records went to several persons")
        };
        Problem::new(StatusCode::GONE, "person-retired", "Person retired", detail)
            .with("person_id", id)
            .with("successors", successors.to_vec())
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(key.into(), value.into());
        self
    }

    pub fn fhir(mut self) -> Problem {
        self.fhir = true;
        self
    }

    fn problem_body(&self) -> Value {
        let mut body = json!({
            "type": format!("{TYPE_BASE}{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        for (k, v) in &self.extensions {
            body[k] = v.clone();
        }
        body
    }

    /// The FHIR form: one issue with a code FHIR defines for the status.
    fn outcome_body(&self) -> Value {
        let code = match self.status.as_u16() {
            401 => "login",
            403 => "forbidden",
            404 | 410 => "not-found",
            413 => "too-costly",
            429 => "throttled",
            400 | 415 | 422 => "invalid",
            _ => "exception",
        };
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": code,
                "details": {"text": self.detail},
                "diagnostics": format!("{TYPE_BASE}{}", self.kind),
            }],
        })
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Problem {
        Problem::internal(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (body, content_type) = if self.fhir {
            (self.outcome_body(), "application/fhir+json")
        } else {
            (self.problem_body(), "application/problem+json")
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"identity\""),
            );
        }
        response
    }
}

/// A problem document as the OpenAPI document describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemDocument {
    /// `urn:etl-bus:identity:problem:<kind>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}
