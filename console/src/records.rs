//! Reads the pages need beyond `matcher::reads`: the filtered queue, one
//! review item, source records' fields, notes, the overview's figures.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::i18n::{Lang, Msg};

/// The queue's filters and order, as the page's query string gives them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct QueueFilter {
    /// A review reason, e.g. `model_ambiguous`.
    pub reason: Option<String>,
    /// `sourceA/sourceB` (in name order).
    pub pair: Option<String>,
    /// `low` (< 0.5), `mid` (0.5-0.8), `high` (>= 0.8).
    pub band: Option<String>,
    /// `score`, `-score`, `age` (oldest first), `-age`.
    pub sort: Option<String>,
}

impl QueueFilter {
    fn band(&self) -> (f32, f32) {
        match self.band.as_deref() {
            Some("low") => (f32::MIN, 0.5),
            Some("mid") => (0.5, 0.8),
            Some("high") => (0.8, f32::MAX),
            _ => (f32::MIN, f32::MAX),
        }
    }

    fn order(&self) -> &'static str {
        match self.sort.as_deref() {
            Some("score") => "score, id",
            Some("-age") => "created_at DESC, id DESC",
            Some("age") => "created_at, id",
            _ => "score DESC, id",
        }
    }
}

/// A row of the queue (no personal data: identifiers and scores).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: i64,
    pub a_source: String,
    pub a_source_id: String,
    pub b_source: String,
    pub b_source_id: String,
    pub reason: String,
    pub score: f32,
    pub created_at: DateTime<Utc>,
}

const QUEUE_WHERE: &str = "status = 'open'
    AND ($1::text IS NULL OR reason = $1)
    AND ($2::text IS NULL OR least(a_source, b_source) || '/' || greatest(a_source, b_source) = $2)
    AND score >= $3 AND score < $4";

/// One page of open items matching `f`, and how many match in all.
pub async fn queue(
    pool: &PgPool,
    f: &QueueFilter,
    limit: i64,
) -> sqlx::Result<(Vec<QueueRow>, i64)> {
    let (lo, hi) = f.band();
    // Only constant text is formatted in (the order is one of four).
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, a_source, a_source_id, b_source, b_source_id, reason, score, created_at
         FROM review_items WHERE {QUEUE_WHERE} ORDER BY {} LIMIT $5",
        f.order()
    )))
    .bind(&f.reason)
    .bind(&f.pair)
    .bind(lo)
    .bind(hi)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM review_items WHERE {QUEUE_WHERE}"
    )))
    .bind(&f.reason)
    .bind(&f.pair)
    .bind(lo)
    .bind(hi)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// The reasons and source pairs of open items, for the filters.
pub async fn queue_choices(pool: &PgPool) -> sqlx::Result<(Vec<String>, Vec<String>)> {
    let reasons = sqlx::query_scalar(
        "SELECT DISTINCT reason FROM review_items WHERE status = 'open' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let pairs = sqlx::query_scalar(
        "SELECT DISTINCT least(a_source, b_source) || '/' || greatest(a_source, b_source)
         FROM review_items WHERE status = 'open' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok((reasons, pairs))
}

/// A review item of any status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub id: i64,
    pub a_source: String,
    pub a_source_id: String,
    pub b_source: String,
    pub b_source_id: String,
    pub reason: String,
    pub score: f32,
    pub evidence: Value,
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn item(pool: &PgPool, id: i64) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(
        "SELECT id, a_source, a_source_id, b_source, b_source_id, reason, score, evidence, status,
                resolution, resolved_by, created_at
         FROM review_items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The open item after `id` in the default order of the queue (most
/// probable first), for "next".
pub async fn next_open(pool: &PgPool, after: &Item) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM review_items WHERE status = 'open' AND id <> $1
           AND (score < $2 OR (score = $2 AND id > $1))
         ORDER BY score DESC, id LIMIT 1",
    )
    .bind(after.id)
    .bind(after.score)
    .fetch_optional(pool)
    .await
}

/// A source record's fields as the console shows them. Personal data.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub source: String,
    pub source_id: String,
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<String>,
    pub snils: Option<String>,
    pub oms_policy: Option<String>,
    pub documents: Value,
    pub phones: Value,
    pub emails: Value,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The field names the console shows, in order (the model's names where
/// the model compares the field).
pub const FIELDS: &[&str] = &[
    "last_name",
    "first_name",
    "middle_name",
    "birth_date",
    "sex",
    "snils",
    "oms",
    "documents",
    "phone",
    "email",
];

/// A string, or the `value` of a checked value (`{value, problem}`).
fn text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("value").and_then(Value::as_str))
}

