use std::path::{Path, PathBuf};

use clap::{Args as ClapArgs, Parser, Subcommand};
use etl_runtime::check::Checks;
use etl_runtime::service;
use infoclinica_extractor::{Mode, Settings};

/// mimalloc instead of glibc's malloc: an initial load maps, serializes and
/// frees tens of small strings per row on the encoder thread, and glibc's
/// allocator was ~15 % of the extractor's CPU there (see README,
/// Performance). Memory stays flat: pages are bounded by the channels.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads patients from Infoclinica Firebird databases and publishes them to
/// the NATS JetStream bus (`patients.infoclinica`).
///
/// Without a flag it runs as a daemon: it finishes (or does) the initial load
/// of every configured database, then runs a delta pass every
/// `extractor.delta_interval`. Settings come from the optional TOML file
/// (see deploy/config/infoclinica-extractor.toml), overridden by
/// environment variables `ETL__<SECTION>__<KEY>`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Run the initial load (resuming an unfinished one), then exit.
    #[arg(long, conflicts_with_all = ["delta_sync", "reconcile"])]
    initial_load: bool,
    /// With --initial-load: start over from the first PCODE even if a load
    /// is unfinished.
    #[arg(long, requires = "initial_load")]
    restart: bool,
    /// Run one delta pass (change log, or reconciliation for databases with
    /// `sync = "reconcile"`), then exit: status 3 if the deletion brake
    /// holds deletions (`etl brake list`), 1 on failure.
    #[arg(long, conflicts_with = "reconcile")]
    delta_sync: bool,
    /// Run one reconciliation pass (no triggers needed), then exit (status 3
    /// if the deletion brake holds deletions).
    #[arg(long)]
    reconcile: bool,
    /// Check the configuration and exit: the settings (unknown keys
    /// refused), NATS and the stream, and per database the login, the
    /// patients table, every mapped column and the change log; one line per
    /// check, status 0 if all passed, 1 if not.
    #[arg(long, conflicts_with_all = ["initial_load", "delta_sync", "reconcile"])]
    check_config: bool,
    /// Only this configured database (by name).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or re-create) a sample Infoclinica database with generated
    /// patients at the configured database's path: for demos and
    /// benchmarks, never on a real installation.
    CreateSampleDb(SampleArgs),
    /// Change rows of the sample database (demos): update, delete and
    /// insert patients, as hospital users would.
    SampleChanges(ChangeArgs),
}

#[derive(ClapArgs)]
struct SampleArgs {
    /// Patients to generate.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Seed of the generator (same seed, same patients).
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Do not install the change-log triggers.
    #[arg(long)]
    no_triggers: bool,
}

#[derive(ClapArgs)]
struct ChangeArgs {
    /// Patients to update (a new phone and a corrected surname).
    #[arg(long, default_value_t = 200)]
    updates: u64,
    /// Patients to delete.
    #[arg(long, default_value_t = 50)]
    deletes: u64,
    /// New patients to insert.
    #[arg(long, default_value_t = 100)]
    inserts: u64,
}

/// The runtime is built here rather than by `#[tokio::main]` for its end:
/// a runtime dropped at the end of `main` waits without a limit for its
/// blocking calls, and an rsfbclient call (no timeouts of its own) that
/// outlived its `query_timeout` against a server gone silent may never
/// return. Those are left behind after a few seconds; the process exits.
fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run_main());
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn run_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        check_config(args.config.as_deref(), args.database.as_deref()).await;
    }
    if let Some(command) = &args.command {
        return sample(&args, command).await;
    }
    let started =
        service::start::<Settings>("infoclinica-extractor", args.config.as_deref()).await?;
    let settings = only(started.settings, args.database.as_deref())?;
    let mode = mode(&args);
    let summaries = infoclinica_extractor::run(settings, mode, started.shutdown).await;
    let summaries = started.finisher.finish(summaries).await?;
    let withheld: u64 = summaries.iter().map(|s| s.delta.withheld).sum();
    for s in summaries {
        tracing::info!(
            database = %s.name,
            initial_rows = s.initial.rows,
            initial_duplicates = s.initial.duplicates,
            passes = s.passes,
            changes = s.delta.changes,
            upserts = s.delta.upserts,
            deletes = s.delta.deletes,
            withheld_deletes = s.delta.withheld,
            "infoclinica-extractor stopped"
        );
    }
    if mode != Mode::Daemon && withheld > 0 {
        // A one-shot run (cron) must notice: see `etl brake list`.
        tracing::error!(
            withheld_deletes = withheld,
            "the deletion brake holds deletions; exiting with status 3"
        );
        std::process::exit(3);
    }
    Ok(())
}

/// The settings with only the database `--database` names, if it does.
fn only(mut settings: Settings, database: Option<&str>) -> anyhow::Result<Settings> {
    if let Some(name) = database {
        settings.databases.retain(|d| d.name == name);
        anyhow::ensure!(
            !settings.databases.is_empty(),
            "no database named {name} is configured"
        );
    }
    Ok(settings)
}

fn mode(args: &Args) -> Mode {
    if args.initial_load && args.restart {
        Mode::InitialLoadFromScratch
    } else if args.initial_load {
        Mode::InitialLoad
    } else if args.delta_sync {
        Mode::DeltaOnce
    } else if args.reconcile {
        Mode::ReconcileOnce
    } else {
        Mode::Daemon
    }
}

/// The sample-database commands: logs only, no metrics endpoint (a demo
/// runs them beside a running extractor, whose port they would take).
async fn sample(args: &Args, command: &Command) -> anyhow::Result<()> {
    let settings = etl_runtime::settings::load::<Settings>(args.config.as_deref())?;
    etl_runtime::telemetry::init(&settings.log);
    let settings = only(settings, args.database.as_deref())?;
    settings.validate()?;
    let db = settings.databases[0].clone();
    let name = db.name.clone();
    match command {
        Command::CreateSampleDb(sample) => {
            let (count, seed, triggers) = (sample.count, sample.seed, !sample.no_triggers);
            let started = std::time::Instant::now();
            tokio::task::spawn_blocking(move || {
                infoclinica_extractor::sample::create_sample(&db, count, seed, triggers)
            })
            .await??;
            tracing::info!(
                database = %name,
                count,
                seconds = started.elapsed().as_secs_f64(),
                "sample database created"
            );
        }
        Command::SampleChanges(c) => {
            let (updates, deletes, inserts) = (c.updates, c.deletes, c.inserts);
            tokio::task::spawn_blocking(move || {
                infoclinica_extractor::sample::change_sample(&db, updates, deletes, inserts)
            })
            .await??;
            tracing::info!(database = %name, "sample changes committed");
        }
    }
    Ok(())
}

async fn check_config(path: Option<&Path>, only: Option<&str>) -> ! {
    let mut checks = Checks::new();
    if let Some(mut settings) = etl_runtime::check::settings::<Settings>(&mut checks, path) {
        if let Some(name) = only {
            settings.databases.retain(|d| d.name == name);
        }
        let valid = settings.validate();
        let usable = valid.is_ok();
        let found = valid.map(|()| format!("{} database(s)", settings.databases.len()));
        checks.record("extractor settings", found.map_err(|e| e.to_string()));
        checks
            .run("nats", settings.nats.check(&settings.stream.name))
            .await;
        // Names go into SQL text only once validated.
        if usable {
            for db in &settings.databases {
                let found = infoclinica_extractor::check::database(db, &settings.extractor);
                checks.run(format!("database {}", db.name), found).await;
            }
        }
    }
    checks.exit()
}
