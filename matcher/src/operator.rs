//! Operator decisions: link two records, keep two records apart, lock or
//! unlock a person, resolve a review item, and "why are these one person?".
//!
//! Each decision is written, audited and applied (the affected persons
//! recomputed) in one transaction under the matcher lock, so it takes effect
//! at once and every later re-match — incremental or full — honours it: the
//! rules never override a decision. A newer decision on a pair revokes the
//! older one (kept, with `revoked_at`). The person events of a decision
//! (`crate::engine::events`: the persons it changed; a lock's `locked` or
//! `unlocked`) are written in the same transaction.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::engine::{audit_one, events, Applied, Engine, Rec};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("record {0}:{1} is not known")]
    UnknownRecord(String, String),
    #[error("person {0} is not known")]
    UnknownPerson(i64),
    #[error("review item {0} is not open")]
    NotOpen(i64),
    #[error("record {0}:{1} is not a current record of person {2}")]
    NotMember(String, String, i64),
    #[error("a split needs records that leave and records that stay")]
    NothingToSplit,
    #[error("a record cannot be paired with itself")]
    SameRecord,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Parses `source:source_id` (the first `:` separates).
pub fn parse_rec(s: &str) -> Option<Rec> {
    let (source, id) = s.split_once(':')?;
    (!source.is_empty() && !id.is_empty()).then(|| (source.to_string(), id.to_string()))
}

fn ordered(a: &Rec, b: &Rec) -> (Rec, Rec) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

async fn exists(tx: &mut sqlx::PgConnection, r: &Rec) -> Result<(), OperatorError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM source_records WHERE source = $1 AND source_id = $2")
            .bind(&r.0)
            .bind(&r.1)
            .fetch_optional(&mut *tx)
            .await?;
    found
        .map(drop)
        .ok_or_else(|| OperatorError::UnknownRecord(r.0.clone(), r.1.clone()))
}

