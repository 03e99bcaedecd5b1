//! Reads of the matcher's tables for the services that show them (the
//! identity service's API, the steward console): persons and where merged
//! ones went, members, history, the golden view, records by identifier,
//! open review items. The OpenAPI schemas of the rows come with the
//! `openapi` feature (the identity service's).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// Most merges followed from one id (a chain longer than this is a bug).
const MAX_HOPS: usize = 64;

/// Most rows of one kind a person's history lists (newest kept).
const HISTORY_LIMIT: i64 = 1_000;

/// A row of `persons`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PersonRow {
    pub person_id: i64,
    pub locked: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// What a person id stands for now.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A current person.
    Live(PersonRow),
    /// Retired because all its records went to one person (a merge),
    /// maybe through several merges: `chain` is every id after the asked
    /// one, ending with the live survivor.
    Merged {
        chain: Vec<i64>,
    },
    /// Retired without one survivor: its records were deleted (no
    /// successors) or went to several persons (a split).
    Retired {
        person: PersonRow,
        successors: Vec<i64>,
    },
    Unknown,
}

async fn person(pool: &PgPool, id: i64) -> sqlx::Result<Option<PersonRow>> {
    sqlx::query_as(
        "SELECT person_id, locked, created_at, updated_at, retired_at FROM persons WHERE person_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The persons that received the records a retired person held when it
/// was retired: its memberships closed in the retiring transaction, and the
/// records' memberships opened in it (one `now()` for both).
async fn successors(pool: &PgPool, p: &PersonRow, at: DateTime<Utc>) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT DISTINCT n.person_id FROM person_memberships o
         JOIN person_memberships n ON n.source = o.source AND n.source_id = o.source_id
                                  AND n.valid_from = o.valid_to
         WHERE o.person_id = $1 AND o.valid_to = $2 AND n.person_id <> $1
         ORDER BY 1",
    )
    .bind(p.person_id)
    .bind(at)
    .fetch_all(pool)
    .await
}

/// Follows merges from `id` to the person that holds its records now.
pub async fn resolve(pool: &PgPool, id: i64) -> sqlx::Result<Resolved> {
    let Some(mut current) = person(pool, id).await? else {
        return Ok(Resolved::Unknown);
    };
    let mut chain = Vec::new();
    for _ in 0..MAX_HOPS {
        let Some(retired_at) = current.retired_at else {
            return Ok(if chain.is_empty() {
                Resolved::Live(current)
            } else {
                Resolved::Merged { chain }
            });
        };
        let next = successors(pool, &current, retired_at).await?;
        let [only] = next[..] else {
            // Where the trail ends without one survivor, the asked id is
            // reported retired with the successors found there.
            if chain.is_empty() {
                return Ok(Resolved::Retired {
                    person: current,
                    successors: next,
                });
            }
            let first = person(pool, id).await?.expect("it was read above");
            return Ok(Resolved::Retired {
                person: first,
                successors: next,
            });
        };
        if chain.contains(&only) || only == id {
            break;
        }
        chain.push(only);
        current = match person(pool, only).await? {
            Some(p) => p,
            None => break,
        };
    }
    tracing::warn!(person = id, "merge chain does not end in a live person");
    let first = person(pool, id).await?.expect("it was read above");
    Ok(Resolved::Retired {
        person: first,
        successors: Vec::new(),
    })
}

/// A current member record of a person.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub source: String,
    pub source_id: String,
    /// When the record joined the person.
    pub since: DateTime<Utc>,
}

pub async fn members(pool: &PgPool, person: i64) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT source, source_id, valid_from AS since FROM person_memberships
         WHERE person_id = $1 AND valid_to IS NULL ORDER BY source, source_id",
    )
    .bind(person)
    .fetch_all(pool)
    .await
}

/// The current person of a record, and since when.
pub async fn person_of_record(
    pool: &PgPool,
    source: &str,
    source_id: &str,
) -> sqlx::Result<Option<(i64, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT person_id, valid_from FROM person_memberships
         WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
    )
    .bind(source)
    .bind(source_id)
    .fetch_optional(pool)
    .await
}

/// Whether `source_records` holds the record (deleted or not).
pub async fn record_known(pool: &PgPool, source: &str, source_id: &str) -> sqlx::Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM source_records WHERE source = $1 AND source_id = $2")
            .bind(source)
            .bind(source_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// One placement of a record in the person (open or closed).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placement {
    pub source: String,
    pub source_id: String,
    pub joined_at: DateTime<Utc>,
    /// When the record left the person (moved or deleted); none: current.
    pub left_at: Option<DateTime<Utc>>,
    /// Who placed it (`matcher`); none for placements older than the field.
    pub actor: Option<String>,
    /// The person it came from.
    pub from_person_id: Option<i64>,
    /// The strongest link into the person (a rule name) and its score.
    pub rule: Option<String>,
    pub score: Option<f32>,
}

/// One row of the audit log about the person (lock, unlock, retired,
/// review items; operator decisions are listed in `decisions`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub source: Option<String>,
    pub source_id: Option<String>,
    pub other_person_id: Option<i64>,
    pub other_source: Option<String>,
    pub other_source_id: Option<String>,
    /// Rules, scores and decision ids; no values.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: Value,
}

/// An operator decision that names one of the person's records.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionRow {
    pub id: i64,
    /// `link` or `keep_apart`.
    pub kind: String,
    pub a_source: String,
    pub a_source_id: String,
    pub b_source: String,
    pub b_source_id: String,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A person's history: its placements, audit events and the decisions on
