//! The Firebird side: connections, transactions, and running blocking
//! rsfbclient calls off the async runtime.
//!
//! rsfbclient is blocking and a connection is used through `&mut self`, so a
//! [`Source`] owns at most one connection and lends it to one blocking call
//! at a time ([`Source::call`], on `spawn_blocking`). Any error drops the
//! connection: after a decode error rsfbclient's connection is out of sync
//! (see `extractors/firebird-notes.md`), and after an I/O error or a timeout
//! it is useless anyway. The next call connects again.
//!
//! Every read runs in its own read-only, read-committed record-version,
//! no-wait transaction (the connection's default transaction): the extractor
//! never waits for a hospital user's lock, never makes one wait, and never
//! holds a long transaction open (which in Firebird would hold back garbage
//! collection for everyone).

use std::time::Duration;

use rsfbclient::prelude::*;
use rsfbclient::{Connection, FbError, RustFbClient};
use secrecy::ExposeSecret;

use crate::settings::{Charset, DatabaseSettings};

pub type FbConnection = Connection<RustFbClient>;

/// Reads: read-only, read committed with record versions (the last committed
/// version of a row, never waiting for a writer), no wait.
pub fn read_only() -> TransactionConfiguration {
    TransactionConfiguration {
        data_access: TrDataAccessMode::ReadOnly,
        isolation: TrIsolationLevel::ReadCommited(TrRecordVersion::RecordVersion),
        lock_resolution: TrLockResolution::NoWait,
    }
}

/// The only writes: processed flags of the change log, and the sample
/// database. No wait: a conflict fails at once and is retried next pass.
pub fn read_write() -> TransactionConfiguration {
    TransactionConfiguration {
        data_access: TrDataAccessMode::ReadWrite,
        isolation: TrIsolationLevel::ReadCommited(TrRecordVersion::RecordVersion),
        lock_resolution: TrLockResolution::NoWait,
    }
}

pub fn rsfb_charset(charset: Charset) -> rsfbclient::Charset {
    match charset {
        Charset::Win1251 => rsfbclient::charset::WIN_1251,
        Charset::Utf8 => rsfbclient::charset::UTF_8,
        Charset::None => rsfbclient::Charset {
            on_firebird: "NONE",
            on_rust: None,
        },
    }
}

/// A connection builder for `db` (the password stays inside the builder).
pub fn builder(db: &DatabaseSettings) -> rsfbclient::builders::PureRustConnectionBuilder {
    let mut b = rsfbclient::builder_pure_rust();
    b.host(db.host.as_str())
        .port(db.port)
        .db_name(db.database.as_str())
        .user(db.user.as_str())
        .pass(db.password.expose_secret())
        .charset(rsfb_charset(db.charset))
        .transaction(read_only());
    b
}

/// Why a Firebird step failed, as safe to log: no value of a row, no
/// password. Every kind but [`Schema`](SourceError::Schema) is retried with
/// backoff by the caller (a daemon must not crash-loop); the kind is what
/// logs and metrics report.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A table or column the configuration names does not exist (SQLCODE
    /// -204 or -206): waiting cannot cure it.
    #[error(
        "Firebird error {code}: {message} (a table or column named in the \
         configuration does not exist in the database)"
    )]
    Schema { code: i32, message: String },
    #[error("Firebird is unreachable: {0}")]
    Unreachable(String),
    #[error("Firebird refused the login (check user, password and Srp authentication)")]
    LoginRefused,
    #[error("Firebird did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Firebird error {code}: {message}")]
    Sql { code: i32, message: String },
    #[error("Firebird client error: {0}")]
    Client(String),
}

impl SourceError {
    /// Stable code for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Unreachable(_) => "unreachable",
            SourceError::LoginRefused => "login_refused",
            SourceError::Timeout(_) => "timeout",
            SourceError::Schema { .. } => "schema",
            SourceError::Sql { .. } => "sql",
            SourceError::Client(_) => "client",
        }
    }
}