/// Each item of the array `v` as `item` shows it; `; ` between.
fn join_items(v: &Value, item: impl Fn(&Value) -> String) -> Option<String> {
    let items: Vec<String> = v
        .as_array()?
        .iter()
        .map(item)
        .filter(|s| !s.is_empty())
        .collect();
    (!items.is_empty()).then(|| items.join("; "))
}

/// One item's values under `keys`, space-separated.
fn item_values(d: &Value, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| d.get(*k).and_then(text))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each item's values under `keys`.
fn join_values(v: &Value, keys: &[&str]) -> Option<String> {
    join_items(v, |d| item_values(d, keys))
}

/// Each document as its type's name, series and number.
fn documents(v: &Value, l: Lang) -> Option<String> {
    join_items(v, |d| {
        let kind = d
            .get("type")
            .and_then(Value::as_u64)
            .and_then(|t| u16::try_from(t).ok())
            .map(|t| l.document_type(t));
        let series_number = item_values(d, &["series", "number"]);
        kind.into_iter()
            .chain([series_number])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

impl Record {
    /// The shown value of field `name` of [`FIELDS`], in language `l`
    /// where it has words (a document's type).
    pub fn value(&self, name: &str, l: Lang) -> Option<String> {
        match name {
            "last_name" => self.last_name.clone(),
            "first_name" => self.first_name.clone(),
            "middle_name" => self.middle_name.clone(),
            "birth_date" => self.birth_date.map(|d| d.format("%d.%m.%Y").to_string()),
            "sex" => match self.sex.as_deref() {
                Some("M") => Some(l.t(Msg::Male).to_string()),
                Some("F") => Some(l.t(Msg::Female).to_string()),
                _ => None,
            },
            "snils" => self.snils.clone(),
            "oms" => self.oms_policy.clone(),
            "documents" => documents(&self.documents, l),
            "phone" => join_values(&self.phones, &["number"]),
            "email" => join_values(&self.emails, &["address"]),
            _ => None,
        }
    }

    pub fn key(&self) -> String {
        format!("{}:{}", self.source, self.source_id)
    }
}

pub async fn records(pool: &PgPool, keys: &[(String, String)]) -> sqlx::Result<Vec<Record>> {
    let (s, i): (Vec<&str>, Vec<&str>) = keys.iter().map(|(s, i)| (s.as_str(), i.as_str())).unzip();
    sqlx::query_as(
        "SELECT r.source, r.source_id, last_name, first_name, middle_name, birth_date, sex::text AS sex,
                snils, oms_policy, documents, phones, emails, updated_at, deleted_at
         FROM source_records r JOIN UNNEST($1::text[], $2::text[]) AS k(s, i)
           ON r.source = k.s AND r.source_id = k.i
         ORDER BY r.source, r.source_id",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(pool)
    .await
}

/// A steward's note on an item.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Note {
    pub author: String,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

pub async fn notes(pool: &PgPool, item: i64) -> sqlx::Result<Vec<Note>> {
    sqlx::query_as(
        "SELECT author, note, created_at FROM review_notes WHERE item_id = $1 ORDER BY id",
    )
    .bind(item)
    .fetch_all(pool)
    .await
}

pub async fn add_note(pool: &PgPool, item: i64, author: &str, note: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO review_notes (item_id, author, note) VALUES ($1, $2, $3)")
        .bind(item)
        .bind(author)
        .bind(note)
        .execute(pool)
        .await
        .map(drop)
}

/// An operator decision by id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Decision {
    pub id: i64,
    pub kind: String,
    pub a_source: String,
    pub a_source_id: String,
    pub b_source: String,
    pub b_source_id: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn decision(pool: &PgPool, id: i64) -> sqlx::Result<Option<Decision>> {
    sqlx::query_as(
        "SELECT id, kind, a_source, a_source_id, b_source, b_source_id, revoked_at
         FROM match_decisions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}
