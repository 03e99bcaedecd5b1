//! `etl`: the operator's command-line tool.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Deserialize;

mod access_log;
mod brake;
mod console;
mod db;
mod dlq;
mod evaluate;
mod events;
mod identity;
mod import;
mod model;
mod persons;
mod replay;
mod sample;
mod sources;
mod status;
mod stream;
mod summary;
mod text;

/// mimalloc rather than glibc's malloc, as in the matcher binary: `etl
/// rematch` runs the matcher's full re-match in this process, which
/// allocates and frees millions of small strings and map entries. Measured
/// on 1.3 M records with nothing changed (Dec 3 2026): the same 38–40 s
/// either way, but a peak resident memory of 2.9 GiB instead of
/// 3.5–3.7 GiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operate the medical ETL bus.
///
/// Settings come from the optional TOML file (any service's: the same
/// sections, [nats], [database], [stream] …) and `ETL__<SECTION>__<KEY>`
/// environment variables; an unknown key is an error naming it.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, env = "ETL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Is the pipeline healthy, how far behind, what is stuck: every source,
    /// deletion brakes, the stream, the loaders' consumers, the matcher, dead
    /// letters. Exit status 0 healthy, 1 degraded, 2 down (--json for
    /// scripts).
    Status(status::StatusArgs),
    /// Deletion brakes: list the passes whose deletions are held, release
    /// one after checking the source.
    #[command(subcommand)]
    Brake(brake::BrakeCommand),
    /// Re-apply a range of the stream to PostgreSQL (idempotent), or rebuild
    /// an empty database from the whole stream (--rebuild).
    Replay(replay::ReplayArgs),
    /// Dead letters (messages the loader set aside, with their reason) and
    /// qMS rejects: list, show, retry after fixing the cause, drop.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Publish generated patients (and optionally changes, deletions and
    /// poison messages) to the bus, as an extractor would.
    Sample(sample::Args),
    /// Wait until a consumer has processed everything in the stream.
    Wait(stream::WaitArgs),
    /// Delete the stream and everything in it (for demos and tests; asks for --yes).
    DeleteStream(stream::DeleteArgs),
    /// A readable summary of what landed in PostgreSQL and of the bus.
    Summary,
    /// Publish records from an NDJSON file (see matcher/README.md) as source
    /// NAME (registered first with `etl sources register NAME`).
    Import(import::ImportArgs),
    /// The source systems the loader accepts: register one, list them.
    #[command(subcommand)]
    Sources(sources::SourcesCommand),
    /// Write a generated set with known truth: <source>.ndjson and truth.csv.
    GenerateTruth(import::GenerateArgs),
    /// Score the matcher's persons against truth.csv.
    Evaluate(persons::EvaluateArgs),
    /// Match the FEBRL1–3 sets and a generated set, each in a fresh
    /// database of its own, and print one quality table.
    EvaluateSets(evaluate::EvaluateSetsArgs),
    /// Recompute all persons from the records (after a rule or weight
    /// change); as the matcher's role (etl_matcher).
    Rematch,
    /// Apply pending schema migrations (as the schema owner, before starting
    /// new versions of the services) and list what is applied.
    Migrate,
    /// Persons, review items and operator decisions.
    #[command(subcommand)]
    Persons(persons::PersonsCommand),
    /// The matcher's learned model: train it on the records, show it.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Who viewed personal data through `etl` or the identity service (the
    /// schema owner only).
    #[command(subcommand)]
    AccessLog(access_log::AccessLogCommand),
    /// Person events (the matcher's identity changes on the bus): publish a
    /// range again for a consumer that lost its state.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// The identity service: its API clients.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// The steward console: its accounts.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
}

