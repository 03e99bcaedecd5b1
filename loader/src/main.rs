use std::path::PathBuf;

use clap::Parser;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings: loader::Settings = etl_runtime::settings::load(args.config.as_deref())?;
    etl_runtime::telemetry::init(&settings.log);
    let shutdown = etl_runtime::shutdown::on_signals_with_deadline(&settings.shutdown);
    etl_runtime::observe::start(&settings.http, &shutdown).await?;
    let summary = loader::run(settings, shutdown).await?;
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
