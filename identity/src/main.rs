use std::path::{Path, PathBuf};

use clap::Parser;
use etl_runtime::check::Checks;

/// The patient index other systems ask: persons by id, record or
/// identifier, cross-references, `$match`, decisions; JSON under `/v1`,
/// FHIR R4 under `/fhir`, OpenAPI at `/openapi.json`.
///
/// Every setting comes from the optional TOML file, overridden by environment
/// variables `ETL__<SECTION>__<KEY>` (e.g. `ETL__API__LISTEN`). Any number of
/// instances may run side by side (they keep no state but rate buckets).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); see deploy/config/identity.toml.
    #[arg(long, short, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: the settings (unknown keys
    /// refused), PostgreSQL and its schema; one line per check, status 0
    /// if all passed, 1 if not.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        check_config(args.config.as_deref()).await;
    }
    let loaded =
        etl_runtime::settings::load_reporting::<identity::Settings>(args.config.as_deref())?;
    let telemetry = etl_runtime::telemetry::init_with_traces(
        &loaded.settings.log,
        &loaded.settings.telemetry,
        "identity",
    )?;
    loaded.log_skipped();
    let settings = loaded.settings;
    let shutdown = etl_runtime::shutdown::on_signals_with_deadline(&settings.shutdown);
    etl_runtime::observe::start(&settings.http, &shutdown).await?;
    let shutdown_settings = settings.shutdown.clone();
    let served = identity::start(settings, shutdown.clone()).await;
    let result = match served {
        Ok(Some((_, task))) => {
            let _ = task.await;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    telemetry
        .shutdown(etl_runtime::shutdown::time_left(&shutdown_settings))
        .await;
    result?;
    tracing::info!("identity stopped");
    Ok(())
}

async fn check_config(path: Option<&Path>) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = etl_runtime::check::settings::<identity::Settings>(&mut checks, path) {
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
