//! The application: shared state, authentication and access log around
//! every route, the router.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use etl_runtime::access_log::{self, View};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;

use crate::auth::{Authenticator, Caller};
use crate::matching::Scorer;
use crate::problem::Problem;
use crate::settings::Settings;

/// Refusals written to the access log per second and client (or per
/// anonymous caller, all together): a flood of refused requests must not
/// become a flood of writes. Refusals beyond it are counted
/// (`identity_refused_total`) but not logged one by one.
const REFUSALS_LOGGED_PER_SECOND: u32 = 20;

pub struct App {
    pub pool: PgPool,
    pub settings: Settings,
    pub auth: Authenticator,
    pub scorer: Scorer,
    pub engine: matcher::Engine,
    refusals: DefaultKeyedRateLimiter<String>,
}

impl App {
    pub fn new(pool: PgPool, settings: Settings) -> anyhow::Result<App> {
        let auth = Authenticator::new(pool.clone(), &settings.auth)?;
        let engine = matcher::service::engine(&matcher::Settings {
            matcher: settings.matcher.clone(),
            ..Default::default()
        });
        let scorer = Scorer::new(engine.setup());
        let per_second = NonZeroU32::new(REFUSALS_LOGGED_PER_SECOND).expect("not zero");
        Ok(App {
            pool,
            settings,
            auth,
            scorer,
            engine,
            refusals: RateLimiter::keyed(Quota::per_second(per_second)),
        })
    }
}

pub type Shared = Arc<App>;

/// What a handler knows of its request: who calls, and the request as the
/// access log names it.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    /// `identity <METHOD> <route>`, e.g. `identity GET /v1/persons/{id}`.
    pub command: String,
}

impl Ctx {
    /// Writes a view of personal data (or of persons found by personal
    /// data) to the access log before it is answered; if the line cannot be
    /// written, nothing is shown.
    pub async fn log_view(
        &self,
        app: &App,
        subject: String,
        records: Vec<String>,
    ) -> Result<(), Problem> {
        let view = View {
            command: self.command.clone(),
            subject,
            records,
            client: Some(self.caller.name.clone()),
        };
        access_log::record(&app.pool, &view).await.map_err(|e| {
            tracing::error!(error = %etl_runtime::database::describe(&e), "access log not written");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "access-log-unavailable",
                "Access log unavailable",
                "the view could not be recorded in the access log, so nothing is shown",
            )
        })
    }
}

fn command_of(req: &Request) -> String {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", |m| m.as_str());
    format!("identity {} {route}", req.method())
}

/// Authenticates every request, applies the client's rate, and leaves a
/// refused request's only trace: its access-log line.
pub async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let command = command_of(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)".to_string(), |m| m.as_str().to_string());
    let fhir = route.starts_with("/fhir");
    let response = match app.auth.authenticate(req.headers()).await {
        Ok(caller) => {
            let name = caller.name.clone();
            req.extensions_mut().insert(Ctx {
                caller,
                command: command.clone(),
            });
            let response = next.run(req).await;
            // A missing scope is refused before anything is read or written.
            if response.status() == StatusCode::FORBIDDEN {
                log_refusal(&app, command, "forbidden", Some(name)).await;
            }
            response
        }
        Err(refused) => {
            let status = refused.problem.status;
            metrics::counter!("identity_refused_total", "outcome" => status.as_str().to_string())
                .increment(1);
            log_refusal(&app, command, refused.problem.kind, refused.client).await;
            let mut problem = refused.problem;
            problem.fhir = fhir;
            problem.into_response()
        }
    };
    let outcome = response.status().as_str().to_string();
    metrics::histogram!("identity_request_seconds", "kind" => route, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A refused request's access-log line (at most
/// [`REFUSALS_LOGGED_PER_SECOND`] per client).
async fn log_refusal(app: &App, command: String, kind: &str, client: Option<String>) {
    let who = client.clone().unwrap_or_else(|| "(anonymous)".into());
    if app.refusals.check_key(&who).is_err() {
        return;
    }
    let view = View {
        command,
        subject: format!("refused: {kind}"),
        records: Vec::new(),
        client,
    };
    if let Err(e) = access_log::record(&app.pool, &view).await {
        tracing::error!(error = %etl_runtime::database::describe(&e), "refusal not logged");
    }
}

pub async fn not_found(req: Request) -> Response {
    let p = Problem::not_found("no such resource");
    if req.uri().path().starts_with("/fhir") {
        p.fhir().into_response()
    } else {
        p.into_response()
    }
}

pub async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this resource does not accept that method",
    )
    .into_response()
}

/// Periodic housekeeping: forget idle clients' rate buckets.
pub fn spawn_housekeeping(app: Shared, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    app.auth.forget_idle();
                    app.refusals.retain_recent();
                }
            }
        }
    });
}
