use std::path::{Path, PathBuf};

use clap::Parser;
use etl_runtime::check::Checks;
use etl_runtime::service;

/// Loads patient records from the NATS JetStream bus into PostgreSQL.
///
/// Every setting comes from the optional TOML file, overridden by environment
/// variables `ETL__<SECTION>__<KEY>` (e.g. `ETL__DATABASE__HOST`). Run several
/// instances with the same `loader.consumer` to share the work.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); see deploy/config/loader.toml.
    #[arg(long, short, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: the settings (unknown keys
    /// refused), NATS and the stream, PostgreSQL and its schema; one line
    /// per check, status 0 if all passed, 1 if not.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        check_config(args.config.as_deref()).await;
    }
    let started = service::start::<loader::Settings>("loader", args.config.as_deref()).await?;
    let summary = loader::run(started.settings, started.shutdown).await;
    let summary = started.finisher.finish(summary).await?;
    tracing::info!(
        inserted = summary.written.inserted,
        updated = summary.written.updated,
        deleted = summary.written.deleted,
        unchanged = summary.written.unchanged,
        dead_lettered = summary.written.dead_lettered,
        batches = summary.batches,
        retried_batches = summary.retried_batches,
        "loader stopped"
    );
    Ok(())
}

async fn check_config(path: Option<&Path>) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = etl_runtime::check::settings::<loader::Settings>(&mut checks, path) {
        checks
            .run("nats", settings.nats.check(&settings.stream.name))
            .await;
        checks.postgresql(&settings.database).await;
    }
    checks.exit()
}
