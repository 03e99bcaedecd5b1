//! PostgreSQL connection settings and pool.
//!
//! `host` may list several servers (a primary and its streaming standbys):
//! sqlx connects to one host only, so the pool of [`DatabaseSettings::pool`]
//! is pointed at the server that accepts writes and moved when that changes
//! (see [`failover`]).

mod failover;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, PgPool};

/// The schema's migrations (the workspace's `migrations/` directory),
/// embedded at build time (`build.rs`): the one migrator that the services
/// and `etl migrate` run.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Host name or address of the server. A primary with standbys: all of
    /// them, comma-separated, each with its own port if it is not `port`
    /// (`"pg-a,pg-b"`, `"10.0.0.5:5432,10.0.0.6:5433"`). A service then
    /// uses the first that `target_session_attrs` accepts, checks it every
    /// second, and moves to another host when it stops answering or stops
    /// accepting writes (a standby promoted after the primary failed).
    pub host: String,
    /// Port of every host that does not name its own.
    pub port: u16,
    /// Which server of `host` to use: `read-write` (the default: one that
    /// accepts writes, the primary; a standby is passed over, and a service
    /// waits rather than write to one) or `any` (the first that answers).
    pub target_session_attrs: TargetSessionAttrs,
    /// The role to log in as. Empty (the default): as psql does, `PGUSER`,
    /// else the operating-system user's name. Never a superuser by default:
    /// each service its own role of deploy/postgres/roles.sql (`etl_loader`,
    /// `etl_matcher`), people `etl_operator`, `etl migrate` `etl_owner`.
    pub username: String,
    /// Never printed: `Debug` shows `[REDACTED]`.
    pub password: Option<SecretString>,
    pub database_name: String,
    /// TLS to the server: `disable` (plain text), `prefer` (TLS when the
    /// server offers it, the default; the server is not verified), `require`
    /// (TLS or no connection; the server is not verified unless `ca_file` is
    /// set), `verify-ca` (TLS, the server's certificate must chain to
    /// `ca_file` or the system's store) or `verify-full` (as `verify-ca`,
    /// and the certificate must name `host`). Only the `verify-*` modes stop
    /// a machine in the middle; use `verify-full` off a trusted network.
    pub ssl_mode: SslMode,
    /// PEM file of the CA that signed the server's certificate (a private
    /// CA). Unset: the system's store. With `ssl_mode = "require"` a CA
    /// file makes it `verify-ca`, as in libpq.
    pub ca_file: Option<PathBuf>,
    /// Pool size. Keep `max_connections` × replicas under the server's
    /// `max_connections`.
    pub max_connections: u32,
    /// How long a query may wait for a pooled connection before the batch is
    /// retried later.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Whether a service (loader, matcher) applies pending schema migrations
    /// at start. `false` (the default): the schema owner migrates (`etl
    /// migrate` as `etl_owner`, compose's `migrate` service), the service's
    /// own role needs no CREATE on the schema, and at start it only checks
    /// that the schema is current, waiting with backoff (and saying so)
    /// until it is. `true` only where the service's role owns the schema (a
    /// development database). The `etl` tool ignores it: only `etl migrate`
    /// migrates.
    pub migrate: bool,
    /// Not a setting (never read from configuration): the sessions plan no
    /// parallel query; set by [`DatabaseSettings::pool_for_point_reads`].
    #[serde(skip)]
    pub serial_plans: bool,
}

/// `database.ssl_mode`, libpq's `sslmode` values (see
/// [`DatabaseSettings::ssl_mode`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// `database.target_session_attrs`, libpq's values (see
/// [`DatabaseSettings::target_session_attrs`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSessionAttrs {
    #[default]
    ReadWrite,
    Any,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: 5432,
            target_session_attrs: TargetSessionAttrs::ReadWrite,
            username: String::new(),
            password: None,
            database_name: "etl".into(),
            ssl_mode: SslMode::Prefer,
            ca_file: None,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            migrate: false,
            serial_plans: false,
        }
    }
}

