//! `etl events replay`: re-emits a range of person events from the
//! matcher's outbox (`person_events`, kept for `events.retention`) to the
//! bus, for a consumer that lost its state (`matcher::events::replay`).

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use matcher::events::{self, Range};

use crate::Settings;

#[derive(clap::Subcommand)]
pub enum EventsCommand {
    /// Publish a range of person events again: the same payloads on the
    /// same subjects, marked with the header `Etl-Replay: <run>`.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// First event id to publish again.
    #[arg(
        long,
        required_unless_present = "from_time",
        conflicts_with = "from_time"
    )]
    from_id: Option<i64>,
    /// Last event id (default: the last one the relay published).
    #[arg(long, requires = "from_id")]
    to_id: Option<i64>,
    /// The events written at or after this time (RFC 3339, e.g.
    /// 2026-12-01T10:00:00Z).
    #[arg(long)]
    from_time: Option<DateTime<Utc>>,
}

pub async fn run(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Replay(args) = command;
    let range = match (args.from_id, args.from_time) {
        (Some(from), _) => Range::Ids {
            from,
            to: args.to_id,
        },
        (None, Some(at)) => Range::Since(at),
        (None, None) => anyhow::bail!("say where to start: --from-id N or --from-time RFC3339"),
    };
    let pool = crate::db::connect(settings).await?;
    let js = jetstream::new(settings.nats.connect("etl-events-replay").await?);
    let run = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let replayed = events::replay(&pool, &js, &settings.events, range, &run).await?;
    match (replayed.first, replayed.last) {
        (Some(first), Some(last)) => println!(
            "replayed {} person events, ids {first}..={last}, on {}.<kind> (header {}: {run})",
            replayed.events,
            settings.events.subject_prefix,
            events::REPLAY_HEADER
        ),
        _ => println!("no published person event in that range"),
    }
    if let (Some(oldest), Range::Ids { from, .. }) = (replayed.oldest_kept, range) {
        if from < oldest {
            println!("events before {oldest} are past the retention and gone");
        }
    }
    Ok(())
}
