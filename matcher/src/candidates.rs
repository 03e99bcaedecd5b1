//! Candidates for a query record: the persons it may belong to, with the
//! model's probability and each field's contribution, best first. Nothing
//! is written. The identity service's `$match` and the steward console's
//! search by name share it.
//!
//! The query (a record normalized as the loader normalizes) is reduced to
//! the matcher's features ([`crate::features`]), and its candidates are the
//! live records that share one of its blocking keys, exactly as the matcher
//! would find them if the query were loaded as a record: identifier keys
//! through the index of their hashes ([`crate::reads::HOLDING_KEY`]),
//! the keys holding the birth date (names, initials: they need the
//! matcher's name folding) among the records of the same birth date or its
//! day/month swap; a key held by more records than `matcher.max_block_size`
//! (the query counted) is not used. Each pair is scored by the model in use
//! ([`crate::model`]) and decided by the matcher's own setup (rules or
//! model, as `[matcher] scoring` says); a person's score is its best
//! record's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use proto::PatientRecord;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::RwLock;

use crate::engine::{Scoring, Setup};
use crate::features::{decode_row, Features, SourceRow};
use crate::model::params::Scored;
use crate::model::{Model, FIELDS};

/// How often the model version in use is checked.
const MODEL_CHECK: Duration = Duration::from_secs(5);

/// The setup deciding pairs and the model scoring them, as the matcher has
/// them now (reloaded when `match_state.model_version` changes).
pub struct Scorer {
    base: Setup,
    current: RwLock<Current>,
}

struct Current {
    setup: Arc<Setup>,
    /// Scores the candidates: the setup's model when it decides by one.
    model: Arc<Model>,
    version: Option<i64>,
    checked: Instant,
}

impl Scorer {
    pub fn new(base: Setup) -> Scorer {
        // The model scoring the pairs is the one deciding them, if the
        // setup decides by a model.
        let model = match &base.scoring {
            Scoring::Model { model, .. } => model.clone(),
            Scoring::Rules(_) => Arc::new(Model::priors()),
        };
        Scorer {
            current: RwLock::new(Current {
                setup: Arc::new(base.clone()),
                model,
                version: None,
                // Checked on first use.
                checked: Instant::now() - MODEL_CHECK * 2,
            }),
            base,
        }
    }

    /// The setup and model in use.
    pub async fn get(&self, pool: &PgPool) -> sqlx::Result<(Arc<Setup>, Arc<Model>)> {
        {
            let c = self.current.read().await;
            if c.checked.elapsed() < MODEL_CHECK {
                return Ok((c.setup.clone(), c.model.clone()));
            }
        }
        let mut c = self.current.write().await;
        if c.checked.elapsed() >= MODEL_CHECK {
            let version: Option<i64> = sqlx::query_scalar("SELECT model_version FROM match_state")
                .fetch_one(pool)
                .await?;
            if version != c.version || c.model.version != version {
                let mut conn = pool.acquire().await?;
                let model = crate::model::store::load_active(&mut conn).await?;
                let mut setup = self.base.clone();
                if let Scoring::Model { model: m, .. } = &mut setup.scoring {
                    *m = Arc::new(model.clone());
                }
                c.setup = Arc::new(setup);
                c.model = Arc::new(model);
                c.version = version;
            }
            c.checked = Instant::now();
        }
        Ok((c.setup.clone(), c.model.clone()))
    }

    /// The link probability above which a candidate is certain.
    pub fn link_probability(&self) -> Option<f64> {
        match &self.base.scoring {
            Scoring::Model { thresholds, .. } => Some(thresholds.link_probability),
            Scoring::Rules(_) => None,
        }
    }
}

/// One field's part in a candidate's score.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldContribution {
    /// The comparison level (`exact`, `one_edit`, `differs`, …).
    pub level: &'static str,
    /// Bits added to the match weight (negative: against).
    pub weight: f64,
}