/// Every section of every service: `etl` reads any service's file (and
/// the environment of any service) as strictly as the service does, and
/// uses the sections it needs.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub nats: etl_runtime::nats::NatsSettings,
    pub database: etl_runtime::database::DatabaseSettings,
    pub stream: proto::bus::StreamSettings,
    pub log: etl_runtime::telemetry::LogSettings,
    /// Matching settings (weights, thresholds), for `rematch` and decisions.
    pub matcher: matcher::settings::MatcherSettings,
    /// The matcher's `[events]`: `etl events replay` publishes to its
    /// stream and subjects (point it at the matcher's file).
    pub events: matcher::settings::EventsSettings,
    /// The loader's settings: `etl replay` judges records by the same
    /// `[loader.limits]` as the loader (point it at the loader's file).
    pub loader: loader::settings::LoaderSettings,
    /// The Infoclinica extractor's: `etl status` shows the checkpoints of
    /// its `checkpoint_bucket`.
    pub extractor: infoclinica_extractor::settings::ExtractorSettings,
    /// The Infoclinica extractor's databases (not used by `etl`).
    pub databases: Vec<infoclinica_extractor::settings::DatabaseSettings>,
    /// The qMS extractor's: `etl status` counts the rejects of its
    /// `rejects.stream`.
    pub qms: qms_extractor::settings::QmsSettings,
    /// The identity service's API and authentication (not used by `etl`).
    pub api: ::identity::settings::ApiSettings,
    pub auth: ::identity::settings::AuthSettings,
    /// The identity service's steward console: `etl console user …`
    /// manages its accounts; the rest is not used by `etl`.
    pub console: steward_console::ConsoleSettings,
    /// The services' own (not used by `etl`).
    pub http: etl_runtime::observe::HttpSettings,
    pub shutdown: etl_runtime::shutdown::ShutdownSettings,
    pub telemetry: etl_runtime::telemetry::TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nats: Default::default(),
            database: Default::default(),
            stream: Default::default(),
            matcher: Default::default(),
            events: Default::default(),
            loader: Default::default(),
            extractor: Default::default(),
            databases: Default::default(),
            qms: Default::default(),
            api: Default::default(),
            auth: Default::default(),
            console: Default::default(),
            http: Default::default(),
            shutdown: Default::default(),
            telemetry: Default::default(),
            // A command-line tool speaks through its output; logs only warn,
            // but the progress lines of long commands run without a
            // terminal (cron) show.
            log: etl_runtime::telemetry::LogSettings {
                level: "warn,etl_runtime::progress=info".into(),
                ..Default::default()
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let loaded = etl_runtime::settings::load_reporting::<Settings>(args.config.as_deref())?;
    etl_runtime::telemetry::init(&loaded.settings.log);
    loaded.log_skipped();
    let settings = loaded.settings;
    match args.command {
        Command::Status(a) => status::run(&settings, a).await,
        Command::Brake(c) => brake::run(&settings, c).await,
        Command::Replay(a) => replay::run(&settings, a).await,
        Command::Dlq(c) => dlq::run(&settings, c).await,
        Command::Sample(a) => sample::run(&settings, a).await,
        Command::Wait(a) => stream::wait(&settings, a).await,
        Command::DeleteStream(a) => stream::delete(&settings, a).await,
        Command::Summary => summary::run(&settings).await,
        Command::Import(a) => import::import(&settings, a).await,
        Command::Sources(c) => sources::run(&settings, c).await,
        Command::GenerateTruth(a) => import::generate(a),
        Command::Evaluate(a) => persons::evaluate(&settings, a).await,
        Command::EvaluateSets(a) => evaluate::run(&settings, a).await,
        Command::Rematch => persons::rematch(&settings).await,
        Command::Persons(c) => persons::run(&settings, c).await,
        Command::Model(c) => model::run(&settings, c).await,
        Command::Migrate => migrate(&settings).await,
        Command::AccessLog(c) => access_log::run(&settings, c).await,
        Command::Events(c) => events::run(&settings, c).await,
        Command::Identity(c) => identity::run(&settings, c).await,
        Command::Console(c) => console::run(&settings, c).await,
    }
}

/// Applies the migrations shipped in this binary (the loader's and the
/// matcher's are one set, `migrations/`) and prints each applied version.
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect_with(settings.database.fitting_server().await).await?;
    etl_runtime::database::MIGRATOR.run(&pool).await?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await?;
    for (version, description) in &applied {
        println!("{version} {description}");
    }
    println!(
        "{} migrations applied; the schema is up to date",
        applied.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use etl_runtime::settings::{sections, SUITE_SECTIONS};

    /// `etl` has every section of the suite, and the suite's list names
    /// every section of every service.
    #[test]
    fn the_suites_sections_are_etls() {
        let mut etl = sections::<super::Settings>().to_vec();
        etl.sort_unstable();
        assert_eq!(etl, SUITE_SECTIONS);
        let services = [
            sections::<loader::Settings>(),
            sections::<matcher::Settings>(),
            sections::<qms_extractor::Settings>(),
            sections::<infoclinica_extractor::Settings>(),
            sections::<::identity::Settings>(),
        ];
        for section in services.concat() {
            assert!(SUITE_SECTIONS.contains(&section), "{section}");
        }
    }

    /// `etl -c <any service's file>` reads it.
    #[test]
    fn etl_reads_every_example_configuration() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            etl_runtime::settings::load::<super::Settings>(Some(&path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
