//! `etl sources`: the source systems the loader accepts (table `sources`).
//! A record of a source not registered here is set aside by the loader as a
//! dead letter `unknown_source`; after `etl sources register NAME`, `etl dlq
//! retry --all --reason unknown_source` loads what was set aside.

use clap::Subcommand;

use crate::text::printable;
use crate::Settings;

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Accept records of source NAME (subject `<prefix>.NAME`); a no-op if
    /// it is registered already.
    Register {
        /// 1–32 characters of a-z, 0-9, `_` and `-`.
        name: String,
        /// What the source is (the hospital system, its site).
        #[arg(long)]
        description: Option<String>,
    },
    /// The registered sources.
    List,
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    name: String,
    his_id: Option<i16>,
    description: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn run(settings: &Settings, command: SourcesCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    match command {
        SourcesCommand::Register { name, description } => {
            anyhow::ensure!(
                proto::bus::is_valid_source_name(&name),
                "invalid source name: 1-32 characters of a-z, 0-9, _ and -"
            );
            let added = sqlx::query(
                "INSERT INTO sources (name, description) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&name)
            .bind(&description)
            .execute(&pool)
            .await?
            .rows_affected();
            if added == 1 {
                println!("source {name} registered: the loader accepts its records");
            } else {
                println!("source {name} was registered already");
            }
        }
        SourcesCommand::List => {
            let rows: Vec<SourceRow> = sqlx::query_as(
                "SELECT name, his_id, description, created_at FROM sources ORDER BY name",
            )
            .fetch_all(&pool)
            .await?;
            println!(
                "{:<32} {:>6} {:<20} description",
                "name", "his_id", "registered"
            );
            for r in &rows {
                println!(
                    "{:<32} {:>6} {:<20} {}",
                    printable(&r.name),
                    r.his_id.map(|h| h.to_string()).unwrap_or_default(),
                    r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    printable(r.description.as_deref().unwrap_or(""))
                );
            }
            println!("{} sources", rows.len());
        }
    }
    Ok(())
}

/// Whether `name` is registered (for `etl import`, before it publishes).
pub async fn is_registered(settings: &Settings, name: &str) -> anyhow::Result<bool> {
    let pool = crate::db::connect(settings).await?;
    let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sources WHERE name = $1)")
        .bind(name)
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(found)
}