/// Records a pair decision (`link` or `keep_apart`) and applies it.
pub async fn decide(
    engine: &Engine,
    pool: &PgPool,
    kind: &str,
    a: &Rec,
    b: &Rec,
    actor: &str,
    note: Option<&str>,
) -> Result<Applied, OperatorError> {
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    let applied = decide_in(engine, &mut tx, kind, a, b, actor, note).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn decide_in(
    engine: &Engine,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    kind: &str,
    a: &Rec,
    b: &Rec,
    actor: &str,
    note: Option<&str>,
) -> Result<Applied, OperatorError> {
    if a == b {
        return Err(OperatorError::SameRecord);
    }
    let (a, b) = ordered(a, b);
    record_decision(tx, kind, &a, &b, actor, note).await?;
    Ok(engine.recompute_persons(tx, &[a, b]).await?)
}

/// Writes a pair decision (revoking the pair's older one) and its audit
/// line, without applying it. `a` < `b`.
async fn record_decision(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    kind: &str,
    a: &Rec,
    b: &Rec,
    actor: &str,
    note: Option<&str>,
) -> Result<i64, OperatorError> {
    exists(tx, a).await?;
    exists(tx, b).await?;
    sqlx::query(
        "UPDATE match_decisions SET revoked_at = now() WHERE revoked_at IS NULL
         AND a_source = $1 AND a_source_id = $2 AND b_source = $3 AND b_source_id = $4",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .execute(&mut **tx)
    .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO match_decisions (kind, a_source, a_source_id, b_source, b_source_id, actor, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(kind)
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .bind(actor)
    .bind(note)
    .fetch_one(&mut **tx)
    .await?;
    audit_one(
        tx,
        actor,
        "decision",
        None,
        Some(a),
        Some(b),
        json!({"decision": id, "kind": kind}),
    )
    .await?;
    Ok(id)
}

/// Splits a wrong merge: `leaving` (current records of `person`) leave it.
/// One `keep_apart` decision per pair of a leaving and a staying record, all
/// in one transaction, then the person recomputed: the leaving records form
/// their own person(s) by the rules among themselves. Each decision can be
/// revoked on its own. Gives the decisions written and what changed.
pub async fn split(
    engine: &Engine,
    pool: &PgPool,
    person: i64,
    leaving: &[Rec],
    actor: &str,
) -> Result<(Vec<i64>, Applied), OperatorError> {
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    let members: Vec<Rec> = sqlx::query_as(
        "SELECT source, source_id FROM person_memberships
         WHERE person_id = $1 AND valid_to IS NULL ORDER BY source, source_id",
    )
    .bind(person)
    .fetch_all(&mut *tx)
    .await?;
    if members.is_empty() {
        return Err(OperatorError::UnknownPerson(person));
    }
    for r in leaving {
        if !members.contains(r) {
            return Err(OperatorError::NotMember(r.0.clone(), r.1.clone(), person));
        }
    }
    let staying: Vec<&Rec> = members.iter().filter(|r| !leaving.contains(r)).collect();
    if leaving.is_empty() || staying.is_empty() {
        return Err(OperatorError::NothingToSplit);
    }
    let note = format!("split of person {person}");
    let mut ids = Vec::new();
    for l in leaving {
        for s in &staying {
            let (a, b) = ordered(l, s);
            ids.push(record_decision(&mut tx, "keep_apart", &a, &b, actor, Some(&note)).await?);
        }
    }
    let applied = engine.recompute_persons(&mut tx, &members).await?;
    tx.commit().await?;
    Ok((ids, applied))
}

/// Revokes the active decision on a pair, if any, and re-applies the rules.
pub async fn revoke(
    engine: &Engine,
    pool: &PgPool,
    a: &Rec,
    b: &Rec,
    actor: &str,
) -> Result<u64, OperatorError> {
    let (a, b) = ordered(a, b);
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE match_decisions SET revoked_at = now() WHERE revoked_at IS NULL
         AND a_source = $1 AND a_source_id = $2 AND b_source = $3 AND b_source_id = $4",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit_one(
        &mut tx,
        actor,
        "decision_revoked",
        None,
        Some(&a),
        Some(&b),
        Value::Null,
    )
    .await?;
    engine.recompute_persons(&mut tx, &[a, b]).await?;
    tx.commit().await?;
    Ok(n)
}

/// Locks (or unlocks) a person against automatic changes. Unlocking
/// re-applies the rules to its records.
pub async fn set_lock(
    engine: &Engine,
    pool: &PgPool,
    person: i64,
    locked: bool,
    actor: &str,
) -> Result<(), OperatorError> {
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    let was: Option<bool> = sqlx::query_scalar("SELECT locked FROM persons WHERE person_id = $1")
        .bind(person)
        .fetch_optional(&mut *tx)
        .await?;
    let was = was.ok_or(OperatorError::UnknownPerson(person))?;
    sqlx::query("UPDATE persons SET locked = $2, updated_at = now() WHERE person_id = $1")
        .bind(person)
        .bind(locked)
        .execute(&mut *tx)
        .await?;
    if was != locked {
        let kind = if locked { "locked" } else { "unlocked" };
        events::write(&mut tx, &[events::plain(kind, person)]).await?;
    }
    audit_one(
        &mut tx,
        actor,
        if locked { "lock" } else { "unlock" },
        Some(person),
        None,
        None,
        Value::Null,
    )
    .await?;
    if !locked {
        let members: Vec<(String, String)> = sqlx::query_as(
            "SELECT source, source_id FROM person_memberships WHERE person_id = $1 AND valid_to IS NULL",
        )
        .bind(person)
        .fetch_all(&mut *tx)
        .await?;
        if !members.is_empty() {
            engine.recompute_persons(&mut tx, &members).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Resolves an open review item with a decision (`link` or `keep_apart`).
pub async fn resolve(
    engine: &Engine,
    pool: &PgPool,
    item: i64,
    resolution: &str,
    actor: &str,
) -> Result<Applied, OperatorError> {
    let mut tx = pool.begin().await?;
    Engine::lock(&mut tx).await?;
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "UPDATE review_items SET status = 'resolved', resolution = $2, resolved_by = $3, closed_at = now()
         WHERE id = $1 AND status = 'open' RETURNING a_source, a_source_id, b_source, b_source_id",
    )
    .bind(item)
    .bind(resolution)
    .bind(actor)
    .fetch_optional(&mut *tx)
    .await?;
    let (a0, a1, b0, b1) = row.ok_or(OperatorError::NotOpen(item))?;
    let note = format!("review item {item}");
    let applied = decide_in(
        engine,
        &mut tx,
        resolution,
        &(a0, a1),
        &(b0, b1),
        actor,
        Some(&note),
    )
    .await?;
    tx.commit().await?;
    Ok(applied)
}

/// One step of an explanation: a link and how the fields agreed.
#[derive(Debug, Clone)]
pub struct Step {
    pub a: Rec,
    pub b: Rec,
    pub rule: String,
    pub score: f32,
    pub evidence: Value,
}

/// Why two records are (or are not) one person: the chain of links between
/// them inside their person (shortest path), or the stored pair and any
/// decision if they are apart. No values, only agreements.
pub async fn why(pool: &PgPool, a: &Rec, b: &Rec) -> Result<Explanation, OperatorError> {
    let person = |r: &Rec| {
        sqlx::query_scalar::<_, i64>(
            "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
        )
        .bind(r.0.clone())
        .bind(r.1.clone())
        .fetch_optional(pool)
    };
    let pa = person(a).await?;
    let pb = person(b).await?;
    let decisions: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT kind, actor, created_at FROM match_decisions WHERE revoked_at IS NULL
         AND ((a_source, a_source_id, b_source, b_source_id) = ($1, $2, $3, $4)
           OR (a_source, a_source_id, b_source, b_source_id) = ($3, $4, $1, $2))",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .fetch_all(pool)
    .await?;
    let mut path = Vec::new();
    if let (Some(x), Some(y)) = (pa, pb) {
        if x == y {
            // Links inside the person, breadth-first from a.
            let edges: Vec<(String, String, String, String, String, f32, Value)> = sqlx::query_as(
                "WITH m AS (SELECT source, source_id FROM person_memberships WHERE person_id = $1 AND valid_to IS NULL)
                 SELECT a_source, a_source_id, b_source, b_source_id, rule, score, evidence FROM match_pairs
                 WHERE decision = 'link' AND (a_source, a_source_id) IN (SELECT * FROM m)
                   AND (b_source, b_source_id) IN (SELECT * FROM m)
                 UNION ALL
                 SELECT a_source, a_source_id, b_source, b_source_id, 'operator', 0, jsonb_build_object('actor', actor)
                 FROM match_decisions WHERE kind = 'link' AND revoked_at IS NULL
                   AND (a_source, a_source_id) IN (SELECT * FROM m) AND (b_source, b_source_id) IN (SELECT * FROM m)",
            )
            .bind(x)
            .fetch_all(pool)
            .await?;
            let steps: Vec<Step> = edges
                .into_iter()
                .map(|(a0, a1, b0, b1, rule, score, evidence)| Step {
                    a: (a0, a1),
                    b: (b0, b1),
                    rule,
                    score,
                    evidence,
                })
                .collect();
            path = shortest_path(&steps, a, b);
        }
    }
    let pair: Option<(String, String, f32, Value)> = sqlx::query_as(
        "SELECT decision, rule, score, evidence FROM match_pairs
         WHERE (a_source, a_source_id, b_source, b_source_id) = ($1, $2, $3, $4)
            OR (a_source, a_source_id, b_source, b_source_id) = ($3, $4, $1, $2)",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .fetch_optional(pool)
    .await?;
    Ok(Explanation {
        person_a: pa,
        person_b: pb,
        path,
        pair,
        decisions: decisions.into_iter().map(|(k, a, _)| (k, a)).collect(),
    })
}

#[derive(Debug)]
pub struct Explanation {
    pub person_a: Option<i64>,
    pub person_b: Option<i64>,
    /// The links joining them, in order from a to b (empty if apart).
    pub path: Vec<Step>,
    /// The direct pairwise decision, if the two were compared.
    pub pair: Option<(String, String, f32, Value)>,
    /// Active operator decisions on the pair: (kind, actor).
    pub decisions: Vec<(String, String)>,
}

fn shortest_path(steps: &[Step], from: &Rec, to: &Rec) -> Vec<Step> {
    use std::collections::{HashMap, VecDeque};
    let mut adj: HashMap<&Rec, Vec<(usize, &Rec)>> = HashMap::new();
    for (n, s) in steps.iter().enumerate() {
        adj.entry(&s.a).or_default().push((n, &s.b));
        adj.entry(&s.b).or_default().push((n, &s.a));
    }
    let mut prev: HashMap<&Rec, (usize, &Rec)> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = std::collections::HashSet::from([from]);
    while let Some(r) = queue.pop_front() {
        if r == to {
            break;
        }
        for &(n, next) in adj.get(r).into_iter().flatten() {
            if seen.insert(next) {
                prev.insert(next, (n, r));
                queue.push_back(next);
            }
        }
    }
    let mut path = Vec::new();
    let mut cur = to;
    while let Some(&(n, p)) = prev.get(cur) {
        path.push(steps[n].clone());
        cur = p;
    }
    path.reverse();
    path
}