/// "Table unknown" (also procedure, generator or domain unknown).
const SQLCODE_UNKNOWN_TABLE: i32 = -204;
/// "Column unknown".
const SQLCODE_UNKNOWN_COLUMN: i32 = -206;

impl SourceError {
    /// Not cured by waiting: the configuration must change.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SourceError::Schema { .. })
    }
}

impl From<FbError> for SourceError {
    fn from(e: FbError) -> Self {
        match e {
            FbError::Io(io) => SourceError::Unreachable(io.kind().to_string()),
            FbError::Sql { msg, code } => {
                let lower = msg.to_ascii_lowercase();
                if lower.contains("user name and password") || lower.contains("login") {
                    SourceError::LoginRefused
                } else if matches!(code, SQLCODE_UNKNOWN_TABLE | SQLCODE_UNKNOWN_COLUMN) {
                    SourceError::Schema {
                        code,
                        message: redact_quoted(&msg),
                    }
                } else {
                    SourceError::Sql {
                        code,
                        message: redact_quoted(&msg),
                    }
                }
            }
            FbError::Other(msg) => SourceError::Client(redact_quoted(&msg)),
        }
    }
}

/// Firebird quotes offending values in some messages (`conversion error
/// from string "…"`): keep the message's shape, drop what was quoted.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            out.push('"');
            if !inside {
                out.push('…');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out.replace('\n', " ")
}

/// One database's connection, lent to one blocking call at a time.
pub struct Source {
    pub db: DatabaseSettings,
    connect_timeout: Duration,
    query_timeout: Duration,
    conn: Option<FbConnection>,
}

impl Source {
    pub fn new(db: DatabaseSettings, connect_timeout: Duration, query_timeout: Duration) -> Self {
        Source {
            db,
            connect_timeout,
            query_timeout,
            conn: None,
        }
    }

    /// Runs `f` with the connection (connecting first if there is none) on
    /// a blocking thread. On an error or a timeout the connection is dropped
    /// (a timed-out call keeps it until it ends, then drops it).
    pub async fn call<T, F>(&mut self, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&mut FbConnection) -> Result<T, FbError> + Send + 'static,
    {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let result = f(&mut conn);
            (conn, result)
        });
        match tokio::time::timeout(self.query_timeout, task).await {
            Err(_) => Err(SourceError::Timeout(self.query_timeout)),
            Ok(Err(join)) => Err(SourceError::Client(format!("blocking task failed: {join}"))),
            Ok(Ok((conn, Ok(value)))) => {
                self.conn = Some(conn);
                Ok(value)
            }
            Ok(Ok((conn, Err(e)))) => {
                drop_off_runtime(conn);
                Err(e.into())
            }
        }
    }

    async fn connect(&self) -> Result<FbConnection, SourceError> {
        let builder = builder(&self.db);
        let task = tokio::task::spawn_blocking(move || builder.connect());
        match tokio::time::timeout(self.connect_timeout, task).await {
            Err(_) => Err(SourceError::Timeout(self.connect_timeout)),
            Ok(Err(join)) => Err(SourceError::Client(format!("blocking task failed: {join}"))),
            Ok(Ok(result)) => Ok(result?),
        }
    }

    /// Drops the connection (the next call connects again).
    pub fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop_off_runtime(conn);
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Drops a connection on a blocking thread. rsfbclient's drop talks to the
/// server (frees the cached statements, ends the transaction, detaches) and
/// waits for its answers without a timeout: on a runtime thread, a server
/// that is slow or gone would stall every task of that thread — the
/// health endpoint's too. Outside a runtime it is dropped here.
fn drop_off_runtime(conn: FbConnection) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(conn));
        }
        Err(_) => drop(conn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_no_quoted_value() {
        let e: SourceError = FbError::Sql {
            msg: "conversion error from string \"Иванов\"".into(),
            code: -413,
        }
        .into();
        assert!(!e.to_string().contains("Иванов"), "{e}");
        let e: SourceError = FbError::Sql {
            msg: "Your user name and password are not defined. Ask your database administrator to set up a Firebird login.".into(),
            code: -1,
        }
        .into();
        assert_eq!(e.kind(), "login_refused");
    }
}
