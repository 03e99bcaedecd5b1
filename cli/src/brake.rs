//! `etl brake`: the deletion brakes of the pipeline the settings point at
//! (see etl_runtime::brake): list the held passes, release one.

use async_nats::jetstream;
use etl_runtime::brake::Hold;

use crate::text::printable;
use crate::Settings;

#[derive(clap::Subcommand)]
pub enum BrakeCommand {
    /// Passes whose deletions a brake holds: source, database, how many.
    List {
        /// Machine-readable output (a JSON array).
        #[arg(long)]
        json: bool,
    },
    /// Let the extractor's next pass send the held deletions, after checking
    /// in the source system that the records really were deleted.
    Release {
        /// The source (`qms`, `infoclinica`).
        source: String,
        /// The database, for a source of several (Infoclinica's `name`).
        database: Option<String>,
    },
}

pub async fn run(settings: &Settings, cmd: BrakeCommand) -> anyhow::Result<()> {
    let client = settings.nats.connect("etl-brake").await?;
    let js = jetstream::new(client);
    let stream = &settings.stream.name;
    match cmd {
        BrakeCommand::List { json } => {
            let holds: Vec<Hold> = etl_runtime::brake::list(&js, stream)
                .await?
                .into_iter()
                .map(|(hold, _)| hold)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&holds)?);
            } else if holds.is_empty() {
                println!("no deletion brake holds on stream {stream}");
            }
            if !json {
                for h in &holds {
                    println!("{}", describe(h));
                }
            }
        }
        BrakeCommand::Release { source, database } => {
            let by = crate::persons::actor();
            let hold =
                etl_runtime::brake::release(&js, stream, &source, database.as_deref(), &by).await?;
            println!(
                "released: the next pass of {} sends its {} deletion(s) (released by {})",
                name(&hold),
                hold.deletions,
                printable(&by)
            );
        }
    }
    Ok(())
}

/// `source` or `source/database`.
pub fn name(h: &Hold) -> String {
    match &h.database {
        Some(db) => format!("{}/{}", h.source, db),
        None => h.source.clone(),
    }
}

/// One line about a hold, for operators.
pub fn describe(h: &Hold) -> String {
    let share = if h.known == 0 {
        100.0
    } else {
        h.deletions as f64 * 100.0 / h.known as f64
    };
    let state = match &h.released {
        Some(r) => format!("released by {} at {}", printable(&r.by), r.at.to_rfc3339()),
        None => format!(
            "held since {} (etl brake release {}{})",
            h.held_at.to_rfc3339(),
            h.source,
            h.database
                .as_deref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default()
        ),
    };
    format!(
        "{:<28} {} pass: {} deletion(s) of {} ({share:.1}%; limits {:.1}%, {}), {state}",
        printable(&name(h)),
        h.pass,
        h.deletions,
        h.known,
        h.max_share * 100.0,
        h.max_count
    )
}
