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
    let telemetry =
        etl_runtime::telemetry::init_with_traces(&settings.log, &settings.telemetry, "loader")?;
    let shutdown = etl_runtime::shutdown::on_signals_with_deadline(&settings.shutdown);
    etl_runtime::observe::start(&settings.http, &shutdown).await?;
    let shutdown_settings = settings.shutdown.clone();
    let summary = loader::run(settings, shutdown).await;
    telemetry
        .shutdown(etl_runtime::shutdown::time_left(&shutdown_settings))
        .await;
    let summary = summary?;
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