impl DatabaseSettings {
    /// The servers `host` lists, in order, with their ports.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        self.host
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| split_port(h, self.port))
            .collect()
    }

    /// Options for the server without a database (to create one): the first
    /// of `host`.
    pub fn without_db(&self) -> PgConnectOptions {
        let (host, port) = self
            .hosts()
            .into_iter()
            .next()
            .unwrap_or_else(|| (self.host.clone(), self.port));
        self.server_options(&host, port)
    }

    /// Options for one server of `host`, without a database.
    fn server_options(&self, host: &str, port: u16) -> PgConnectOptions {
        let mut options = PgConnectOptions::new().host(host).port(port);
        if !self.username.is_empty() {
            options = options.username(&self.username);
        }
        options = options
            .ssl_mode(self.pg_ssl_mode())
            .application_name("medical-etl-bus");
        if let Some(ca_file) = &self.ca_file {
            options = options.ssl_root_cert(ca_file);
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        if self.serial_plans {
            options = options.options([("max_parallel_workers_per_gather", "0")]);
        }
        options
    }

    fn pg_ssl_mode(&self) -> PgSslMode {
        match self.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require if self.ca_file.is_some() => PgSslMode::VerifyCa,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }

    pub fn with_db(&self) -> PgConnectOptions {
        self.without_db().database(&self.database_name)
    }

    /// Options, with the database, for the first server of `host` that
    /// answers and that `target_session_attrs` accepts (the primary; after a
    /// failover, the promoted standby); the first server's if none does, so
    /// that connecting to it says why. For one-shot commands (`etl`): a
    /// service's [`DatabaseSettings::pool`] also follows a failover while it
    /// runs.
    pub async fn fitting_server(&self) -> PgConnectOptions {
        if self.hosts().len() < 2 {
            return self.with_db();
        }
        match failover::first_fit(self).await {
            Some(fit) => {
                // The probe's connection is not the command's.
                let _ = fit.conn.close().await;
                fit.options
            }
            None => self.with_db(),
        }
    }

    /// [`DatabaseSettings::pool`] for a service that answers requests with
    /// a few rows each (the identity service): its sessions never plan a
    /// parallel query. PostgreSQL cannot estimate a lookup in the GIN index
    /// of identifier-key hashes (every hash is all but unique, so `ANALYZE`
    /// keeps no element statistics and the planner assumes 0.5 % of the
    /// table); on a million records it then starts two parallel workers
    /// to read two rows, and the workers' start (about 5 ms) was most of a
    /// lookup's time.
    pub fn pool_for_point_reads(&self) -> PgPool {
        DatabaseSettings {
            serial_plans: true,
            ..self.clone()
        }
        .pool()
    }

    /// A lazy pool: connections are made on first use, so a service starts
    /// (and retries) while PostgreSQL is still down. With
    /// `target_session_attrs = "read-write"` a new connection to a server
    /// that accepts no writes is refused (the pool tries again until
    /// `acquire_timeout`); with several hosts a task keeps the pool on the
    /// one that fits (call from within the Tokio runtime).
    pub fn pool(&self) -> PgPool {
        let mut options = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout);
        if self.target_session_attrs == TargetSessionAttrs::ReadWrite {
            options = options.after_connect(|conn, _| Box::pin(failover::refuse_read_only(conn)));
        }
        if self.hosts().len() < 2 {
            return options.connect_lazy_with(self.with_db());
        }
        failover::pool(self, options)
    }
}

impl DatabaseSettings {
    /// `--check-config`: logs in to every server of `host` (each must
    /// answer), says which is the primary, and with `migrator` whether the
    /// schema is this version's (behind is a failure unless `migrate` is
    /// set: the service would wait for `etl migrate`).
    pub async fn check(
        &self,
        migrator: Option<&sqlx::migrate::Migrator>,
    ) -> anyhow::Result<String> {
        let mut found = Vec::new();
        let mut primary = None;
        for (host, port) in self.hosts() {
            let options = self
                .server_options(&host, port)
                .database(&self.database_name);
            // At login no record is involved: the server's message (login
            // refused, no such database) is safe to show.
            let mut conn =
                sqlx::PgConnection::connect_with(&options)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(db) => {
                            anyhow::anyhow!("{host}:{port}: {}", db.message())
                        }
                        other => anyhow::anyhow!("{host}:{port}: {other}"),
                    })?;
            let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| anyhow::anyhow!("{host}:{port}: {}", describe(&e)))?;
            let _ = conn.close().await;
            found.push(format!(
                "{host}:{port} ({})",
                if standby { "standby" } else { "accepts writes" }
            ));
            if !standby && primary.is_none() {
                primary = Some(options);
            }
        }
        if self.target_session_attrs == TargetSessionAttrs::ReadWrite && primary.is_none() {
            anyhow::bail!("no server of {} accepts writes", self.host);
        }
        let mut summary = format!("database {} on {}", self.database_name, found.join(", "));
        if let (Some(migrator), Some(options)) = (migrator, primary) {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            match prepare_schema(&pool, migrator, false).await {
                Ok(()) => summary.push_str("; schema up to date"),
                Err(SchemaError::Behind { pending }) if self.migrate => summary.push_str(&format!(
                    "; {pending} migration(s) to apply at start (migrate = true)"
                )),
                Err(e) => anyhow::bail!("{summary}: {e}"),
            }
            pool.close().await;
        }
        Ok(summary)
    }
}

