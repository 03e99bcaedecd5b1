//! Where records are loaded: the PostgreSQL side of the loader.
//!
//! One batch is one transaction: reference rows it needs (new business
//! units), a set-based, version-guarded upsert of its records, the
//! change-feed rows for what changed, and the dead letters of its poison
//! records (whole messages, or single records of batch messages). The caller acks the batch only after [`Store::write`] returned.
//!
//! Only sources registered in table `sources` (`etl sources register`) are
//! loaded: a record of any other source is a dead letter `unknown_source`,
//! so a message published on a new subject cannot create a source.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use proto::{Envelope, Operation, PatientRecord};
use sqlx::{PgPool, Postgres, Transaction};

use crate::batch::Rejection;

/// A record to load, with the stream sequence of its message.
pub struct LoadRow<'a> {
    pub envelope: &'a Envelope,
    pub stream_seq: u64,
    /// The message's `traceparent` header, stored with the change it makes.
    pub traceparent: Option<&'a str>,
}

/// A record set aside (a whole message, or one record of a batch message),
/// with everything needed to retry it later.
pub struct DeadLetter {
    /// The message's stream sequence; 0 when its position is unknown (the
    /// row then gets a unique negative `stream_seq`).
    pub stream_seq: u64,
    /// Its index in its message (0 for a single-envelope message).
    pub item: u32,
    pub subject: String,
    pub delivered: i64,
    pub payload: Bytes,
    pub rejection: Rejection,
    /// The message's `traceparent` header, kept so that a retry joins the
    /// publisher's trace.
    pub traceparent: Option<String>,
}

/// One record of a stream message after decoding and validation, as
/// [`Store::write_examined`] takes it (a batch message gives one per record).
pub struct Examined<'a> {
    pub stream_seq: u64,
    /// The record's index in its message.
    pub item: u32,
    pub subject: &'a str,
    pub delivered: i64,
    /// The record's own bytes (see [`crate::batch::Verdict::payload`]).
    pub payload: &'a Bytes,
    pub verdict: &'a Result<Envelope, Rejection>,
    /// The message's `traceparent` header, if it had one.
    pub traceparent: Option<&'a str>,
}

/// What one write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Same or older content than what was stored: nothing changed.
    pub unchanged: u64,
    pub dead_lettered: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, o: Written) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.unchanged += o.unchanged;
        self.dead_lettered += o.dead_lettered;
    }
}

pub struct Store {
    pool: PgPool,
    stream: String,
    /// Sources found registered in `sources` (registrations are never
    /// taken back, so a source found once stays loadable). One not found is
    /// looked up again in each batch that names it: a registration takes
    /// effect without a restart.
    registered_sources: Mutex<HashSet<String>>,
    /// Business units known to exist, so that a batch only inserts new ones.
    known_units: Mutex<HashSet<String>>,
}

