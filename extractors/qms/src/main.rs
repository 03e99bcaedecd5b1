use std::path::{Path, PathBuf};

use clap::Parser;
use etl_runtime::check::Checks;
use etl_runtime::service;
use qms_extractor::{Extractor, Mode, RunOptions, Settings};

/// Reads qMS's full patient export over HTTP and publishes what changed
/// (and deletions) to the NATS JetStream bus.
///
/// Every setting comes from the optional TOML file, overridden by
/// environment variables `ETL__<SECTION>__<KEY>` (e.g. `ETL__QMS__URL`);
/// see deploy/config/qms-extractor.toml.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Run one sync and exit: status 1 if it failed, 3 if the deletion brake
    /// holds its deletions (`etl brake list`). Default: a daemon that syncs
    /// every `qms.interval`.
    #[arg(long)]
    no_daemon: bool,
    /// Send the deletions the deletion brake is holding back: the operator
    /// has checked that the records really were deleted in qMS (the same as
    /// `etl brake release qms` before the run). Applies until one sync of
    /// this process completes.
    #[arg(long)]
    confirm_deletions: bool,
    /// Forget what was last published and publish every record again (after
    /// the stream or the database was recreated).
    #[arg(long)]
    reset_state: bool,
    /// Check the configuration and exit: the settings (unknown keys
    /// refused), NATS and the stream, the qMS export URL (status and
    /// headers only); one line per check, status 0 if all passed, 1 if not.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        check_config(args.config.as_deref()).await;
    }
    let started = service::start::<Settings>("qms-extractor", args.config.as_deref()).await?;
    let mode = if args.no_daemon {
        Mode::Once
    } else {
        Mode::Daemon
    };
    let options = RunOptions {
        confirm_deletions: args.confirm_deletions,
        reset_state: args.reset_state,
    };
    let result = qms_extractor::run(started.settings, mode, options, started.shutdown).await;
    match started.finisher.finish(result).await {
        Err(e) => {
            tracing::error!(error = %e, "qms-extractor stopped");
            std::process::exit(1);
        }
        Ok(Some(report)) if report.withheld_deletes > 0 => {
            // A one-shot run (cron) must notice.
            tracing::error!(
                withheld_deletes = report.withheld_deletes,
                "the deletion brake holds deletions; exiting with status 3"
            );
            std::process::exit(3);
        }
        Ok(_) => Ok(()),
    }
}

async fn check_config(path: Option<&Path>) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = etl_runtime::check::settings::<Settings>(&mut checks, path) {
        let valid = Extractor::check(&settings).map(|_| {
            format!(
                "source {}, encoding {}",
                settings.qms.source, settings.qms.encoding
            )
        });
        checks.record("qms settings", valid.map_err(|e| e.to_string()));
        checks
            .run("nats", settings.nats.check(&settings.stream.name))
            .await;
        match Extractor::http_client(&settings) {
            Ok(http) => {
                let url = qms_extractor::export::check_url(&http, &settings.qms);
                checks.run("qms export", url).await;
            }
            Err(e) => checks.record("qms export", Err(e.to_string())),
        }
    }
    checks.exit()
}
