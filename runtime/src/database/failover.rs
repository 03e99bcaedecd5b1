//! A pool on the one server of several (`database.host = "pg-a,pg-b"`)
//! that `target_session_attrs` accepts: the primary, and after a failover
//! the promoted standby.
//!
//! sqlx connects a pool to one host and has no `target_session_attrs`, but
//! a pool reads its connect options anew for every connection it opens. So
//! a task ([`watch`]) checks the server in use every second on a connection
//! of its own and, when that fails or the server accepts no more writes,
//! tries the hosts in order and points the pool at the first that fits.
//! Pooled connections opened before that move are dropped when next
//! acquired; broken ones fail their query, which the services retry.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool, Postgres};

use super::{describe, DatabaseSettings, TargetSessionAttrs};

/// How often the server in use is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `after_connect` of a `read-write` pool: a server that accepts no writes
/// (a standby, `default_transaction_read_only`) is refused, so the pool
/// tries again (by then, perhaps, on another host) instead of handing out
/// a connection every write would fail on.
pub(super) async fn refuse_read_only(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    if accepts_writes(conn).await? {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            "the server accepts no writes (a standby?) and database.target_session_attrs is read-write"
                .into(),
        ))
    }
}

async fn accepts_writes(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(conn)
        .await?;
    Ok(read_only == "off")
}

/// When the pool last moved to another host: connections older than that
/// belong to the previous server.
struct Moved(Mutex<Instant>);

impl Moved {
    fn since(&self) -> Duration {
        self.0.lock().unwrap().elapsed()
    }
}

/// A lazy pool on the first host, and the task that keeps it on the right
/// one.
pub(super) fn pool(settings: &DatabaseSettings, options: PoolOptions<Postgres>) -> PgPool {
    let moved = Arc::new(Moved(Mutex::new(Instant::now())));
    let before_acquire = moved.clone();
    let pool = options
        .before_acquire(move |_, meta| {
            let fresh = meta.age < before_acquire.since();
            Box::pin(async move { Ok(fresh) })
        })
        .connect_lazy_with(settings.with_db());
    tokio::spawn(watch(pool.clone(), settings.clone(), moved));
    pool
}

/// Every [`CHECK_INTERVAL`] until the pool is closed: is the server in use
/// still fit? If not, the first host that is becomes the pool's.
async fn watch(pool: PgPool, settings: DatabaseSettings, moved: Arc<Moved>) {
    let hosts = settings.hosts();
    let mut current = 0;
    let mut probe: Option<PgConnection> = None;
    while !pool.is_closed() {
        let fit = match probe.as_mut() {
            Some(conn) => fits(&settings, conn).await,
            None => false,
        };
        if !fit {
            probe = None;
            if let Some(found) = first_fit(&settings).await {
                if found.index != current {
                    let (host, port) = &hosts[found.index];
                    tracing::warn!(
                        host = %host,
                        port,
                        "database: moving to another server of database.host"
                    );
                    pool.set_connect_options(found.options);
                    *moved.0.lock().unwrap() = Instant::now();
                    current = found.index;
                }
                probe = Some(found.conn);
            }
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

/// The first server of `database.host` that fits.
pub(super) struct Fit {
    /// Its place in [`DatabaseSettings::hosts`].
    pub index: usize,
    /// Its options, with the database.
    pub options: PgConnectOptions,
    /// A connection to it.
    pub conn: PgConnection,
}

/// The first server of `database.host`, in order, that answers and that
/// `target_session_attrs` accepts, if one does.
pub(super) async fn first_fit(settings: &DatabaseSettings) -> Option<Fit> {
    for (index, (host, port)) in settings.hosts().iter().enumerate() {
        let options = settings
            .server_options(host, *port)
            .database(&settings.database_name);
        if let Some(conn) = connect_fit(settings, &options).await {
            return Some(Fit {
                index,
                options,
                conn,
            });
        }
    }
    None
}

/// A connection to the server of `options` if it answers within
/// `acquire_timeout` and `target_session_attrs` accepts it.
async fn connect_fit(
    settings: &DatabaseSettings,
    options: &PgConnectOptions,
) -> Option<PgConnection> {
    let connect = PgConnection::connect_with(options);
    let mut conn = match tokio::time::timeout(settings.acquire_timeout, connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::debug!(error = %describe(&error), host = options.get_host(), "database host not reachable");
            return None;
        }
        Err(_) => return None,
    };
    fits(settings, &mut conn).await.then_some(conn)
}

/// Whether the server of `conn` answers (within `acquire_timeout`) and, for
/// `read-write`, accepts writes.
async fn fits(settings: &DatabaseSettings, conn: &mut PgConnection) -> bool {
    let check = async {
        match settings.target_session_attrs {
            TargetSessionAttrs::ReadWrite => accepts_writes(conn).await,
            TargetSessionAttrs::Any => conn.ping().await.map(|()| true),
        }
    };
    matches!(
        tokio::time::timeout(settings.acquire_timeout, check).await,
        Ok(Ok(true))
    )
}
