//! The rows both paths write: many by COPY (text format), few by one
//! `INSERT … SELECT FROM UNNEST(arrays)`. COPY has no executor per row and
//! no arrays to build and unpack, but costs two writes on the socket (the
//! data, then the end), and the second waits for the server's delayed ACK
//! of the first (Nagle: ~40 ms per COPY measured), which would dominate an
//! idle batch of one record. Every table written here has no row to
//! conflict with (the caller deleted or closed the old rows of the same
//! records first), so neither needs `ON CONFLICT`: a duplicate would be a
//! bug and fails the batch.

use serde_json::Value;
use sqlx::postgres::PgCopyIn;
use sqlx::PgConnection;

use super::types::{PairRow, Rec};

/// From this many rows on, COPY.
const COPY_FROM: usize = 1_000;

/// One COPY in progress: rows are built in a buffer sent in ~1 MiB pieces.
pub(super) struct CopyIn<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buf: String,
}

impl<'c> CopyIn<'c> {
    /// `target` is `table (col, …)`.
    pub async fn start(conn: &'c mut PgConnection, target: &str) -> sqlx::Result<CopyIn<'c>> {
        let copy = conn
            .copy_in_raw(&format!("COPY {target} FROM STDIN"))
            .await?;
        Ok(CopyIn {
            copy,
            buf: String::with_capacity(1 << 16),
        })
    }

    /// A text field: backslash, tab, newline and carriage return escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        for c in s.chars() {
            match c {
                '\\' => self.buf.push_str("\\\\"),
                '\t' => self.buf.push_str("\\t"),
                '\n' => self.buf.push_str("\\n"),
                '\r' => self.buf.push_str("\\r"),
                c => self.buf.push(c),
            }
        }
        self.buf.push('\t');
        self
    }

    pub fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.push_str("\\N\t");
        self
    }

    /// A number (`Display` of an integer or a finite float is valid input).
    pub fn num(&mut self, v: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.buf, "{v}\t");
        self
    }

    pub fn opt_num(&mut self, v: Option<impl std::fmt::Display>) -> &mut Self {
        match v {
            Some(v) => self.num(v),
            None => self.null(),
        }
    }

    /// Ends the row; sends the buffer when it is large.
    pub async fn end_row(&mut self) -> sqlx::Result<()> {
        self.buf.pop();
        self.buf.push('\n');
        if self.buf.len() > 1 << 20 {
            let full = std::mem::replace(&mut self.buf, String::with_capacity(1 << 20));
            self.copy.send(full.into_bytes()).await?;
        }
        Ok(())
    }

    pub async fn finish(mut self) -> sqlx::Result<u64> {
        if !self.buf.is_empty() {
            self.copy
                .send(std::mem::take(&mut self.buf).into_bytes())
                .await?;
        }
        self.copy.finish().await
    }
}

pub(super) async fn pairs(conn: &mut PgConnection, pairs: &[PairRow]) -> sqlx::Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    if pairs.len() < COPY_FROM {
        let mut cols: [Vec<&str>; 6] = Default::default();
        let mut scores = Vec::with_capacity(pairs.len());
        let mut evidence = Vec::with_capacity(pairs.len());
        for p in pairs {
            cols[0].push(&p.a.0);
            cols[1].push(&p.a.1);
            cols[2].push(&p.b.0);
            cols[3].push(&p.b.1);
            cols[4].push(p.decision.as_str());
            cols[5].push(&p.rule);
            scores.push(p.score);
            evidence.push(p.evidence.to_string());
        }
        sqlx::query(
            "INSERT INTO match_pairs (a_source, a_source_id, b_source, b_source_id, decision, rule, score, evidence)
             SELECT a, b, c, d, e, f, g, h::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::text[], $6::text[], $7::float4[], $8::text[]) AS t(a, b, c, d, e, f, g, h)",
        )
        .bind(&cols[0])
        .bind(&cols[1])
        .bind(&cols[2])
        .bind(&cols[3])
        .bind(&cols[4])
        .bind(&cols[5])
        .bind(&scores)
        .bind(&evidence)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let mut copy = CopyIn::start(
        conn,
        "match_pairs (a_source, a_source_id, b_source, b_source_id, decision, rule, score, evidence)",
    )
    .await?;
    for p in pairs {
        copy.text(&p.a.0)
            .text(&p.a.1)
            .text(&p.b.0)
            .text(&p.b.1)
            .text(p.decision.as_str())
            .text(&p.rule)
            .num(p.score)
            .text(&p.evidence.to_string())
            .end_row()
            .await?;
    }
    copy.finish().await.map(drop)
}

