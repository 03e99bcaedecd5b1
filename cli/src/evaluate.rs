//! `etl evaluate-sets`: the matcher's quality on fixed sets with known
//! truth — the public FEBRL1–3 sets (`synth::febrl`) and the project's own
//! generator at a fixed seed and size, plain and with the failure classes
//! of clinics' real data — in one table.
//!
//! Each set gets a fresh database of its own on the configured server
//! (`<database>_eval_<set>`, dropped first if a run left it behind, and
//! dropped again afterwards unless `--keep`): the migrations, the records
//! written by the loader's write path (`loader::store::Store`); with
//! `matcher.scoring = "model"` a model trained on them and stored as the
//! version in use (`etl model train`'s code path, as an installation does
//! after its initial load); one full re-match by the matcher's engine with
//! the configured `[matcher]` settings, then the evaluation against the set's truth
//! (`matcher::evaluate`). The configured database itself is never touched.
//! The role needs the right to create databases (a development server's
//! `postgres`; no service role has it).

use std::time::Instant;

use anyhow::Context;
use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use loader::store::Store;
use matcher::evaluate::{Report, TruthRow};
use proto::Envelope;
use sqlx::{Connection, PgConnection, PgPool};
use synth::truth::TruthRecord;

use crate::Settings;

#[derive(clap::Args)]
pub struct EvaluateSetsArgs {
    /// Sets to run, comma-separated: febrl1, febrl2, febrl3, generated (the
    /// truth generator), generated-clerks (the same persons with the
    /// failure classes of clinics' real data: `synth::clerks`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "febrl1,febrl2,febrl3,generated,generated-clerks"
    )]
    sets: Vec<String>,
    /// Persons of the generated sets (records: about 1.5 per person).
    #[arg(long, default_value_t = 67_000)]
    persons: u64,
    /// Seed of the generated sets.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Keep each set's database (to look at its persons and review items).
    #[arg(long)]
    keep: bool,
    /// Print one JSON object per set (its name and the evaluation report)
    /// instead of the table.
    #[arg(long)]
    json: bool,
}

/// Random pairs for u: `etl model train`'s default.
const TRAIN_RANDOM_PAIRS: usize = 2_000_000;

/// One set's records and their truth.
struct Set {
    name: String,
    records: Vec<TruthRecord>,
}

fn set(name: &str, args: &EvaluateSetsArgs) -> anyhow::Result<Set> {
    let records = match name {
        "generated" => synth::truth::TruthGenerator::new(args.seed).records(args.persons),
        "generated-clerks" => synth::truth::TruthGenerator::new(args.seed)
            .with_clerks()
            .records(args.persons),
        _ => synth::febrl::records(name).with_context(|| {
            format!(
                "unknown set {name:?}: use febrl1, febrl2, febrl3, generated or generated-clerks"
            )
        })?,
    };
    Ok(Set {
        name: name.to_string(),
        records,
    })
}

