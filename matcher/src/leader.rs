//! A session-level advisory lock held on a connection of its own: which
//! instance does a job that one instance at a time must do (the matcher's
//! batches, the event relay). Its holder dies with its session.

use sqlx::{Connection as _, PgConnection, PgPool};

use etl_runtime::database::describe;

/// One instance's hold on a session-level advisory lock (`key`): the
/// matcher's `service::LEADER_LOCK`, the event relay's `events::RELAY_LOCK`.
pub struct Leadership {
    key: i64,
    /// What holds it, for the logs.
    what: &'static str,
    /// The connection that holds (or tries to take) the lock.
    conn: Option<PgConnection>,
    leading: bool,
    /// Became the active instance since the last look.
    became: bool,
}

impl Leadership {
    pub fn new(key: i64, what: &'static str) -> Leadership {
        Leadership {
            key,
            what,
            conn: None,
            leading: false,
            became: false,
        }
    }

    /// Whether it became the active instance since the last call.
    pub fn became(&mut self) -> bool {
        std::mem::take(&mut self.became)
    }

    /// Whether this instance is the active one: keeps the lock while its
    /// connection is alive, else tries to take it.
    pub async fn hold(&mut self, pool: &PgPool) -> bool {
        if self.conn.is_none() {
            self.conn = PgConnection::connect_with(&pool.connect_options())
                .await
                .ok();
        }
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let alive = if self.leading {
            conn.ping().await.map(|()| true)
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.key)
                .fetch_one(&mut *conn)
                .await
        };
        match alive {
            Ok(leading) => {
                if leading && !self.leading {
                    tracing::info!(what = self.what, "this instance is the active one");
                    self.became = true;
                }
                self.leading = leading;
            }
            Err(error) => {
                if self.leading {
                    tracing::warn!(what = self.what, error = %describe(&error), "lost the connection holding the leader lock");
                }
                self.conn = None;
                self.leading = false;
            }
        }
        self.leading
    }

    pub async fn release(&mut self) {
        self.leading = false;
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}
