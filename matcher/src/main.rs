use std::path::{Path, PathBuf};

use clap::Parser;
use etl_runtime::check::Checks;

/// mimalloc rather than glibc's malloc: a batch of a backlog allocates and
/// frees millions of small strings and map entries, and glibc spent about
/// 40 % of the matcher's CPU in malloc and free (perf, Dec 2 2026).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resolves patient identities: keeps, in PostgreSQL, which source records
/// belong to the same person, learning of every change from the loader's
/// change feed (`record_changes`).
///
/// Every setting comes from the optional TOML file, overridden by environment
/// variables `ETL__<SECTION>__<KEY>` (e.g. `ETL__MATCHER__BATCH_SIZE`).
/// Several instances may run: they serialise on one advisory lock, so one
/// works and the others stand by.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); see deploy/config/matcher.toml.
    #[arg(long, short, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Recompute everything from source_records once (after a rule or weight
    /// change), then exit.
    #[arg(long)]
    rematch: bool,
    /// Check the configuration and exit: the settings (unknown keys
    /// refused), PostgreSQL and its schema; one line per check, status 0
    /// if all passed, 1 if not.
    #[arg(long, conflicts_with = "rematch")]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        check_config(args.config.as_deref()).await;
    }
    let loaded =
        etl_runtime::settings::load_reporting::<matcher::Settings>(args.config.as_deref())?;
    let telemetry = etl_runtime::telemetry::init_with_traces(
        &loaded.settings.log,
        &loaded.settings.telemetry,
        "matcher",
    )?;
    loaded.log_skipped();
    let settings = loaded.settings;
    if args.rematch {
        let applied = matcher::service::rematch(&settings).await;
        telemetry.shutdown(settings.shutdown.deadline).await;
        let applied = applied?;
        tracing::info!(?applied, "full re-match done");
        return Ok(());
    }
    let shutdown = etl_runtime::shutdown::on_signals_with_deadline(&settings.shutdown);
    etl_runtime::observe::start(&settings.http, &shutdown).await?;
    let shutdown_settings = settings.shutdown.clone();
    let summary = matcher::run(settings, shutdown).await;
    telemetry
        .shutdown(etl_runtime::shutdown::time_left(&shutdown_settings))
        .await;
    let summary = summary?;
    tracing::info!(
        changes = summary.changes,
        moved = summary.moved,
        persons_created = summary.persons_created,
        reviews_opened = summary.reviews_opened,
        "matcher stopped"
    );
    Ok(())
}

async fn check_config(path: Option<&Path>) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = etl_runtime::check::settings::<matcher::Settings>(&mut checks, path) {
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
