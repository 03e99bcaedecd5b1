//! The identity service: the patient index other systems ask.
//!
//! * [`api`]: the JSON API under `/v1` (persons, cross-references,
//!   identifiers, `$match`, review items) and [`decisions`] over HTTP.
//! * [`fhir`]: FHIR R4 `Patient` read, search by identifier, `$match`.
//! * [`auth`]: API keys and JWTs, scopes, per-client rates; [`clients`]
//!   manages the API keys (`etl identity client …`).
//! * [`store`]: reads of the matcher's tables; [`matching`]: candidates and
//!   scores by the matcher's own features, blocking keys and model;
//!   [`identifiers`]: identifiers normalized as on load, FHIR systems.
//! * [`problem`]: RFC 9457 problem documents; [`body`]: bodies and query
//!   strings read without echoing values.
//! * [`server`]: state, authentication and access log around every route;
//!   [`routes`]: the router; [`tls`]: HTTPS; [`openapi`]: the OpenAPI
//!   document.
//! * The steward console (crate `steward-console`) is mounted under
//!   `/console/` when `[console] enabled`.

pub mod api;
pub mod auth;
pub mod body;
pub mod clients;
pub mod decisions;
pub mod fhir;
pub mod identifiers;
pub mod matching;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod server;
pub mod settings;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// Connects (waiting while PostgreSQL is down or the schema not migrated),
/// binds the API and serves it until `shutdown`. Gives the bound address
/// and the serving task (done when the server has stopped); `None` if
/// shut down while waiting.
pub async fn start(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let pool = settings.database.pool_for_point_reads();
    if !etl_runtime::database::wait_for_schema(
        &pool,
        &etl_runtime::database::MIGRATOR,
        settings.database.migrate,
        &settings.matcher.retry,
        &shutdown,
    )
    .await
    .context("preparing the database schema")?
    {
        return Ok(None);
    }
    etl_runtime::observe::watch_database(&pool);
    let tls = match (&settings.api.tls_cert_file, &settings.api.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("api.tls_cert_file and api.tls_key_file go together"),
    };
    let listen = settings.api.listen;
    let console = console(&pool, &settings, tls.is_some())?;
    let app = Arc::new(server::App::new(pool, settings)?);
    server::spawn_housekeeping(app.clone(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API address {listen}"))?;
    let addr = listener.local_addr()?;
    // The peer address reaches the handlers as `ConnectInfo<SocketAddr>`
    // (the console counts failed sign-ins per client address).
    let mut router = routes::router(app);
    if let Some(console) = console {
        // Its own guard (sessions, CSRF), not the API's keys.
        router = steward_console::mount(router, console);
    }
    let stop = shutdown.clone();
    let https = tls.is_some();
    let task = match tls {
        Some(config) => {
            // `tap_io` (doing nothing) gives the TLS listener's connections
            // the peer address as `ConnectInfo`, as a plain TCP listener's.
            let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(async move {
                let serve =
                    axum::serve(listener, service).with_graceful_shutdown(stop.cancelled_owned());
                if let Err(error) = serve.await {
                    tracing::error!(%error, "API server failed");
                }
            })
        }
        None => tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let serve =
                axum::serve(listener, service).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::error!(%error, "API server failed");
            }
        }),
    };
    etl_runtime::observe::ready();
    tracing::info!(%addr, https, "identity API listening");
    Ok(Some((addr, task)))
}

/// The steward console when `[console] enabled`, deciding with the same
/// matcher settings as the API.
fn console(
    pool: &sqlx::PgPool,
    settings: &Settings,
    https: bool,
) -> anyhow::Result<Option<steward_console::Shared>> {
    if !settings.console.enabled {
        return Ok(None);
    }
    let engine = matcher::service::engine(&matcher::Settings {
        matcher: settings.matcher.clone(),
        ..Default::default()
    });
    let mut console =
        steward_console::Console::new(pool.clone(), engine, settings.console.clone(), https)
            .context("[console]")?;
    // The search by name reads the same birth-date blocks as `$match`.
    console.max_birth_date_block = settings.api.max_birth_date_block;
    Ok(Some(Arc::new(console)))
}
