//! Steward accounts (table `console_users`): added with a role and a
//! password (kept as an argon2id hash only), listed, disabled, given a new
//! password. `etl console user …` and the administrators' page.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::i18n::Lang;

/// The signed-in steward of a request.
#[derive(Debug, Clone)]
pub struct Steward {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub csrf: String,
    pub lang: Lang,
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and decides.
    Steward,
    /// Reads only.
    Viewer,
    /// Decides and manages accounts.
    Administrator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "steward" => Some(Role::Steward),
            "viewer" => Some(Role::Viewer),
            "administrator" => Some(Role::Administrator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Steward => "steward",
            Role::Viewer => "viewer",
            Role::Administrator => "administrator",
        }
    }

    pub fn can_decide(self) -> bool {
        matches!(self, Role::Steward | Role::Administrator)
    }

    pub fn can_manage(self) -> bool {
        self == Role::Administrator
    }
}

/// An account as listed (never its password hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account name {0:?}: 1-64 of A-Z a-z 0-9 _ . -")]
    BadName(String),
    #[error("unknown role {0:?}: use steward, viewer or administrator")]
    UnknownRole(String),
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("an account named {0:?} exists already (disabled ones keep their name)")]
    Exists(String),
    #[error("no active account named {0:?}")]
    Unknown(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub const MIN_PASSWORD_CHARS: usize = 10;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::ShortPassword);
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash (slow by design: call it off
/// the async threads).
pub fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

pub async fn add(
    pool: &PgPool,
    name: &str,
    role: &str,
    password: &str,
) -> Result<(), AccountError> {
    if !valid_name(name) {
        return Err(AccountError::BadName(name.into()));
    }
    let role = Role::parse(role).ok_or_else(|| AccountError::UnknownRole(role.into()))?;
    let hash = hash_password(password)?;
    let inserted = sqlx::query(
        "INSERT INTO console_users (name, role, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AccountError::Exists(name.into()));
    }
    Ok(())
}

pub async fn list(pool: &PgPool) -> Result<Vec<Account>, AccountError> {
    Ok(sqlx::query_as(
        "SELECT id, name, role, created_at, disabled_at FROM console_users ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Disables an account and ends its sessions at once.
pub async fn disable(pool: &PgPool, name: &str) -> Result<(), AccountError> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE console_users SET disabled_at = now() WHERE name = $1 AND disabled_at IS NULL
         RETURNING id",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    end_sessions(tx, id, name).await
}

/// Sets a new password and ends the account's sessions.
pub async fn set_password(pool: &PgPool, name: &str, password: &str) -> Result<(), AccountError> {
    let hash = hash_password(password)?;
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE console_users SET password_hash = $2 WHERE name = $1 AND disabled_at IS NULL
         RETURNING id",
    )
    .bind(name)
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    end_sessions(tx, id, name).await
}

/// After an `UPDATE … RETURNING id` of an active account in `tx`: ends that
/// account's sessions and commits, or reports `name` unknown (or disabled)
/// when the update touched no row.
async fn end_sessions(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    id: Option<i64>,
    name: &str,
) -> Result<(), AccountError> {
    let id = id.ok_or_else(|| AccountError::Unknown(name.into()))?;
    sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A stored account that may sign in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub password_hash: String,
}

pub async fn credentials(pool: &PgPool, name: &str) -> sqlx::Result<Option<Credentials>> {
    sqlx::query_as(
        "SELECT id, name, role, password_hash FROM console_users
         WHERE name = $1 AND disabled_at IS NULL",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}
