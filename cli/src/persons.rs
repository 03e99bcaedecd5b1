//! `etl persons …`, `etl rematch`, `etl evaluate`: the matcher's operator
//! commands. Decisions are applied at once (in one transaction under the
//! matcher's lock) and survive every later re-match. Output names records
//! by source and source id and agreements by kind, never values, except
//! `persons show --show-personal-data`, for an operator entitled to see the
//! person; that view is first written to the access log
//! ([`crate::access_log`]).

#![allow(clippy::type_complexity)]

use std::path::PathBuf;

use anyhow::Context;
use matcher::engine::Rec;
use matcher::operator::{self, parse_rec};
use sqlx::PgPool;

use crate::Settings;

#[derive(clap::Subcommand)]
pub enum PersonsCommand {
    /// A person's records; the golden view (names, birth date, documents…)
    /// only with --show-personal-data.
    Show {
        person: i64,
        /// Print the person's data: only where you are allowed to see
        /// patients' data. Each such view is recorded in the access log
        /// (who, when, which person and records; never the values).
        #[arg(long)]
        show_personal_data: bool,
    },
    /// Open review items (oldest first).
    Reviews {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Why two records are (or are not) one person.
    Why {
        a: String,
        b: String,
    },
    /// Put two records into one person, whatever the rules say.
    Link {
        a: String,
        b: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Keep two records in different persons, whatever the rules say.
    KeepApart {
        a: String,
        b: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Withdraw the decision on a pair; the rules apply again.
    Revoke {
        a: String,
        b: String,
    },
    /// Freeze a person against automatic changes.
    Lock {
        person: i64,
    },
    Unlock {
        person: i64,
    },
    /// Resolve a review item: `link` or `keep-apart`.
    Resolve {
        item: i64,
        resolution: String,
    },
}

fn rec(s: &str) -> anyhow::Result<Rec> {
    parse_rec(s).with_context(|| format!("{s:?} is not <source>:<source id>"))
}

pub fn actor() -> String {
    std::env::var("ETL_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

fn engine(settings: &Settings) -> matcher::Engine {
    matcher::service::engine(&matcher::Settings {
        matcher: settings.matcher.clone(),
        ..Default::default()
    })
}

pub async fn run(settings: &Settings, cmd: PersonsCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let e = engine(settings);
    let who = actor();
    match cmd {
        PersonsCommand::Show {
            person,
            show_personal_data,
        } => show(&pool, person, show_personal_data).await?,
        PersonsCommand::Reviews { limit } => {
            let rows: Vec<(
                i64,
                String,
                String,
                String,
                String,
                String,
                f32,
                serde_json::Value,
            )> = sqlx::query_as(
                "SELECT id, a_source, a_source_id, b_source, b_source_id, reason, score, evidence
                 FROM review_items WHERE status = 'open' ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&pool)
            .await?;
            for (id, a0, a1, b0, b1, reason, score, ev) in rows {
                println!("#{id} {a0}:{a1} ~ {b0}:{b1}  {reason} (score {score})\n    {ev}");
            }
        }
        PersonsCommand::Why { a, b } => {
            let x = operator::why(&pool, &rec(&a)?, &rec(&b)?).await?;
            println!("{a}: person {:?}; {b}: person {:?}", x.person_a, x.person_b);
            if !x.path.is_empty() {
                println!("one person, through {} link(s):", x.path.len());
                for s in &x.path {
                    println!(
                        "  {}:{} — {}:{}  rule {} score {}\n    {}",
                        s.a.0, s.a.1, s.b.0, s.b.1, s.rule, s.score, s.evidence
                    );
                }
            }
            if let Some((d, rule, score, ev)) = &x.pair {
                println!("direct comparison: {d} by {rule} (score {score})\n    {ev}");
            } else {
                println!(
                    "direct comparison: none stored (no shared blocking key, or nothing in common)"
                );
            }
            for (k, who) in &x.decisions {
                println!("operator decision: {k} by {who}");
            }
        }
        PersonsCommand::Link { a, b, note } => {
            let applied = operator::decide(
                &e,
                &pool,
                "link",
                &rec(&a)?,
                &rec(&b)?,
                &who,
                note.as_deref(),
            )
            .await?;
            println!("linked; {} record(s) moved", applied.moved);
        }
        PersonsCommand::KeepApart { a, b, note } => {
            let applied = operator::decide(
                &e,
                &pool,
                "keep_apart",
                &rec(&a)?,
                &rec(&b)?,
                &who,
                note.as_deref(),
            )
            .await?;
            println!("kept apart; {} record(s) moved", applied.moved);
        }
        PersonsCommand::Revoke { a, b } => {
            let n = operator::revoke(&e, &pool, &rec(&a)?, &rec(&b)?, &who).await?;
            println!("{n} decision(s) revoked");
        }
        PersonsCommand::Lock { person } => {
            operator::set_lock(&e, &pool, person, true, &who).await?;
            println!("person {person} locked");
        }
        PersonsCommand::Unlock { person } => {
            operator::set_lock(&e, &pool, person, false, &who).await?;
            println!("person {person} unlocked");
        }
        PersonsCommand::Resolve { item, resolution } => {
            let r = match resolution.as_str() {
                "link" => "link",
                "keep-apart" | "keep_apart" => "keep_apart",
                other => anyhow::bail!("resolution {other:?}: use link or keep-apart"),
            };
            operator::resolve(&e, &pool, item, r, &who).await?;
            println!("review item {item} resolved: {r}");
        }
    }
    Ok(())
}

async fn show(pool: &PgPool, person: i64, show_personal_data: bool) -> anyhow::Result<()> {
    let (locked, retired): (bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT locked, retired_at FROM persons WHERE person_id = $1")
            .bind(person)
            .fetch_optional(pool)
            .await?
            .context("no such person")?;
    println!(
        "person {person}{}{}",
        if locked { " (locked)" } else { "" },
        if retired.is_some() { " (retired)" } else { "" }
    );
    let members: Vec<(String, String)> = sqlx::query_as(
        "SELECT source, source_id FROM person_memberships WHERE person_id = $1 AND valid_to IS NULL ORDER BY 1, 2",
    )
    .bind(person)
    .fetch_all(pool)
    .await?;
    let records: Vec<String> = members.iter().map(|(s, i)| format!("{s}:{i}")).collect();
    for r in &records {
        println!("  record {}", r.escape_debug());
    }
    if !show_personal_data {
        println!(
            "(golden view with the person's data not shown: add --show-personal-data; \
             the view is recorded in the access log)"
        );
        return Ok(());
    }
    let view = crate::access_log::view("persons show", format!("person {person}"), records);
    crate::access_log::record(pool, &view).await?;
    let golden: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(g) FROM person_golden g WHERE person_id = $1")
            .bind(person)
            .fetch_optional(pool)
            .await?;
    if let Some(g) = golden {
        println!("golden view: {}", serde_json::to_string_pretty(&g)?);
    }
    Ok(())
}

pub async fn rematch(settings: &Settings) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let started = std::time::Instant::now();
    let progress = std::sync::Arc::new(etl_runtime::progress::Progress::start(
        "re-match",
        etl_runtime::progress::Unit::Time,
        None,
    ));
    let beat = progress.heartbeat();
    let applied = engine(settings).rematch_all(&pool).await;
    drop(beat);
    drop(progress);
    let applied = applied?;
    println!(
        "full re-match of {} records in {:.1} s: {} moved, {} persons created, {} retired, {} review items opened, {} closed",
        applied.records,
        started.elapsed().as_secs_f64(),
        applied.moved,
        applied.persons_created,
        applied.persons_retired,
        applied.reviews_opened,
        applied.reviews_closed
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// `truth.csv` written by `etl generate-truth`.
    #[arg(long)]
    truth: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn evaluate(settings: &Settings, args: EvaluateArgs) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let truth = matcher::evaluate::parse_truth(&std::fs::read_to_string(&args.truth)?)?;
    let r = matcher::evaluate::evaluate(&pool, &truth).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "records {}  real persons {}  persons found {}",
        r.records, r.true_persons, r.found_persons
    );
    println!(
        "pairwise precision {:.5}  recall {:.5}  F1 {:.5}",
        r.precision, r.recall, r.f1
    );
    println!(
        "  true pairs {}  found {}  correct {}",
        r.true_pairs, r.found_pairs, r.correct_pairs
    );
    println!(
        "false merges {} (twin pairs {}, namesake pairs {}, family pairs {}); persons with two SNILS {}",
        r.false_merges, r.twin_pairs_merged, r.namesake_pairs_merged, r.family_pairs_merged, r.persons_with_conflicting_snils
    );
    println!(
        "review queue {} open items ({:.2}% of records)",
        r.open_review_items, r.review_queue_percent
    );
    Ok(())
}
