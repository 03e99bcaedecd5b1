//! `chaos`: the whole bus under random kills and server restarts while its
//! sources change, then a check that PostgreSQL equals the sources and that
//! a re-match moves nothing (see `testkit::chaos` and deploy/README.md,
//! "Chaos test"). Exit status 1 when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Runs both extractors, two loaders and the matcher against a NATS server
/// and a PostgreSQL cluster of their own, kills and restarts them at random
/// while the sources change, and checks the end state.
#[derive(Parser)]
struct Args {
    /// How long to kill and restart (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
    duration: Duration,
    /// Records of each source (qMS export, Infoclinica table) at the start.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Seed of the data, the changes and the chaos.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shortest time between two kills or restarts.
    #[arg(long, default_value = "1s", value_parser = humantime_serde::re::humantime::parse_duration)]
    min_pause: Duration,
    /// Longest time between two kills or restarts.
    #[arg(long, default_value = "8s", value_parser = humantime_serde::re::humantime::parse_duration)]
    max_pause: Duration,
    /// Longest wait for the pipeline to catch up after the chaos.
    #[arg(long, default_value = "5m", value_parser = humantime_serde::re::humantime::parse_duration)]
    converge_timeout: Duration,
    /// Use the binaries in this directory instead of building them.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the logs even when every check passes.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = testkit::chaos::Options {
        duration: args.duration,
        records: args.records,
        seed: args.seed,
        pause: (args.min_pause, args.max_pause.max(args.min_pause)),
        converge_timeout: args.converge_timeout,
        bin_dir: args.bin_dir,
        keep: args.keep,
    };
    let summary = testkit::chaos::run(&options).await?;
    println!("{summary}");
    if !summary.passed() {
        std::process::exit(1);
    }
    Ok(())
}
