use std::path::PathBuf;

use clap::Parser;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings: identity::Settings = etl_runtime::settings::load(args.config.as_deref())?;
    let telemetry =
        etl_runtime::telemetry::init_with_traces(&settings.log, &settings.telemetry, "identity")?;
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