/// `host[:port]` (an IPv6 address in brackets when it has a port).
fn split_port(entry: &str, default: u16) -> (String, u16) {
    if let Some((host, port)) = entry.rsplit_once(':') {
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if let (Ok(port), true) = (port.parse(), bracketed || !host.contains(':')) {
            return (host.trim_matches(['[', ']']).to_string(), port);
        }
    }
    (entry.to_string(), default)
}

/// Why the schema is not ready for this version of a service.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// `database.migrate = false` and migrations of this version are not
    /// applied yet: the operator must run `etl migrate`. Worth waiting for.
    #[error("the database schema is behind this version ({pending} migration(s) pending): run `etl migrate` as the schema owner")]
    Behind { pending: usize },
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("reading the applied migrations: {}", describe(.0))]
    Database(#[from] sqlx::Error),
}

impl SchemaError {
    /// Worth retrying later: the schema may be migrated meanwhile, or the
    /// server come back.
    pub fn is_transient(&self) -> bool {
        match self {
            SchemaError::Behind { .. } => true,
            SchemaError::Database(e) => is_transient(e),
            SchemaError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_transient(e),
            SchemaError::Migrate(_) => false,
        }
    }
}

/// Brings the schema to what `migrator` holds (`migrate = true`), or checks
/// that it is there already (`migrate = false`, see
/// [`DatabaseSettings::migrate`]).
pub async fn prepare_schema(
    pool: &PgPool,
    migrator: &sqlx::migrate::Migrator,
    migrate: bool,
) -> Result<(), SchemaError> {
    if migrate {
        migrator.run(pool).await?;
        return Ok(());
    }
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(versions) => versions,
            // No migration table: nothing applied yet.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
    let pending = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .count();
    match pending {
        0 => Ok(()),
        pending => Err(SchemaError::Behind { pending }),
    }
}

/// Waits until `pool` connects, retrying while the failure is transient
/// (the server is down or starting), so that a service started before
/// PostgreSQL waits instead of crash-looping. `Ok(false)`: shut down first.
/// A permanent failure (bad password, unknown database) is returned
/// described (no values).
pub async fn wait_for_connection(
    pool: &PgPool,
    backoff: &crate::backoff::Backoff,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<bool> {
    let connected = crate::retry::retry(
        "connecting to PostgreSQL",
        backoff,
        shutdown,
        is_transient,
        || async move { pool.acquire().await.map(drop) },
    )
    .await;
    match connected {
        Ok(()) => Ok(true),
        Err(crate::retry::GaveUp::Stopped) => Ok(false),
        Err(crate::retry::GaveUp::Permanent(error)) => {
            anyhow::bail!("connecting to PostgreSQL: {}", describe(&error))
        }
    }
}

/// [`prepare_schema`] until it succeeds, waiting with `backoff` while the
/// failure is transient (server down, schema not migrated yet), so a service
/// started before `etl migrate` waits instead of crash-looping. `Ok(false)`:
/// shut down first.
pub async fn wait_for_schema(
    pool: &PgPool,
    migrator: &sqlx::migrate::Migrator,
    migrate: bool,
    backoff: &crate::backoff::Backoff,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<bool, SchemaError> {
    let prepared = crate::retry::retry(
        "database schema check",
        backoff,
        shutdown,
        SchemaError::is_transient,
        || prepare_schema(pool, migrator, migrate),
    )
    .await;
    match prepared {
        Ok(()) => Ok(true),
        Err(crate::retry::GaveUp::Stopped) => Ok(false),
        Err(crate::retry::GaveUp::Permanent(error)) => Err(error),
    }
}

/// A database error without values: SQLSTATE, constraint, table — what may
/// go into a log line or an error message (a driver's own message can quote
/// the data).
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!(
            "database error {} (constraint {}, table {})",
            db.code().as_deref().unwrap_or("?"),
            db.constraint().unwrap_or("-"),
            db.table().unwrap_or("-"),
        ),
        // A refused certificate is the operator's to fix: say why (names
        // of hosts and CAs, never data).
        sqlx::Error::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(tls) => format!("TLS: {tls}"),
            None => format!("I/O error: {}", e.kind()),
        },
        sqlx::Error::PoolTimedOut => "pool timed out".into(),
        sqlx::Error::ColumnDecode { index, .. } => format!("column {index} does not decode"),
        other => {
            // Other sqlx errors describe the driver, not the data.
            let s = other.to_string();
            s.chars().take(200).collect()
        }
    }
}

