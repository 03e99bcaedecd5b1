use std::path::PathBuf;

use clap::Parser;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings: matcher::Settings = etl_runtime::settings::load(args.config.as_deref())?;
    let telemetry =
        etl_runtime::telemetry::init_with_traces(&settings.log, &settings.telemetry, "matcher")?;
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
