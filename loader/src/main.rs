use std::path::{Path, PathBuf};

use clap::Parser;
use etl_runtime::check::Checks;

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
    let loaded = etl_runtime::settings::load_reporting::<loader::Settings>(args.config.as_deref())?;
    let telemetry = etl_runtime::telemetry::init_with_traces(
        &loaded.settings.log,
        &loaded.settings.telemetry,
        "loader",
    )?;
    loaded.log_skipped();
    let settings = loaded.settings;
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

async fn check_config(path: Option<&Path>) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = etl_runtime::check::settings::<loader::Settings>(&mut checks, path) {
        checks
            .run("nats", settings.nats.check(&settings.stream.name))
            .await;
        checks
            .run(
                "postgresql",
                settings
                    .database
                    .check(Some(&etl_runtime::database::MIGRATOR)),
            )
            .await;
    }
    checks.exit()
}