/// its records.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub placements: Vec<Placement>,
    pub events: Vec<Event>,
    pub decisions: Vec<DecisionRow>,
}

pub async fn history(pool: &PgPool, person: i64) -> sqlx::Result<History> {
    let placements = sqlx::query_as(
        "SELECT * FROM (
             SELECT id, source, source_id, valid_from AS joined_at, valid_to AS left_at, actor,
                    from_person_id, rule, score
             FROM person_memberships WHERE person_id = $1 ORDER BY id DESC LIMIT $2) t
         ORDER BY id",
    )
    .bind(person)
    .bind(HISTORY_LIMIT)
    .fetch_all(pool)
    .await?;
    let events = sqlx::query_as(
        "SELECT * FROM (
             SELECT id, at, actor, action, source, source_id, other_person_id, other_source,
                    other_source_id, detail
             FROM match_audit_events WHERE person_id = $1 ORDER BY id DESC LIMIT $2) t
         ORDER BY id",
    )
    .bind(person)
    .bind(HISTORY_LIMIT)
    .fetch_all(pool)
    .await?;
    let decisions = sqlx::query_as(
        "WITH m AS (SELECT source, source_id FROM person_memberships
                    WHERE person_id = $1 AND valid_to IS NULL)
         SELECT id, kind, a_source, a_source_id, b_source, b_source_id, actor, created_at, revoked_at
         FROM match_decisions d
         WHERE (a_source, a_source_id) IN (SELECT * FROM m) OR (b_source, b_source_id) IN (SELECT * FROM m)
         ORDER BY id LIMIT $2",
    )
    .bind(person)
    .bind(HISTORY_LIMIT)
    .fetch_all(pool)
    .await?;
    Ok(History {
        placements,
        events,
        decisions,
    })
}

/// The golden view of a person (`person_golden`): for each field the value
/// of the most trusted record that has one. Personal data.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Golden {
    pub person_id: i64,
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub birth_date: Option<chrono::NaiveDate>,
    /// `M`, `F`; none when unknown.
    pub sex: Option<String>,
    pub snils: Option<String>,
    pub oms_policy: Option<String>,
    /// As the loader stores them: `[{type, series, number, problem, …}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub documents: Option<sqlx::types::Json<Value>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub phones: Option<sqlx::types::Json<Value>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub emails: Option<sqlx::types::Json<Value>>,
}

pub async fn golden(pool: &PgPool, persons: &[i64]) -> sqlx::Result<Vec<Golden>> {
    sqlx::query_as(
        "SELECT person_id, last_name, first_name, middle_name, birth_date, sex::text AS sex, snils,
                oms_policy, documents, phones, emails
         FROM person_golden WHERE person_id = ANY($1) ORDER BY person_id",
    )
    .bind(persons)
    .fetch_all(pool)
    .await
}

/// A live record holding an identifier, and its person (none while the
/// matcher has not placed it yet).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Holder {
    pub source: String,
    pub source_id: String,
    pub person_id: Option<i64>,
}

/// The condition of the live records holding identifier key `$1`, for a
/// query on `source_records`: the GIN index over the hashes of the
/// records' keys (written by the loader, migration
/// 20261207030001_identity_key_hashes.sql) finds the few rows whose keys
/// hash alike, which are then checked against the key itself.
pub const HOLDING_KEY: &str = "identity_key_hashes @> ARRAY[identity_key_hash($1::text)]
     AND identity_keys(documents, snils, snils_valid, oms_policy, oms_policy_valid,
                       phones, emails) @> ARRAY[$1::text]
     AND deleted_at IS NULL";

/// The live records whose identifiers include `key` (a blocking key such
/// as `s:<snils>`), at most `limit`; none for a key that is no identifier.
pub async fn holders(pool: &PgPool, key: &str, limit: i64) -> sqlx::Result<Vec<Holder>> {
    if !proto::identifier_key::is_identifier(key) {
        return Ok(Vec::new());
    }
    // Only fixed fragments are interpolated; every value is bound.
    let sql = format!(
        "SELECT r.source, r.source_id, m.person_id
         FROM source_records r
         LEFT JOIN person_memberships m ON m.source = r.source COLLATE \"C\"
              AND m.source_id = r.source_id COLLATE \"C\" AND m.valid_to IS NULL
         WHERE {}
         ORDER BY r.source, r.source_id LIMIT $2",
        HOLDING_KEY
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The current persons of `records`.
pub async fn persons_of(
    pool: &PgPool,
    records: &[(String, String)],
) -> sqlx::Result<Vec<(String, String, i64)>> {
    let (s, i): (Vec<&str>, Vec<&str>) = records
        .iter()
        .map(|(s, i)| (s.as_str(), i.as_str()))
        .unzip();
    sqlx::query_as(
        "SELECT m.source, m.source_id, m.person_id FROM person_memberships m
         JOIN UNNEST($1::text[], $2::text[]) AS f(s, i)
           ON m.source = f.s COLLATE \"C\" AND m.source_id = f.i COLLATE \"C\"
         WHERE m.valid_to IS NULL",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(pool)
    .await
}

/// An open review item.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewItem {
    pub id: i64,
    pub a_source: String,
    pub a_source_id: String,
    pub b_source: String,
    pub b_source_id: String,
    pub reason: String,
    pub score: f32,
    /// How each field agreed; no values.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub evidence: Value,
    pub created_at: DateTime<Utc>,
}

pub async fn open_reviews(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<ReviewItem>> {
    sqlx::query_as(
        "SELECT id, a_source, a_source_id, b_source, b_source_id, reason, score, evidence, created_at
         FROM review_items WHERE status = 'open' AND id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
