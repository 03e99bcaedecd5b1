//! `etl model train|show`: the matcher's Fellegi–Sunter model
//! (matcher/src/model). Training reads every live record, stores a new
//! model version and makes it the one in use, then re-matches every record
//! under it through the matcher's normal (audited) path.

use std::sync::Arc;

use etl_runtime::progress::{Progress, Unit};

use crate::Settings;

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Learn m and u of every comparison level and the name frequencies
    /// from the records in PostgreSQL, store them as a new version in use,
    /// and re-match every record under it (as the matcher's role).
    Train(TrainArgs),
    /// The model in use (or VERSION) as a table of levels and weights.
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Random record pairs compared to estimate u.
    #[arg(long, default_value_t = 2_000_000)]
    random_pairs: usize,
    /// Store and activate the model without re-matching now (the persons
    /// then follow the new model as records change, or at the next `etl
    /// rematch`).
    #[arg(long)]
    no_rematch: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// A stored version instead of the one in use.
    #[arg(long)]
    version: Option<i64>,
}

/// How `etl model train` trains (also `etl evaluate-sets`, which follows
/// an installation's path): `random_pairs` for u, the matcher's block size.
pub fn train_options(settings: &Settings, random_pairs: usize) -> matcher::model::train::Options {
    matcher::model::train::Options {
        random_pairs,
        max_block_size: settings.matcher.max_block_size.max(2) as usize,
        ..Default::default()
    }
}

pub async fn run(settings: &Settings, cmd: ModelCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    match cmd {
        ModelCommand::Train(args) => {
            let started = std::time::Instant::now();
            let options = train_options(settings, args.random_pairs);
            let bar = Arc::new(Progress::start("model training", Unit::Time, None));
            let beat = bar.heartbeat();
            let mut progress = |line: String| {
                bar.suspend(|| println!("[{:>6.1} s] {line}", started.elapsed().as_secs_f64()));
            };
            let version =
                matcher::model::store::train_and_store(&pool, &options, &mut progress).await;
            drop(beat);
            drop(bar);
            let version = version?;
            if settings.matcher.scoring != matcher::settings::ScoringKind::Model {
                println!("note: matcher.scoring is not \"model\": the matcher keeps scoring by the rules");
            }
            if !args.no_rematch {
                println!(
                    "[{:>6.1} s] re-matching every record under model version {version}",
                    started.elapsed().as_secs_f64()
                );
                crate::persons::rematch(settings).await?;
            }
        }
        ModelCommand::Show(args) => {
            let mut conn = pool.acquire().await?;
            let model = match args.version {
                Some(v) => matcher::model::store::load(&mut conn, v).await?,
                None => matcher::model::store::load_active(&mut conn).await?,
            };
            print!("{}", matcher::model::store::show(&model));
        }
    }
    Ok(())
}
