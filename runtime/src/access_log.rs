//! The personal-data access log (table `personal_data_access`,
//! migrations/20261206200001_personal_data_access.sql): one row per view
//! of personal data, written before the data is shown. It names who (the
//! database user, which the server sets; the OS user; the identity
//! service's API client) and what by identifiers only (a person id,
//! `source:source_id`, a dead letter id), never a value. Written by `etl`
//! (`--show-personal-data`) and by the identity service.

use sqlx::PgPool;

/// One view of personal data, before it is shown.
#[derive(Debug, Clone)]
pub struct View {
    /// The command or request, e.g. `persons show`, `identity GET /v1/persons/{id}`.
    pub command: String,
    /// What is viewed, by identifier: `person 123`, `dead letter 45`.
    pub subject: String,
    /// The records shown, as `source:source_id`.
    pub records: Vec<String>,
    /// The identity service's API client; `None` for `etl`.
    pub client: Option<String>,
}

/// Writes the view to the access log; an error means nothing may be shown.
pub async fn record(pool: &PgPool, view: &View) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO personal_data_access (os_user, command, subject, records, client)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(os_user())
    .bind(&view.command)
    .bind(&view.subject)
    .bind(&view.records)
    .bind(&view.client)
    .execute(pool)
    .await
    .map(drop)
}

/// The operating-system user running this process, as its environment
/// names it; control characters dropped (`etl access-log list` prints it).
pub fn os_user() -> String {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Whether PostgreSQL refused for want of a privilege.
pub fn is_denied(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("42501"))
}
