//! The router: every route of the API behind the authentication and
//! access-log layer, the fallbacks, the body limit.

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::server::{authenticate, method_not_allowed, not_found, Shared};

/// Every route of the API.
pub fn router(app: Shared) -> Router {
    let limit = app.settings.api.max_body_bytes;
    crate::api::routes()
        .merge(crate::decisions::routes())
        .merge(crate::fhir::routes())
        .merge(crate::openapi::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}
