//! The OpenAPI document of the JSON API, served at `/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::server::Shared;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "identity",
        description = "The patient index: persons, cross-references, identifiers, $match and decisions. \
                       Every request carries `Authorization: Bearer <API key or JWT>`; scopes \
                       `ids:read`, `personal:read`, `decisions:write`. Errors are RFC 9457 problem \
                       documents. FHIR R4 (Patient read, search by identifier, $match) is served \
                       under /fhir (see the README)."
    ),
    paths(
        crate::api::person,
        crate::api::by_record,
        crate::api::by_identifier,
        crate::api::match_demographics,
        crate::api::review_items,
        crate::decisions::link,
        crate::decisions::keep_apart,
        crate::decisions::revoke,
        crate::decisions::lock,
        crate::decisions::unlock,
        crate::decisions::resolve,
    ),
    components(schemas(crate::problem::ProblemDocument)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn routes() -> Router<Shared> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
