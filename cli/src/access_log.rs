//! The personal-data access log (table `personal_data_access`,
//! migrations/20261206200001_personal_data_access.sql). Every command that
//! prints personal data does so only with `--show-personal-data`, and first
//! records the view here: who (the database user, which the server sets,
//! and the OS user), when, and what by identifiers only (a person id,
//! `source:source_id`, a dead letter id), never a value. If the row cannot
//! be written, nothing is shown. `etl access-log list` shows the log to the
//! schema owner (the only role that may read it).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::Settings;

/// One view of personal data, before it is printed.
pub struct View {
    /// The command, e.g. `persons show`.
    pub command: &'static str,
    /// What is viewed, by identifier: `person 123`, `dead letter 45`.
    pub subject: String,
    /// The records shown, as `source:source_id`.
    pub records: Vec<String>,
}

/// Writes the view to the access log; an error means nothing may be shown.
pub async fn record(pool: &PgPool, view: &View) -> anyhow::Result<()> {
    let written = sqlx::query(
        "INSERT INTO personal_data_access (os_user, command, subject, records)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(os_user())
    .bind(view.command)
    .bind(&view.subject)
    .bind(&view.records)
    .execute(pool)
    .await;
    match written {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!(
            "the view could not be recorded in the personal-data access log ({}{}), so nothing \
             is shown",
            etl_runtime::database::describe(&e),
            if is_denied(&e) {
                "; the role needs INSERT on personal_data_access: etl_operator of \
                 deploy/postgres/roles.sql has it"
            } else {
                ""
            }
        ),
    }
}

/// The operating-system user running `etl`, as its environment names it;
/// control characters dropped (it is printed by `etl access-log list`).
pub fn os_user() -> String {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn is_denied(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("42501"))
}

#[derive(clap::Subcommand)]
pub enum AccessLogCommand {
    /// Who viewed personal data, newest first (the schema owner only).
    List {
        /// Only views at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only views that showed this record (`source:source_id`).
        #[arg(long)]
        record: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Access {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub db_user: String,
    pub os_user: String,
    pub client_addr: Option<String>,
    pub command: String,
    pub subject: String,
    pub records: Vec<String>,
}

pub async fn run(settings: &Settings, command: AccessLogCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let AccessLogCommand::List {
        since,
        record,
        limit,
        json,
    } = command;
    let rows: Vec<Access> = sqlx::query_as(
        "SELECT id, at, db_user, os_user, host(client_addr) AS client_addr, command, subject,
                records
         FROM personal_data_access
         WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::text IS NULL OR $2 = ANY(records))
         ORDER BY id DESC LIMIT $3",
    )
    .bind(since)
    .bind(&record)
    .bind(limit)
    .fetch_all(&pool)
    .await
    .map_err(|e| {
        if is_denied(&e) {
            anyhow::anyhow!(
                "only the schema owner (etl_owner) may read the personal-data access log"
            )
        } else {
            anyhow::anyhow!(
                "reading the access log: {}",
                etl_runtime::database::describe(&e)
            )
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for a in &rows {
        println!(
            "{:>6} {} db user {} os user {} from {}: {} {} — records {}",
            a.id,
            a.at.to_rfc3339(),
            a.db_user.escape_debug(),
            a.os_user.escape_debug(),
            a.client_addr.as_deref().unwrap_or("local socket"),
            a.command.escape_debug(),
            a.subject.escape_debug(),
            a.records.join(", ").escape_debug()
        );
    }
    println!("{} views", rows.len());
    Ok(())
}
