//! PostgreSQL connection settings and pool.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Never printed: `Debug` shows `[REDACTED]`.
    pub password: Option<SecretString>,
    pub database_name: String,
    /// Require TLS to the server.
    pub require_ssl: bool,
    /// Pool size. Keep `max_connections` × replicas under the server's
    /// `max_connections`.
    pub max_connections: u32,
    /// How long a query may wait for a pooled connection before the batch is
    /// retried later.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: 5432,
            username: "postgres".into(),
            password: None,
            database_name: "etl".into(),
            require_ssl: false,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseSettings {
    /// Options for the server without a database (to create one).
    pub fn without_db(&self) -> PgConnectOptions {
        let mut options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .ssl_mode(if self.require_ssl {
                PgSslMode::Require
            } else {
                PgSslMode::Prefer
            })
            .application_name("medical-etl-bus");
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        options
    }

    pub fn with_db(&self) -> PgConnectOptions {
        self.without_db().database(&self.database_name)
    }

    /// A lazy pool: connections are made on first use, so a service starts
    /// (and retries) while PostgreSQL is still down.
    pub fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.with_db())
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

/// SQLSTATEs of a server that is going away, overloaded, or of a lost race.
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!is_transient_sqlstate("23505"));
        assert!(!is_transient_sqlstate("22P02"));
    }
}