/// Errors worth retrying: the server or network is down or busy, or the
/// transaction lost a race (deadlock, serialization). Anything else is a
/// property of the data or the schema and will fail again.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATEs of a server that is going away, overloaded, or of a lost race,
/// and a missing privilege.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")            // connection exception
        || code.starts_with("53")     // insufficient resources
        || code == "40001"            // serialization failure
        || code == "40P01"            // deadlock detected
        || code == "55P03"            // lock not available
        || code == "57P01"            // admin shutdown
        || code == "57P02"            // crash shutdown
        || code == "57P03"            // cannot connect now (starting up)
        || code == "58000"            // system error
        || code == "58030" // io error
        // A write on a server that accepts none: a standby, or a primary
        // being demoted, during a failover. The pool moves to the new
        // primary; the work waits for it.
        || code == "25006" // read-only SQL transaction
        // A grant missing (roles.sql not run after an upgrade's migrations):
        // the operator's to fix, never the record's fault, so the work waits
        // for it instead of being dead-lettered.
        || code == "42501" // insufficient privilege
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_modes_are_spelled_as_in_libpq() {
        let parsed: DatabaseSettings = config::Config::builder()
            .add_source(config::File::from_str(
                "ssl_mode = \"verify-full\"\nca_file = \"/etc/etl/tls/ca.crt\"\n",
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(parsed.ssl_mode, SslMode::VerifyFull);
        assert!(matches!(parsed.pg_ssl_mode(), PgSslMode::VerifyFull));
        assert!(matches!(
            DatabaseSettings::default().pg_ssl_mode(),
            PgSslMode::Prefer
        ));
        // As libpq: `require` with a CA file verifies the chain.
        let require = DatabaseSettings {
            ssl_mode: SslMode::Require,
            ..parsed
        };
        assert!(matches!(require.pg_ssl_mode(), PgSslMode::VerifyCa));
    }

    #[test]
    fn hosts_are_listed_in_order_with_their_ports() {
        let settings = DatabaseSettings {
            host: "pg-a, pg-b:5433,10.0.0.7,[::1]:5434,::1".into(),
            port: 6432,
            ..Default::default()
        };
        let hosts = settings.hosts();
        let expected = [
            ("pg-a", 6432),
            ("pg-b", 5433),
            ("10.0.0.7", 6432),
            ("::1", 5434),
            ("::1", 6432),
        ];
        assert_eq!(hosts.len(), expected.len());
        for ((host, port), (want_host, want_port)) in hosts.iter().zip(expected) {
            assert_eq!((host.as_str(), *port), (want_host, want_port));
        }
        assert_eq!(settings.without_db().get_host(), "pg-a");
        let parsed: DatabaseSettings = config::Config::builder()
            .add_source(config::File::from_str(
                "target_session_attrs = \"any\"",
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(parsed.target_session_attrs, TargetSessionAttrs::Any);
    }

    #[test]
    fn password_is_not_printed() {
        let settings = DatabaseSettings {
            password: Some(SecretString::from("hunter2")),
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn classifies_sqlstates() {
        assert!(is_transient_sqlstate("08006"));
        assert!(is_transient_sqlstate("40P01"));
        assert!(is_transient_sqlstate("57P01"));
        assert!(is_transient_sqlstate("42501"));
        assert!(is_transient_sqlstate("25006"), "read-only: a failover");
        assert!(!is_transient_sqlstate("23505"));
        assert!(!is_transient_sqlstate("22P02"));
    }
}