pub async fn run(settings: &Settings, args: EvaluateSetsArgs) -> anyhow::Result<()> {
    // Every name is checked before the first (long) set runs.
    let sets = args
        .sets
        .iter()
        .map(|name| set(name, &args))
        .collect::<anyhow::Result<Vec<Set>>>()?;
    if !args.json {
        println!("{}", header());
    }
    for set in &sets {
        let started = Instant::now();
        let report = evaluate_in_fresh_database(settings, set, args.keep).await?;
        if args.json {
            let line = serde_json::json!({"set": set.name, "report": report});
            println!("{line}");
        } else {
            println!("{}", row(&set.name, &report));
        }
        eprintln!(
            "{}: {} records evaluated in {:.1} s",
            set.name,
            set.records.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The scratch database's settings: the configured server and role, a
/// database named after the configured one and the set.
fn scratch(settings: &Settings, set: &str) -> anyhow::Result<DatabaseSettings> {
    let mut db = settings.database.clone();
    db.database_name = format!("{}_eval_{set}", db.database_name);
    anyhow::ensure!(
        db.database_name.len() <= 63,
        "database name {} is longer than PostgreSQL's 63 bytes",
        db.database_name
    );
    Ok(db)
}

async fn evaluate_in_fresh_database(
    settings: &Settings,
    set: &Set,
    keep: bool,
) -> anyhow::Result<Report> {
    let db = scratch(settings, &set.name)?;
    let mut admin = PgConnection::connect_with(&db.without_db().database("postgres"))
        .await
        .context("connecting to the server's postgres database")?;
    let quoted = format!(r#""{}""#, db.database_name.replace('"', "\"\""));
    drop_database(&mut admin, &quoted).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {} (needs CREATEDB)", db.database_name))?;
    let pool = PgPool::connect_with(db.with_db()).await?;
    let report = load_match_evaluate(settings, &pool, set).await;
    pool.close().await;
    if !keep {
        drop_database(&mut admin, &quoted).await?;
    }
    report
}

async fn drop_database(admin: &mut PgConnection, quoted: &str) -> anyhow::Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(admin)
        .await
        .context("dropping the set's database")?;
    Ok(())
}

async fn load_match_evaluate(
    settings: &Settings,
    pool: &PgPool,
    set: &Set,
) -> anyhow::Result<Report> {
    etl_runtime::database::MIGRATOR.run(pool).await?;
    load(&Store::new(pool.clone(), "EVALUATE"), &set.records).await?;
    if settings.matcher.scoring == matcher::settings::ScoringKind::Model {
        // As an installation does after its initial load: `etl model
        // train` stores a model version trained on the records, and the
        // re-match below (what the command runs next) uses it.
        let options = crate::model::train_options(settings, TRAIN_RANDOM_PAIRS);
        let started = Instant::now();
        let mut progress = |line: String| {
            eprintln!(
                "{}: [{:>6.1} s] {line}",
                set.name,
                started.elapsed().as_secs_f64()
            );
        };
        matcher::model::store::train_and_store(pool, &options, &mut progress).await?;
    }
    let engine = matcher::service::engine(&matcher::Settings {
        matcher: settings.matcher.clone(),
        ..Default::default()
    });
    engine.rematch_all(pool).await?;
    let truth: Vec<TruthRow> = set
        .records
        .iter()
        .map(|t| TruthRow {
            source: t.source.into(),
            source_id: t.source_id.clone(),
            person: t.person.clone(),
            group: t.group.clone(),
        })
        .collect();
    matcher::evaluate::evaluate(pool, &truth).await
}

/// Writes the records as the loader writes what it consumes, in
/// transactions of 2,000.
async fn load(store: &Store, records: &[TruthRecord]) -> anyhow::Result<()> {
    for (n, chunk) in records.chunks(2000).enumerate() {
        store
            .write_envelopes(&envelopes(chunk), (n * 2000) as u64 + 1)
            .await?;
    }
    Ok(())
}

/// The records as the loader hands them to its store: version 1, one fixed
/// event time, and each record's identifiers judged again by
/// [`loader::validity::recompute`] as the loader does with every message,
/// so that a set's own validity flags never decide what links.
fn envelopes(records: &[TruthRecord]) -> Vec<Envelope> {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    records
        .iter()
        .map(|t| {
            let mut record = t.record.clone();
            loader::validity::recompute(&mut record);
            Envelope::upsert(t.source, t.source_id.clone(), 1, at, record)
        })
        .collect()
}

/// The table's header (Markdown, so that it can be pasted as it is).
pub fn header() -> String {
    "| set | records | true pairs | found pairs | precision | recall | F1 | false merges: persons (pairs of twins / namesakes / family / other) | open review items (share of records) |\n\
     |---|---:|---:|---:|---:|---:|---:|---:|---:|"
        .to_string()
}

/// One set's line of the table.
pub fn row(set: &str, r: &Report) -> String {
    format!(
        "| {set} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {} ({} / {} / {} / {}) | {} ({:.2} %) |",
        r.records,
        r.true_pairs,
        r.found_pairs,
        r.precision,
        r.recall,
        r.f1,
        r.false_merges,
        r.twin_pairs_merged,
        r.namesake_pairs_merged,
        r.family_pairs_merged,
        r.other_pairs_merged,
        r.open_review_items,
        r.review_queue_percent
    )
}

#[cfg(test)]
mod tests {
    use proto::{Checked, PatientRecord};

    use super::*;

    #[test]
    fn a_sets_validity_claims_are_judged_again_as_the_loader_does() {
        let record = |snils: &str| TruthRecord {
            source: "qms",
            source_id: "1".into(),
            person: "1".into(),
            group: None,
            record: PatientRecord {
                snils: Some(Checked::valid(snils)),
                ..Default::default()
            },
        };
        // Checksum 95 is right for 112-233-445; 96 is not.
        let written = envelopes(&[record("11223344595"), record("11223344596")]);
        let snils = |e: &Envelope| e.record.as_ref().and_then(|r| r.snils.clone());
        assert!(snils(&written[0]).is_some_and(|c| c.is_valid()));
        assert!(snils(&written[1]).is_some_and(|c| !c.is_valid()));
        assert_eq!(written[1].source_id, "1");
    }
}