/// A record placed in a person by an application: its new current
/// membership, which also is its `assigned` (no `old` person) or `moved`
/// row of the audit log (migration `20261203120001`: the view
/// `match_audit` reads it from `person_memberships`).
pub(super) struct Placed<'a> {
    pub rec: Rec,
    pub person: i64,
    /// The person it left, if it had one.
    pub old: Option<i64>,
    pub via: Via<'a>,
}

/// New current memberships. `person_memberships.person_id` has no foreign
/// key (its per-row check was half the cost of a membership: migration
/// `20261202150001`): every person id given here was just created or read
/// as current, and debug builds (every test) check that each exists.
pub(super) async fn memberships(
    conn: &mut PgConnection,
    actor: &str,
    open: &[Placed<'_>],
) -> sqlx::Result<()> {
    if open.is_empty() {
        return Ok(());
    }
    #[cfg(debug_assertions)]
    {
        let mut persons: Vec<i64> = open.iter().map(|p| p.person).collect();
        persons.sort_unstable();
        persons.dedup();
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM UNNEST($1::int8[]) AS p(id)
             WHERE NOT EXISTS (SELECT 1 FROM persons WHERE person_id = p.id)",
        )
        .bind(&persons)
        .fetch_one(&mut *conn)
        .await?;
        assert_eq!(
            missing, 0,
            "a membership names a person that does not exist"
        );
    }
    if open.len() < COPY_FROM {
        let s: Vec<&str> = open.iter().map(|p| p.rec.0.as_str()).collect();
        let i: Vec<&str> = open.iter().map(|p| p.rec.1.as_str()).collect();
        let person: Vec<i64> = open.iter().map(|p| p.person).collect();
        let old: Vec<Option<i64>> = open.iter().map(|p| p.old).collect();
        let rule: Vec<&str> = open.iter().map(|p| p.via.rule).collect();
        let score: Vec<Option<f32>> = open.iter().map(|p| p.via.finite_score()).collect();
        let new_person: Vec<bool> = open.iter().map(|p| p.via.new_person).collect();
        sqlx::query(
            "INSERT INTO person_memberships (source, source_id, person_id, actor, from_person_id, rule, score, new_person)
             SELECT s, i, p, $1, o, r, sc, n FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[],
                    $6::text[], $7::float4[], $8::bool[]) AS t(s, i, p, o, r, sc, n)",
        )
        .bind(actor)
        .bind(&s)
        .bind(&i)
        .bind(&person)
        .bind(&old)
        .bind(&rule)
        .bind(&score)
        .bind(&new_person)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let mut copy = CopyIn::start(
        conn,
        "person_memberships (source, source_id, person_id, actor, from_person_id, rule, score, new_person)",
    )
    .await?;
    for p in open {
        copy.text(&p.rec.0)
            .text(&p.rec.1)
            .num(p.person)
            .text(actor)
            .opt_num(p.old)
            .text(p.via.rule)
            .opt_num(p.via.finite_score())
            .text(if p.via.new_person { "t" } else { "f" });
        copy.end_row().await?;
    }
    copy.finish().await.map(drop)
}

/// A new review item.
pub(super) struct NewItem<'a> {
    pub a: &'a Rec,
    pub b: &'a Rec,
    pub reason: &'a str,
    pub score: f32,
    pub evidence: &'a Value,
}

pub(super) async fn review_items(
    conn: &mut PgConnection,
    items: &[NewItem<'_>],
) -> sqlx::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    if items.len() < COPY_FROM {
        let mut cols: [Vec<&str>; 5] = Default::default();
        let mut scores = Vec::with_capacity(items.len());
        let mut evidence = Vec::with_capacity(items.len());
        for it in items {
            cols[0].push(&it.a.0);
            cols[1].push(&it.a.1);
            cols[2].push(&it.b.0);
            cols[3].push(&it.b.1);
            cols[4].push(it.reason);
            scores.push(it.score);
            evidence.push(it.evidence.to_string());
        }
        sqlx::query(
            "INSERT INTO review_items (a_source, a_source_id, b_source, b_source_id, reason, score, evidence)
             SELECT a, b, c, d, e, f, g::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::text[], $6::float4[], $7::text[]) AS t(a, b, c, d, e, f, g)",
        )
        .bind(&cols[0])
        .bind(&cols[1])
        .bind(&cols[2])
        .bind(&cols[3])
        .bind(&cols[4])
        .bind(&scores)
        .bind(&evidence)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let mut copy = CopyIn::start(
        conn,
        "review_items (a_source, a_source_id, b_source, b_source_id, reason, score, evidence)",
    )
    .await?;
    for it in items {
        copy.text(&it.a.0)
            .text(&it.a.1)
            .text(&it.b.0)
            .text(&it.b.1)
            .text(it.reason)
            .num(it.score)
            .text(&it.evidence.to_string())
            .end_row()
            .await?;
    }
    copy.finish().await.map(drop)
}