/// A candidate person.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Candidate {
    pub person_id: i64,
    /// The model's probability that the query is this person (its best
    /// record's).
    pub probability: f64,
    /// log2 of the odds.
    pub weight: f64,
    /// What the matcher would do with the pair: `link`, `review`,
    /// `conflict` or `none`.
    pub decision: &'static str,
    /// The guard that keeps the pair apart, if one does.
    pub blocked_by: Option<String>,
    /// FHIR match grade: `certain` (link), `probable` (review), `possible`,
    /// `certainly-not` (a guard or conflict).
    pub grade: &'static str,
    /// The person's record that scored best.
    pub source: String,
    pub source_id: String,
    /// Each compared field (missing ones are absent).
    pub fields: BTreeMap<&'static str, FieldContribution>,
}

/// The query's candidate persons, best first, at most `limit`.
pub async fn candidates(
    pool: &PgPool,
    scorer: &Scorer,
    query: &PatientRecord,
    max_birth_date_block: i64,
    limit: usize,
) -> sqlx::Result<(Vec<Candidate>, Option<i64>)> {
    let (setup, model) = scorer.get(pool).await?;
    let row = SourceRow::of_record("", "", query);
    let me = Features::of(&row);
    let rows = blocked(pool, &me, setup.max_block_size, max_birth_date_block).await?;
    let recs: Vec<(String, String)> = rows
        .iter()
        .map(|f| (f.source.clone(), f.source_id.clone()))
        .collect();
    let person_of: HashMap<(String, String), i64> = crate::reads::persons_of(pool, &recs)
        .await?
        .into_iter()
        .map(|(s, i, p)| ((s, i), p))
        .collect();
    let mut best: HashMap<i64, Candidate> = HashMap::new();
    for f in &rows {
        let Some(&person) = person_of.get(&(f.source.clone(), f.source_id.clone())) else {
            continue;
        };
        let c = score(&setup, &model, &me, f, person);
        let better = best
            .get(&person)
            .is_none_or(|b| (c.probability, c.weight) > (b.probability, b.weight));
        if better {
            best.insert(person, c);
        }
    }
    let mut list: Vec<Candidate> = best.into_values().collect();
    list.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(b.weight.total_cmp(&a.weight))
            .then(a.person_id.cmp(&b.person_id))
    });
    list.truncate(limit);
    Ok((list, model.version))
}

/// What the matcher would do with a pair: the decision and the guard
/// that keeps it apart, if one does.
struct Verdict {
    decision: &'static str,
    blocked_by: Option<String>,
}

/// The matcher's decision on `me` and `other`. With the model, on the
/// weights already computed (`scored`: the scorer's model is the setup's);
/// with the rules, by the rules.
fn verdict(setup: &Setup, me: &Features, other: &Features, scored: &Scored) -> Verdict {
    match &setup.scoring {
        Scoring::Model { model, thresholds } => {
            let outcome = model.decide_scored(me, other, scored.clone(), thresholds);
            Verdict {
                decision: outcome.as_ref().map_or("none", |o| o.decision.as_str()),
                blocked_by: outcome.and_then(|o| o.blocked_by).map(str::to_string),
            }
        }
        Scoring::Rules(_) => {
            let outcome = setup.evaluate(me, other);
            Verdict {
                decision: outcome.as_ref().map_or("none", |o| o.decision.as_str()),
                blocked_by: outcome.and_then(|o| {
                    let evidence = o.evidence.value();
                    evidence.get("blocked_by")?.as_str().map(str::to_string)
                }),
            }
        }
    }
}

fn score(setup: &Setup, model: &Model, me: &Features, other: &Features, person: i64) -> Candidate {
    let scored = model.score(me, other);
    let Verdict {
        decision,
        blocked_by,
    } = verdict(setup, me, other, &scored);
    let guarded = crate::model::params::guard(me, other, &scored.levels).is_some();
    let grade = match decision {
        "link" => "certain",
        "review" => "probable",
        _ if guarded || decision == "conflict" => "certainly-not",
        _ => "possible",
    };
    let mut fields = BTreeMap::new();
    for field in FIELDS {
        if let (Some(level), Some(w)) = (
            scored.levels[field.index()],
            scored.contributions[field.index()],
        ) {
            fields.insert(
                field.name(),
                FieldContribution {
                    level: field.levels()[level as usize],
                    weight: (w * 100.0).round() / 100.0,
                },
            );
        }
    }
    Candidate {
        person_id: person,
        probability: scored.probability,
        weight: (scored.weight * 100.0).round() / 100.0,
        decision,
        blocked_by,
        grade,
        source: other.source.clone(),
        source_id: other.source_id.clone(),
        fields,
    }
}

