//! The steward console: web pages where data stewards clear the review
//! queue, see why records are one person, split wrong merges and undo
//! decisions. Server-rendered (maud) with htmx for in-place actions; no
//! JavaScript build step. The identity service mounts [`router`] under
//! `/console/` when `[console] enabled = true`.
//!
//! * [`accounts`]: steward accounts (argon2 passwords, roles);
//!   [`session`]: sessions, the sign-in guard and CSRF; [`throttle`]:
//!   failed sign-ins counted per account name and client address;
//!   [`oidc`]: sign-in through an OpenID Connect provider.
//! * [`queue`], [`item`], [`person`], [`search`], [`overview`]: the pages;
//!   [`records`]: the reads they need beyond `matcher::reads`.
//! * [`page`]: the frame and shared pieces; [`i18n`]: Russian and English.

pub mod accounts;
pub mod i18n;
pub mod item;
pub mod oidc;
pub mod overview;
pub mod page;
pub mod person;
pub mod queue;
pub mod records;
pub mod search;
pub mod session;
pub mod settings;
pub mod signin;
pub mod throttle;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use etl_runtime::access_log::{self, View};
use sqlx::PgPool;

pub use settings::ConsoleSettings;

use crate::i18n::Lang;
use crate::session::Steward;

/// Where the identity service mounts the console; links in pages start
/// with it.
pub const BASE: &str = "/console";

pub struct Console {
    pub pool: PgPool,
    pub engine: matcher::Engine,
    pub settings: ConsoleSettings,
    /// The default language.
    pub lang: Lang,
    /// Cookies get `Secure` when the service speaks TLS.
    pub https: bool,
    /// Scores the search by name with the model in use, as the identity
    /// service's `$match` does (`matcher::candidates`).
    pub scorer: matcher::candidates::Scorer,
    /// The most records of one birth date a search by name reads (the
    /// identity service sets its `api.max_birth_date_block`).
    pub max_birth_date_block: i64,
    /// Failed sign-ins per account name and client address.
    pub throttle: throttle::SignInThrottle,
    /// Sign-in through an OpenID Connect provider, when configured.
    pub oidc: Option<oidc::Oidc>,
}

pub type Shared = Arc<Console>;

impl Console {
    pub fn new(
        pool: PgPool,
        engine: matcher::Engine,
        settings: ConsoleSettings,
        https: bool,
    ) -> anyhow::Result<Console> {
        let lang = Lang::parse(&settings.language)
            .ok_or_else(|| anyhow::anyhow!("console.language: use ru or en"))?;
        anyhow::ensure!(settings.page_size > 0, "console.page_size must be positive");
        anyhow::ensure!(
            settings.sign_in_failures_per_account > 0 && settings.sign_in_failures_per_address > 0,
            "console.sign_in_failures_per_account and _per_address must be positive"
        );
        let throttle = throttle::SignInThrottle::new(
            settings.sign_in_failures_per_account,
            settings.sign_in_failures_per_address,
            settings.sign_in_lockout,
        );
        let scorer = matcher::candidates::Scorer::new(engine.setup());
        let oidc = settings.oidc.clone().map(oidc::Oidc::new).transpose()?;
        Ok(Console {
            pool,
            engine,
            settings,
            lang,
            https,
            scorer,
            max_birth_date_block: 20_000,
            throttle,
            oidc,
        })
    }

    /// Writes a view of personal data to the access log before it is
    /// shown: the steward, the page, the records by identifier.
    pub async fn log_view(
        &self,
        steward: &Steward,
        page: &str,
        subject: String,
        records: Vec<String>,
    ) -> sqlx::Result<()> {
        let view = View {
            command: format!("console {page}"),
            subject,
            records,
            client: Some(format!("console:{}", steward.name)),
        };
        access_log::record(&self.pool, &view).await
    }
}

const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");
const SCRIPT: &[u8] = include_bytes!("../assets/console.js");
const STYLE: &[u8] = include_bytes!("../assets/console.css");

fn asset(kind: &'static str, bytes: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        bytes,
    )
}

/// The console's routes, relative to [`BASE`]: sign-in and the assets
/// open, every other page behind the session guard.
pub fn router(app: Shared) -> Router {
    let guarded = Router::new()
        .merge(queue::routes())
        .merge(item::routes())
        .merge(person::routes())
        .merge(search::routes())
        .merge(overview::routes())
        .merge(signin::signed_in_routes())
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            session::guard,
        ));
    Router::new()
        .merge(signin::routes())
        .route(
            "/assets/htmx.min.js",
            get(|| async { asset("text/javascript", HTMX) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", STYLE) }),
        )
        .merge(guarded)
        .with_state(app)
}

/// `outer` with the console under [`BASE`]: its pages, and `/console/`
/// (what a steward types) leading to the queue.
pub fn mount(outer: Router, app: Shared) -> Router {
    outer.nest(BASE, router(app)).route(
        &format!("{BASE}/"),
        get(|| async { axum::response::Redirect::to(&format!("{BASE}/queue")) }),
    )
}