/// Why a record is in its person (the reason its membership carries, shown
/// as the `detail` of its `assigned` or `moved` row in `match_audit`; rules
/// and scores only, no values).
pub(super) struct Via<'a> {
    /// The rule of the strongest link into the person, `locked` or
    /// `operator_or_alone`.
    pub rule: &'a str,
    pub score: Option<f32>,
    /// The person was created by this application.
    pub new_person: bool,
}

impl Via<'_> {
    /// The score as stored: none when not finite (the audit wrote JSON
    /// `null` for those).
    fn finite_score(&self) -> Option<f32> {
        self.score.filter(|s| s.is_finite())
    }
}

/// One audit row.
struct AuditRow {
    action: &'static str,
    person: Option<i64>,
    rec: Option<Rec>,
    other_person: Option<i64>,
    other: Option<Rec>,
    detail: Value,
}

/// Audit rows collected during an application, written together to
/// `match_audit_events` (placements are written with their memberships:
/// [`Placed`]).
#[derive(Default)]
pub(super) struct Audit {
    rows: Vec<AuditRow>,
}

impl Audit {
    pub fn push(
        &mut self,
        action: &'static str,
        person: Option<i64>,
        rec: Option<&Rec>,
        other_person: Option<i64>,
        other: Option<&Rec>,
        detail: Value,
    ) {
        self.rows.push(AuditRow {
            action,
            person,
            rec: rec.cloned(),
            other_person,
            other: other.cloned(),
            detail,
        });
    }

    pub async fn write(self, conn: &mut PgConnection, actor: &str) -> sqlx::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        // `{}` for none.
        let detail = |r: &AuditRow| match &r.detail {
            Value::Null => "{}".to_string(),
            v => v.to_string(),
        };
        if self.rows.len() < COPY_FROM {
            let rows = &self.rows;
            let action: Vec<&str> = rows.iter().map(|r| r.action).collect();
            let person: Vec<Option<i64>> = rows.iter().map(|r| r.person).collect();
            let source: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.rec.as_ref().map(|r| r.0.as_str()))
                .collect();
            let source_id: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.rec.as_ref().map(|r| r.1.as_str()))
                .collect();
            let other_person: Vec<Option<i64>> = rows.iter().map(|r| r.other_person).collect();
            let other_source: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.other.as_ref().map(|r| r.0.as_str()))
                .collect();
            let other_source_id: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.other.as_ref().map(|r| r.1.as_str()))
                .collect();
            let details: Vec<String> = rows.iter().map(detail).collect();
            sqlx::query(
                "INSERT INTO match_audit_events (actor, action, person_id, source, source_id, other_person_id,
                                          other_source, other_source_id, detail)
                 SELECT $1, a, b, c, d, e, f, g, h::jsonb FROM UNNEST($2::text[], $3::int8[], $4::text[],
                        $5::text[], $6::int8[], $7::text[], $8::text[], $9::text[]) AS t(a, b, c, d, e, f, g, h)",
            )
            .bind(actor)
            .bind(&action)
            .bind(&person)
            .bind(&source)
            .bind(&source_id)
            .bind(&other_person)
            .bind(&other_source)
            .bind(&other_source_id)
            .bind(&details)
            .execute(conn)
            .await?;
            return Ok(());
        }
        let mut copy = CopyIn::start(
            conn,
            "match_audit_events (actor, action, person_id, source, source_id, other_person_id,
                          other_source, other_source_id, detail)",
        )
        .await?;
        for r in &self.rows {
            copy.text(actor)
                .text(r.action)
                .opt_num(r.person)
                .opt_text(r.rec.as_ref().map(|r| r.0.as_str()))
                .opt_text(r.rec.as_ref().map(|r| r.1.as_str()))
                .opt_num(r.other_person)
                .opt_text(r.other.as_ref().map(|r| r.0.as_str()))
                .opt_text(r.other.as_ref().map(|r| r.1.as_str()));
            copy.text(&detail(r)).end_row().await?;
        }
        copy.finish().await.map(drop)
    }
}

/// Appends one audit row (operator actions).
pub async fn audit_one(
    tx: &mut PgConnection,
    actor: &str,
    action: &'static str,
    person: Option<i64>,
    rec: Option<&Rec>,
    other: Option<&Rec>,
    detail: Value,
) -> sqlx::Result<()> {
    let mut a = Audit::default();
    a.push(action, person, rec, None, other, detail);
    a.write(tx, actor).await
}
