use std::path::PathBuf;

use clap::Parser;
use etl_runtime::{check, service};

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
        check::database_service::<matcher::Settings>(args.config.as_deref(), |s| &s.database).await;
    }
    let started = service::start::<matcher::Settings>("matcher", args.config.as_deref()).await?;
    if args.rematch {
        let applied = matcher::service::rematch(&started.settings).await;
        let applied = started.finisher.finish(applied).await?;
        tracing::info!(?applied, "full re-match done");
        return Ok(());
    }
    let summary = matcher::run(started.settings, started.shutdown).await;
    let summary = started.finisher.finish(summary).await?;
    tracing::info!(
        changes = summary.changes,
        moved = summary.moved,
        persons_created = summary.persons_created,
        reviews_opened = summary.reviews_opened,
        "matcher stopped"
    );
    Ok(())
}