/// The live records sharing a usable blocking key with `me`.
async fn blocked(
    pool: &PgPool,
    me: &Features,
    max_block_size: i64,
    max_birth_date_block: i64,
) -> sqlx::Result<Vec<Features>> {
    let keys = me.keys();
    // A key is usable when its holders, the query included, are at most
    // `max_block_size`.
    let room = (max_block_size - 1).max(0);
    // Identifier keys are found through the index of their hashes
    // (`reads::HOLDING_KEY`); every other key (surname, first name and
    // patronymic, initials) holds the birth key, so its holders are among
    // the records of the birth date or its swap.
    let (id_keys, name_keys): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| proto::identifier_key::is_identifier(k));
    let mut found: HashMap<(String, String), Features> = HashMap::new();
    let mut unusable: HashSet<String> = HashSet::new();
    for key in id_keys {
        // Only fixed fragments are interpolated; every value is bound.
        let sql = format!(
            "SELECT {} FROM source_records WHERE {} LIMIT $2",
            crate::row_columns!(),
            crate::reads::HOLDING_KEY
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .bind(room + 1)
            .fetch_all(pool)
            .await?;
        if rows.len() as i64 > room {
            unusable.insert(key.clone());
            continue;
        }
        for f in rows.iter().filter_map(decode_row).map(|r| Features::of(&r)) {
            found.insert((f.source.clone(), f.source_id.clone()), f);
        }
    }
    if let (Some(birth), false) = (me.birth, name_keys.is_empty()) {
        for f in same_birth(pool, birth, max_birth_date_block).await? {
            let holds: HashSet<String> = f.keys().into_iter().collect();
            if name_keys.iter().any(|k| holds.contains(*k)) {
                found.insert((f.source.clone(), f.source_id.clone()), f);
            }
        }
        // Name keys held by too many records are dropped afterwards: count
        // the holders of each among what was read.
        drop_crowded_name_keys(&mut found, me, &name_keys, unusable, room);
    }
    Ok(found.into_values().collect())
}

/// Removes the records found only through name keys whose blocks are too
/// large.
fn drop_crowded_name_keys(
    found: &mut HashMap<(String, String), Features>,
    me: &Features,
    name_keys: &[&String],
    mut unusable: HashSet<String>,
    room: i64,
) {
    let all_keys: HashMap<(String, String), HashSet<String>> = found
        .iter()
        .map(|(r, f)| (r.clone(), f.keys().into_iter().collect()))
        .collect();
    let crowded: Vec<&String> = name_keys
        .iter()
        .copied()
        .filter(|k| all_keys.values().filter(|ks| ks.contains(*k)).count() as i64 > room)
        .collect();
    if crowded.is_empty() {
        return;
    }
    unusable.extend(crowded.into_iter().cloned());
    let mine: HashSet<String> = me.keys().into_iter().collect();
    found.retain(|r, _| {
        all_keys[r]
            .iter()
            .any(|k| mine.contains(k) && !unusable.contains(k))
    });
}

/// The live records born on `birth` or on its day/month swap; none when
/// there are more than `limit` of them.
async fn same_birth(pool: &PgPool, birth: NaiveDate, limit: i64) -> sqlx::Result<Vec<Features>> {
    let mut dates = vec![birth];
    if let Some(swap) = NaiveDate::from_ymd_opt(birth.year(), birth.day(), birth.month()) {
        if swap != birth {
            dates.push(swap);
        }
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        crate::row_columns!(),
        " FROM source_records WHERE birth_date = ANY($1) AND deleted_at IS NULL LIMIT $2"
    ))
    .bind(&dates)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    if rows.len() as i64 > limit {
        tracing::warn!(
            records = rows.len(),
            "a birth date held by too many records: names not used to find candidates"
        );
        return Ok(Vec::new());
    }
    Ok(rows
        .iter()
        .filter_map(decode_row)
        .map(|r| Features::of(&r))
        .collect())
}
