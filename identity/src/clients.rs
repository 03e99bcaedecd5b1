//! API clients (table `identity_clients`): added with a new key (shown
//! once, stored as its SHA-256), listed, revoked. `etl identity client …`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::{key_hash, new_key, Scope};

/// A client as listed (never its key).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Client {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown scope {0:?}: use ids:read, personal:read, decisions:write")]
    UnknownScope(String),
    #[error("a client needs at least one scope")]
    NoScope,
    #[error("client name {0:?}: 1-64 of A-Z a-z 0-9 _ . -")]
    BadName(String),
    #[error("a client named {0:?} exists already (revoked ones keep their name)")]
    Exists(String),
    #[error("no active client named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Adds a client with `scopes`; gives back its key (shown once: only its
/// hash is kept).
pub async fn add(pool: &PgPool, name: &str, scopes: &[String]) -> Result<String, ClientError> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_name {
        return Err(ClientError::BadName(name.into()));
    }
    if scopes.is_empty() {
        return Err(ClientError::NoScope);
    }
    for s in scopes {
        Scope::parse(s).ok_or_else(|| ClientError::UnknownScope(s.clone()))?;
    }
    let key = new_key();
    let inserted = sqlx::query(
        "INSERT INTO identity_clients (name, key_hash, scopes) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(key_hash(&key))
    .bind(scopes)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ClientError::Exists(name.into()));
    }
    Ok(key)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Client>, ClientError> {
    Ok(sqlx::query_as(
        "SELECT id, name, scopes, created_at, revoked_at FROM identity_clients ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes a client: its key stops working at once.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<(), ClientError> {
    let n = sqlx::query(
        "UPDATE identity_clients SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ClientError::Unknown(name.into()));
    }
    Ok(())
}