impl Store {
    pub fn new(pool: PgPool, stream: impl Into<String>) -> Self {
        Store {
            pool,
            stream: stream.into(),
            registered_sources: Mutex::new(HashSet::new()),
            known_units: Mutex::new(HashSet::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations under sqlx's advisory lock: safe when
    /// several loaders start at once.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        etl_runtime::database::MIGRATOR.run(&self.pool).await
    }

    /// Writes examined messages as the loader does: the newest version per
    /// record of a registered source is loaded; the rejected ones, and those
    /// of a source not registered (`unknown_source`), become dead letters,
    /// all in one transaction. Used by the loader's consume loop and by `etl
    /// replay`, so a replay applies exactly what a live load would.
    pub async fn write_examined(&self, examined: &[Examined<'_>]) -> Result<Written, sqlx::Error> {
        let named = examined.iter().filter_map(|e| e.verdict.as_ref().ok());
        let unregistered = self
            .unregistered(named.map(|envelope| envelope.source.as_str()))
            .await?;
        let mut loads = Vec::with_capacity(examined.len());
        let mut dead = Vec::new();
        for e in examined {
            match e.verdict {
                Ok(envelope) if !unregistered.contains(&envelope.source) => loads.push(LoadRow {
                    envelope,
                    stream_seq: e.stream_seq,
                    traceparent: e.traceparent,
                }),
                Ok(envelope) => dead.push(dead_letter(e, unknown_source(envelope))),
                Err(rejection) => dead.push(dead_letter(e, rejection.clone())),
            }
        }
        let loads = crate::batch::newest_per_key(loads, |row| row.envelope);
        self.write(&loads, &dead).await
    }

    /// The sources among `names` that are not registered in `sources`.
    async fn unregistered<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<HashSet<String>, sqlx::Error> {
        let unknown = unknown(&self.registered_sources, names);
        if unknown.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sources WHERE name = ANY($1::text[])")
                .bind(&unknown)
                .fetch_all(&self.pool)
                .await?;
        let mut unregistered: HashSet<String> = unknown.into_iter().collect();
        for name in &found {
            unregistered.remove(name);
        }
        self.registered_sources.lock().unwrap().extend(found);
        Ok(unregistered)
    }

    /// Writes `envelopes` in one transaction as messages of stream
    /// sequences `first_seq`, `first_seq + 1`, …, without traceparents: for
    /// loads that do not come through the bus (`etl evaluate-sets`, tests,
    /// benchmarks).
    pub async fn write_envelopes(
        &self,
        envelopes: &[Envelope],
        first_seq: u64,
    ) -> Result<Written, sqlx::Error> {
        let rows: Vec<LoadRow> = envelopes
            .iter()
            .enumerate()
            .map(|(i, envelope)| LoadRow {
                envelope,
                stream_seq: first_seq + i as u64,
                traceparent: None,
            })
            .collect();
        self.write(&rows, &[]).await
    }

    /// Writes one batch in one transaction. `rows` must hold each record at
    /// most once (see [`crate::batch::newest_per_key`]) and only records of
    /// registered sources: this does not check ([`Store::write_examined`]
    /// does; tests and benchmarks write through here directly).
    pub async fn write(
        &self,
        rows: &[LoadRow<'_>],
        dead: &[DeadLetter],
    ) -> Result<Written, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let new_units = self.ensure_units(&mut tx, rows).await?;
        let mut written = upsert(&mut tx, rows).await?;
        written.dead_lettered = self.insert_dead_letters(&mut tx, dead).await?;
        if written.inserted + written.updated + written.deleted > 0 {
            // Delivered on commit: wakes the matcher without polling.
            sqlx::query("SELECT pg_notify('record_changes', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.known_units.lock().unwrap().extend(new_units);
        for d in dead {
            log_dead_letter(d);
        }
        Ok(written)
    }

    /// Inserts the business units this batch names that are not known yet;
    /// returns them to be remembered after commit.
    async fn ensure_units(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[LoadRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let new_units = unknown(
            &self.known_units,
            rows.iter()
                .filter_map(|r| r.envelope.record.as_ref()?.business_unit.as_deref()),
        );
        if !new_units.is_empty() {
            sqlx::query("INSERT INTO business_units (code) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING")
                .bind(&new_units)
                .execute(&mut **tx)
                .await?;
        }
        Ok(new_units)
    }

    async fn insert_dead_letters(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        dead: &[DeadLetter],
    ) -> Result<u64, sqlx::Error> {
        if dead.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = dead.iter().map(|d| d.stream_seq as i64).collect();
        let items: Vec<i32> = dead.iter().map(|d| d.item as i32).collect();
        let subjects: Vec<String> = dead.iter().map(|d| storable(&d.subject)).collect();
        let sources: Vec<Option<String>> = dead
            .iter()
            .map(|d| d.rejection.source.as_deref().map(storable))
            .collect();
        let ids: Vec<Option<String>> = dead
            .iter()
            .map(|d| d.rejection.source_id.as_deref().map(storable))
            .collect();
        let codes: Vec<&str> = dead.iter().map(|d| d.rejection.code).collect();
        let reasons: Vec<&str> = dead.iter().map(|d| d.rejection.reason.as_str()).collect();
        let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_ref()).collect();
        let delivered: Vec<i32> = dead
            .iter()
            .map(|d| d.delivered.clamp(0, i32::MAX as i64) as i32)
            .collect();
        let traceparents: Vec<Option<&str>> =
            dead.iter().map(|d| d.traceparent.as_deref()).collect();
        // A redelivered poison message (the loader died before terminating
        // it) is already here: keep the first row. A message without a
        // stream position (`stream_seq` 0) cannot be recognised again; it
        // gets a key of its own (a negative one) and is always kept.
        sqlx::query(
            "INSERT INTO dead_letters
                 (stream, stream_seq, item, subject, source, source_id, reason_code, reason, payload,
                  delivered, traceparent)
             SELECT $1,
                    CASE WHEN d.seq = 0 THEN -nextval('dead_letters_without_position') ELSE d.seq END,
                    d.item, d.subject, d.source, d.source_id, d.reason_code, d.reason, d.payload,
                    d.delivered, d.traceparent
             FROM UNNEST($2::int8[], $3::int4[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::bytea[], $10::int4[], $11::text[])
                  AS d(seq, item, subject, source, source_id, reason_code, reason, payload,
                       delivered, traceparent)
             ON CONFLICT (stream, stream_seq, item) DO NOTHING",
        )
        .bind(&self.stream)
        .bind(&seqs)
        .bind(&items)
        .bind(&subjects)
        .bind(&sources)
        .bind(&ids)
        .bind(&codes)
        .bind(&reasons)
        .bind(&payloads)
        .bind(&delivered)
        .bind(&traceparents)
        .execute(&mut **tx)
        .await?;
        // Counted as dead-lettered whether this delivery or an earlier one
        // wrote the row.
        Ok(dead.len() as u64)
    }
}

fn unknown<'a>(
    known: &Mutex<HashSet<String>>,
    names: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let known = known.lock().unwrap();
    let mut new: Vec<String> = names
        .filter(|n| !known.contains(*n))
        .map(str::to_string)
        .collect();
    new.sort_unstable();
    new.dedup();
    new
}

/// A dead letter's identifiers as stored: a poison message's may be of any
/// length and hold control characters (ESC, newlines, NUL, which PostgreSQL
/// text cannot hold). Control characters are written escaped (`\u{1b}`) and
/// the text is cut at [`IDENTIFIER_CHARS`]; the payload keeps the original.
fn storable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(IDENTIFIER_CHARS));
    for (n, c) in s.chars().enumerate() {
        if n == IDENTIFIER_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest identifier a dead letter stores or logs (the schema's longest
/// source id).
const IDENTIFIER_CHARS: usize = proto::envelope::MAX_SOURCE_ID_LEN;

/// A rejected record's dead letter.
fn dead_letter(e: &Examined<'_>, rejection: Rejection) -> DeadLetter {
    DeadLetter {
        stream_seq: e.stream_seq,
        item: e.item,
        subject: e.subject.to_string(),
        delivered: e.delivered,
        payload: e.payload.clone(),
        rejection,
        // Only a well-formed header is kept (it is re-sent on retry).
        traceparent: e
            .traceparent
            .and_then(proto::trace::TraceParent::parse)
            .map(|t| t.to_string()),
    }
}

fn unknown_source(envelope: &Envelope) -> Rejection {
    Rejection {
        code: "unknown_source",
        reason: "the source is not registered in table sources (etl sources register NAME)".into(),
        source: Some(envelope.source.clone()),
        source_id: Some(envelope.source_id.clone()),
    }
}

/// One line per dead letter, after its commit: identifiers and the reason,
/// never a value (a reason never holds one; identifiers are stored form).
fn log_dead_letter(d: &DeadLetter) {
    let source = d.rejection.source.as_deref().map(storable);
    let source_id = d.rejection.source_id.as_deref().map(storable);
    tracing::warn!(
        source = source.as_deref().unwrap_or("-"),
        source_id = source_id.as_deref().unwrap_or("-"),
        stream_seq = d.stream_seq,
        item = d.item,
        reason_code = d.rejection.code,
        reason = %d.rejection.reason,
        "record set aside as a dead letter"
    );
}

/// The version-guarded, set-based upsert. A row changes only when the
/// incoming `(source_version, content_hash)` is greater than the stored one:
/// duplicates and older versions leave it as it is, whatever order they
/// arrive in. Equal content with a newer version moves only the version
/// watermark (not `updated_at`, not the change feed), so that a delayed older
/// version can never overwrite it. A delete keeps the last known content and
/// sets `deleted_at`; a later upsert brings the record back.
const UPSERT: &str = "
WITH input AS (
    SELECT * FROM UNNEST(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::date[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[],
        $13::bool[], $14::text[], $15::text[], $16::text[], $17::int2[], $18::int8[],
        $19::bytea[], $20::timestamptz[], $21::int8[], $22::bool[], $23::text[],
        $24::text[]
    ) AS t (source, source_id, business_unit, last_name, first_name, middle_name,
            birth_date, sex, documents, snils, snils_valid, oms_policy,
            oms_policy_valid, phones, emails, issues, schema_version, source_version,
            content_hash, observed_at, stream_seq, is_delete, traceparent,
            identity_key_hashes)
),
written AS (
    INSERT INTO source_records AS r (
        source, source_id, business_unit, last_name, first_name, middle_name,
        birth_date, sex, documents, snils, snils_valid, oms_policy, oms_policy_valid,
        phones, emails, issues, schema_version, source_version, content_hash,
        observed_at, stream_seq, deleted_at, identity_key_hashes)
    SELECT source, source_id, business_unit, last_name, first_name, middle_name,
        birth_date, sex, documents::jsonb, snils, snils_valid, oms_policy, oms_policy_valid,
        phones::jsonb, emails::jsonb, issues::jsonb, schema_version, source_version, content_hash,
        observed_at, stream_seq, CASE WHEN is_delete THEN now() END, identity_key_hashes::int4[]
    FROM input
    ON CONFLICT (source, source_id) DO UPDATE SET
        business_unit    = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.business_unit ELSE r.business_unit END,
        last_name        = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.last_name ELSE r.last_name END,
        first_name       = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.first_name ELSE r.first_name END,
        middle_name      = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.middle_name ELSE r.middle_name END,
        birth_date       = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.birth_date ELSE r.birth_date END,
        sex              = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.sex ELSE r.sex END,
        documents        = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.documents ELSE r.documents END,
        snils            = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.snils ELSE r.snils END,
        snils_valid      = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.snils_valid ELSE r.snils_valid END,
        oms_policy       = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.oms_policy ELSE r.oms_policy END,
        oms_policy_valid = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.oms_policy_valid ELSE r.oms_policy_valid END,
        phones           = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.phones ELSE r.phones END,
        emails           = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.emails ELSE r.emails END,
        issues           = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.issues ELSE r.issues END,
        identity_key_hashes = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.identity_key_hashes
                                   ELSE r.identity_key_hashes END,
        schema_version   = EXCLUDED.schema_version,
        source_version   = EXCLUDED.source_version,
        content_hash     = EXCLUDED.content_hash,
        observed_at      = EXCLUDED.observed_at,
        stream_seq       = EXCLUDED.stream_seq,
        updated_at       = CASE WHEN r.content_hash = EXCLUDED.content_hash THEN r.updated_at ELSE now() END,
        deleted_at       = CASE WHEN EXCLUDED.deleted_at IS NULL THEN NULL
                                ELSE coalesce(r.deleted_at, EXCLUDED.deleted_at) END
    WHERE (r.source_version, r.content_hash) < (EXCLUDED.source_version, EXCLUDED.content_hash)
    RETURNING source, source_id, source_version, content_hash,
              (xmax = 0) AS inserted, (updated_at = now()) AS changed, (deleted_at IS NOT NULL) AS deleted
),
changes AS (
    INSERT INTO record_changes (source, source_id, op, source_version, content_hash, traceparent)
    SELECT w.source, w.source_id,
           CASE WHEN w.deleted THEN 'delete' WHEN w.inserted THEN 'insert' ELSE 'update' END,
           w.source_version, w.content_hash, i.traceparent
    FROM written w JOIN input i USING (source, source_id)
    WHERE w.changed
    RETURNING op
)
SELECT count(*) FILTER (WHERE op = 'insert'),
       count(*) FILTER (WHERE op = 'update'),
       count(*) FILTER (WHERE op = 'delete')
FROM changes";

/// Column arrays for [`UPSERT`], one entry per row.
#[derive(Default)]
struct Columns<'a> {
    source: Vec<&'a str>,
    source_id: Vec<&'a str>,
    business_unit: Vec<Option<&'a str>>,
    last_name: Vec<Option<&'a str>>,
    first_name: Vec<Option<&'a str>>,
    middle_name: Vec<Option<&'a str>>,
    birth_date: Vec<Option<chrono::NaiveDate>>,
    sex: Vec<Option<&'static str>>,
    documents: Vec<String>,
    snils: Vec<Option<&'a str>>,
    snils_valid: Vec<Option<bool>>,
    oms_policy: Vec<Option<&'a str>>,
    oms_policy_valid: Vec<Option<bool>>,
    phones: Vec<String>,
    emails: Vec<String>,
    issues: Vec<String>,
    schema_version: Vec<i16>,
    source_version: Vec<i64>,
    content_hash: Vec<&'a [u8]>,
    observed_at: Vec<chrono::DateTime<chrono::Utc>>,
    stream_seq: Vec<i64>,
    is_delete: Vec<bool>,
    traceparent: Vec<Option<&'a str>>,
    /// `{h1,h2,…}` ([`crate::identity`]): never NULL, so that the
    /// table's trigger for other writers does not compute it again.
    identity_key_hashes: Vec<String>,
}

fn json_array<T: serde::Serialize>(items: &[T]) -> String {
    if items.is_empty() {
        "[]".to_string()
    } else {
        serde_json::to_string(items).expect("proto types serialize to JSON")
    }
}

impl<'a> Columns<'a> {
    fn push(&mut self, row: &LoadRow<'a>) {
        let e = row.envelope;
        static EMPTY: PatientRecord = PatientRecord {
            business_unit: None,
            last_name: None,
            first_name: None,
            middle_name: None,
            birth_date: None,
            sex: None,
            documents: Vec::new(),
            snils: None,
            oms_policy: None,
            phones: Vec::new(),
            emails: Vec::new(),
            issues: Vec::new(),
        };
        let r = e
            .record
            .as_ref()
            .filter(|_| e.op == Operation::Upsert)
            .unwrap_or(&EMPTY);
        self.source.push(&e.source);
        self.source_id.push(&e.source_id);
        self.business_unit.push(r.business_unit.as_deref());
        self.last_name.push(r.last_name.as_deref());
        self.first_name.push(r.first_name.as_deref());
        self.middle_name.push(r.middle_name.as_deref());
        self.birth_date.push(r.birth_date);
        self.sex.push(r.sex.map(|s| s.code()));
        self.documents.push(json_array(&r.documents));
        self.snils.push(r.snils.as_ref().map(|c| c.value.as_str()));
        self.snils_valid
            .push(r.snils.as_ref().map(|c| c.is_valid()));
        self.oms_policy
            .push(r.oms_policy.as_ref().map(|c| c.value.as_str()));
        self.oms_policy_valid
            .push(r.oms_policy.as_ref().map(|c| c.is_valid()));
        self.phones.push(json_array(&r.phones));
        self.emails.push(json_array(&r.emails));
        self.issues.push(json_array(&r.issues));
        self.schema_version
            .push(e.schema_version.min(i16::MAX as u16) as i16);
        self.source_version.push(e.version);
        self.content_hash.push(&e.content_hash);
        self.observed_at.push(e.observed_at);
        self.stream_seq.push(row.stream_seq as i64);
        self.is_delete.push(e.op == Operation::Delete);
        self.traceparent.push(row.traceparent);
        self.identity_key_hashes
            .push(crate::identity::key_hashes_literal(r));
    }
}

async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[LoadRow<'_>],
) -> Result<Written, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Written::default());
    }
    let mut c = Columns::default();
    for row in rows {
        c.push(row);
    }
    let (inserted, updated, deleted): (i64, i64, i64) = sqlx::query_as(UPSERT)
        .bind(&c.source)
        .bind(&c.source_id)
        .bind(&c.business_unit)
        .bind(&c.last_name)
        .bind(&c.first_name)
        .bind(&c.middle_name)
        .bind(&c.birth_date)
        .bind(&c.sex)
        .bind(&c.documents)
        .bind(&c.snils)
        .bind(&c.snils_valid)
        .bind(&c.oms_policy)
        .bind(&c.oms_policy_valid)
        .bind(&c.phones)
        .bind(&c.emails)
        .bind(&c.issues)
        .bind(&c.schema_version)
        .bind(&c.source_version)
        .bind(&c.content_hash)
        .bind(&c.observed_at)
        .bind(&c.stream_seq)
        .bind(&c.is_delete)
        .bind(&c.traceparent)
        .bind(&c.identity_key_hashes)
        .fetch_one(&mut **tx)
        .await?;
    let changed = (inserted + updated + deleted) as u64;
    Ok(Written {
        inserted: inserted as u64,
        updated: updated as u64,
        deleted: deleted as u64,
        unchanged: rows.len() as u64 - changed,
        dead_lettered: 0,
    })
}
