use std::path::PathBuf;

use clap::Parser;
use etl_runtime::{check, service};

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
        check::database_service::<identity::Settings>(args.config.as_deref(), |s| &s.database)
            .await;
    }
    let started = service::start::<identity::Settings>("identity", args.config.as_deref()).await?;
    let served = match identity::start(started.settings, started.shutdown).await {
        Ok(Some((_, task))) => task.await.map_err(anyhow::Error::from),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    started.finisher.finish(served).await?;
    tracing::info!("identity stopped");
    Ok(())
}
