//! The personal-data access log (table `personal_data_access`,
//! migrations/20261206200001_personal_data_access.sql). Every command that
//! prints personal data does so only with `--show-personal-data`, and first
//! records the view here: who (the database user, which the server sets,
//! and the OS user; the API client for the identity service), when, and
//! what by identifiers only (a person id, `source:source_id`, a dead letter
//! id), never a value. If the row cannot
//! be written, nothing is shown. `etl access-log list` shows the log to the
//! schema owner (the only role that may read it).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::Settings;

use etl_runtime::access_log::is_denied;
pub use etl_runtime::access_log::View;

/// A view by `etl` (no API client).
pub fn view(command: &str, subject: String, records: Vec<String>) -> View {
    View {
        command: command.to_string(),
        subject,
        records,
        client: None,
    }
}

/// Writes the view to the access log; an error means nothing may be shown.
pub async fn record(pool: &PgPool, view: &View) -> anyhow::Result<()> {
    match etl_runtime::access_log::record(pool, view).await {
        Ok(()) => Ok(()),
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
    /// The identity service's API client, for its views.
    pub client: Option<String>,
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
                records, client
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
            "{:>6} {} db user {} os user {}{} from {}: {} {} — records {}",
            a.id,
            a.at.to_rfc3339(),
            a.db_user.escape_debug(),
            a.os_user.escape_debug(),
            a.client
                .as_deref()
                .map(|c| format!(" client {}", c.escape_debug()))
                .unwrap_or_default(),
            a.client_addr.as_deref().unwrap_or("local socket"),
            a.command.escape_debug(),
            a.subject.escape_debug(),
            a.records.join(", ").escape_debug()
        );
    }
    println!("{} views", rows.len());
    Ok(())
}
