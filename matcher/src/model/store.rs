//! The versioned model in PostgreSQL: `match_models` (parameters) and
//! `match_model_frequencies` (name counts), the version in use in
//! `match_state.model_version`.

use std::fmt::Write as _;

use sqlx::{PgConnection, PgPool};

use super::compare::FIELDS;
use super::params::Model;
use super::train::{self, Options, Trained};
use crate::features::{decode_row, Features};
use crate::lock::MATCH_LOCK;
use crate::par::par_map;

/// The model in use: the version `match_state` names, or the shipped
/// priors before the first training.
pub async fn load_active(conn: &mut PgConnection) -> sqlx::Result<Model> {
    let version: Option<i64> = sqlx::query_scalar("SELECT model_version FROM match_state")
        .fetch_one(&mut *conn)
        .await?;
    match version {
        Some(v) => load(conn, v).await,
        None => Ok(Model::priors()),
    }
}

/// One stored version.
pub async fn load(conn: &mut PgConnection, version: i64) -> sqlx::Result<Model> {
    let params: serde_json::Value =
        sqlx::query_scalar("SELECT params FROM match_models WHERE version = $1")
            .bind(version)
            .fetch_one(&mut *conn)
            .await?;
    let mut model = serde_json::from_value::<Model>(params)
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "params".into(),
            source: Box::new(e),
        })?
        .with_current_levels();
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT field, value, records FROM match_model_frequencies WHERE version = $1",
    )
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let records: i64 = sqlx::query_scalar("SELECT records FROM match_models WHERE version = $1")
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
    // The fields' totals came with the parameters.
    let frequencies = &mut model.frequencies;
    frequencies.records = records as u64;
    for (field, value, n) in rows {
        frequencies
            .counts
            .entry(field)
            .or_default()
            .insert(value, n as u32);
    }
    model.version = Some(version);
    Ok(model)
}

/// Stores `trained` as a new version and makes it the one in use. Bumps
/// the generation: every matcher instance reloads the model with its
/// blocking index before its next batch. The caller holds the lock.
pub async fn save(conn: &mut PgConnection, trained: &Trained) -> sqlx::Result<i64> {
    let params = serde_json::to_value(&trained.model).expect("a model serializes");
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO match_models (records, random_pairs, blocked_pairs, iterations, params)
         VALUES ($1, $2, $3, $4, $5) RETURNING version",
    )
    .bind(trained.records as i64)
    .bind(trained.random_pairs as i64)
    .bind(trained.blocked_pairs as i64)
    .bind(
        trained
            .iterations
            .iter()
            .map(|&i| i as i32)
            .collect::<Vec<i32>>(),
    )
    .bind(params)
    .fetch_one(&mut *conn)
    .await?;
    let mut fields = Vec::new();
    let mut values = Vec::new();
    let mut counts = Vec::new();
    for (field, by_value) in &trained.model.frequencies.counts {
        for (value, n) in by_value {
            fields.push(field.as_str());
            values.push(value.as_str());
            counts.push(*n as i32);
        }
    }
    sqlx::query(
        "INSERT INTO match_model_frequencies (version, field, value, records)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int[])",
    )
    .bind(version)
    .bind(&fields)
    .bind(&values)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE match_state SET model_version = $1, generation = generation + 1, updated_at = now()",
    )
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(version)
}

/// Trains a model on every live record and stores it as the version in
/// use, in one transaction under the matcher lock; `progress` receives one
/// line per step. Gives the new version.
pub async fn train_and_store(
    pool: &PgPool,
    options: &Options,
    progress: &mut dyn FnMut(String),
) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MATCH_LOCK)
        .execute(&mut *tx)
        .await?;
    // EM starts from the shipped priors, never from the model in use: the
    // same records give the same model, whatever was trained before.
    let start = Model::priors();
    progress("reading records".into());
    let rows = sqlx::query(concat!(
        "SELECT ",
        crate::row_columns!(),
        " FROM source_records WHERE deleted_at IS NULL ORDER BY source, source_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let records: Vec<Features> = par_map(&rows, |r| decode_row(r).map(|row| Features::of(&row)))
        .into_iter()
        .flatten()
        .collect();
    drop(rows);
    // CPU work of seconds in a command of its own: nothing else waits on
    // this thread.
    let trained = train::train(&records, &start, options, progress);
    let version = save(&mut tx, &trained).await?;
    tx.commit().await?;
    progress(format!("stored as model version {version}"));
    Ok(version)
}

/// The model as a table: each field's levels with m, u and the weight of
/// the level (bits; positive for agreement). Name frequencies are
/// summarised by count, never listed.
pub fn show(model: &Model) -> String {
    let mut out = String::new();
    let version = model
        .version
        .map_or("shipped priors (no model trained)".to_string(), |v| {
            format!("version {v}")
        });
    let _ = writeln!(out, "model: {version}");
    let _ = writeln!(
        out,
        "prior (two records taken at random are one person): {:.3e} ({:+.2} bits)",
        model.lambda,
        (model.lambda / (1.0 - model.lambda)).log2()
    );
    let _ = writeln!(
        out,
        "name frequencies: {} records, {} distinct values",
        model.frequencies.records,
        model
            .frequencies
            .counts
            .values()
            .map(|c| c.len())
            .sum::<usize>()
    );
    let _ = writeln!(out, "namesakes: {}", namesake_line(model));
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:>10} {:>12} {:>9}",
        "field", "level", "m", "u", "weight"
    );
    for field in FIELDS {
        let p = &model.fields[field.index()];
        for (l, name) in field.levels().iter().enumerate() {
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:>10.6} {:>12.8} {:>+9.2}",
                field.name(),
                name,
                p.m[l],
                p.u[l],
                (p.m[l] / p.u[l]).log2()
            );
        }
    }
    out
}

/// Whether the namesake rule applies, and why.
fn namesake_line(model: &Model) -> String {
    match model.namesakes {
        None => "not counted; pairs known by names and birth date alone need rare names".into(),
        Some(n) if !model.holds_namesakes() => format!(
            "none among {} pairs agreeing on names and birth date with comparable SNILS or passports; \
             pairs known by names and birth date alone are decided by their probability",
            n.compared
        ),
        Some(n) => format!(
            "{} of {} pairs agreeing on names and birth date with comparable SNILS or passports are two people; \
             pairs known by names and birth date alone need rare names{}",
            n.apart,
            n.compared,
            n.rarest_name_bits
                .map(|b| format!(", weighing more than the namesakes' ({b:.1} bits)"))
                .unwrap_or_default()
        ),
    }
}
