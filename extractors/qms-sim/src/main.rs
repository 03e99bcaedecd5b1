//! `qms-sim`: serves a simulated qMS patient export on
//! `GET /cgi-bin/qms_export_pat` (see the crate docs and README.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use qms_sim::{Config, Encoding, Fault, Simulator};

/// A qMS export simulator for tests, demos and benchmarks.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8480", env = "QMS_SIM_LISTEN")]
    listen: SocketAddr,
    /// Seed of the generated patients.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generated rows (up to millions; generated while sent).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Serve this file verbatim instead of generated rows.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// utf-8 or cp1251.
    #[arg(long, default_value = "utf-8")]
    encoding: Encoding,
    /// Rows per thousand that wrap onto a second line.
    #[arg(long, default_value_t = 0)]
    wrap_per_mille: u32,
    /// Fault of every request: none, slow-first-byte, slow-drip, http-500,
    /// http-503, reset, truncate, truncate-at-line, html-200, empty.
    #[arg(long, default_value = "none")]
    fault: Fault,
    /// Delay of slow-first-byte, seconds.
    #[arg(long, default_value_t = 600.0)]
    slow_first_byte_secs: f64,
    /// Pause between pieces of slow-drip, seconds.
    #[arg(long, default_value_t = 1.0)]
    drip_delay_secs: f64,
    /// Rows per piece of the body.
    #[arg(long, default_value_t = 512)]
    rows_per_chunk: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let sim = Simulator::new(Config {
        seed: args.seed,
        count: args.count,
        data_file: args.data_file,
        encoding: args.encoding,
        wrap_per_mille: args.wrap_per_mille,
        fault: args.fault,
        slow_first_byte: Duration::from_secs_f64(args.slow_first_byte_secs),
        drip_delay: Duration::from_secs_f64(args.drip_delay_secs),
        rows_per_chunk: args.rows_per_chunk,
        ..Config::default()
    });
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    let (addr, task) = sim.serve(args.listen, shutdown).await?;
    tracing::info!(%addr, path = qms_sim::EXPORT_PATH, "qms-sim listening");
    task.await?;
    Ok(())
}
