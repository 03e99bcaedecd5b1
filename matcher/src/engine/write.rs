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

use super::{PairRow, Rec};

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

/// New current memberships: (record, person). `person_memberships.person_id` has no foreign
/// key (its per-row check was half the cost of a membership: migration
/// `20261202150001`): every person id given here was just created or read
/// as current, and debug builds (every test) check that each exists.
pub(super) async fn memberships(conn: &mut PgConnection, open: &[(Rec, i64)]) -> sqlx::Result<()> {
    if open.is_empty() {
        return Ok(());
    }
    #[cfg(debug_assertions)]
    {
        let mut persons: Vec<i64> = open.iter().map(|(_, p)| *p).collect();
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
        let s: Vec<&str> = open.iter().map(|(r, _)| r.0.as_str()).collect();
        let i: Vec<&str> = open.iter().map(|(r, _)| r.1.as_str()).collect();
        let p: Vec<i64> = open.iter().map(|(_, p)| *p).collect();
        sqlx::query(
            "INSERT INTO person_memberships (source, source_id, person_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])",
        )
        .bind(&s)
        .bind(&i)
        .bind(&p)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let mut copy = CopyIn::start(conn, "person_memberships (source, source_id, person_id)").await?;
    for ((s, i), p) in open {
        copy.text(s).text(i).num(p).end_row().await?;
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

/// Why a record is in its person (the detail of an `assigned` or `moved`
/// audit row; rules and scores only, no values): one per record an
/// application places, so written as JSON text directly rather than built
/// as a `serde_json::Value` first.
pub(super) struct Via<'a> {
    /// The rule of the strongest link into the person, `locked` or
    /// `operator_or_alone`.
    pub rule: &'a str,
    pub score: Option<f32>,
    /// The person was created by this application.
    pub new_person: bool,
}

impl Via<'_> {
    /// `{"rule": …, "score": …, "new_person": true}` (absent keys omitted).
    fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("{\"rule\":");
        // A JSON string of a rule name (escaped, should one ever need it).
        let _ = write!(out, "{}", Value::from(self.rule));
        if let Some(score) = self.score {
            // As serde_json writes an f32 (`1.0`, not `1`; `null` if not
            // finite).
            let _ = write!(out, ",\"score\":{}", Value::from(score));
        }
        if self.new_person {
            out.push_str(",\"new_person\":true");
        }
        out.push('}');
    }
}

/// The detail of an audit row.
enum Detail<'a> {
    Json(Value),
    Via(Via<'a>),
}

impl Detail<'_> {
    /// The row's `detail` as JSON text (`{}` for none).
    fn write_json(&self, out: &mut String) {
        match self {
            Detail::Json(Value::Null) => out.push_str("{}"),
            Detail::Json(v) => out.push_str(&v.to_string()),
            Detail::Via(via) => via.write_json(out),
        }
    }
}

/// One audit row.
struct AuditRow<'a> {
    action: &'static str,
    person: Option<i64>,
    rec: Option<Rec>,
    other_person: Option<i64>,
    other: Option<Rec>,
    detail: Detail<'a>,
}

/// Audit rows collected during an application, written together.
#[derive(Default)]
pub(super) struct Audit<'a> {
    rows: Vec<AuditRow<'a>>,
}

impl<'a> Audit<'a> {
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
            detail: Detail::Json(detail),
        });
    }

    /// An `assigned` or `moved` row: `rec` placed in `person` (from
    /// `old`) because of `via`.
    pub fn push_placed(&mut self, person: i64, rec: Rec, old: Option<i64>, via: Via<'a>) {
        self.rows.push(AuditRow {
            action: if old.is_some() { "moved" } else { "assigned" },
            person: Some(person),
            rec: Some(rec),
            other_person: old,
            other: None,
            detail: Detail::Via(via),
        });
    }

    pub async fn write(self, conn: &mut PgConnection, actor: &str) -> sqlx::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let detail = |r: &AuditRow| {
            let mut s = String::new();
            r.detail.write_json(&mut s);
            s
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
                "INSERT INTO match_audit (actor, action, person_id, source, source_id, other_person_id,
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
            "match_audit (actor, action, person_id, source, source_id, other_person_id,
                          other_source, other_source_id, detail)",
        )
        .await?;
        let mut detail = String::new();
        for r in &self.rows {
            detail.clear();
            r.detail.write_json(&mut detail);
            copy.text(actor)
                .text(r.action)
                .opt_num(r.person)
                .opt_text(r.rec.as_ref().map(|r| r.0.as_str()))
                .opt_text(r.rec.as_ref().map(|r| r.1.as_str()))
                .opt_num(r.other_person)
                .opt_text(r.other.as_ref().map(|r| r.0.as_str()))
                .opt_text(r.other.as_ref().map(|r| r.1.as_str()));
            copy.text(&detail).end_row().await?;
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

#[cfg(test)]
mod tests {
    use super::{Value, Via};

    fn json(via: Via) -> Value {
        let mut s = String::new();
        via.write_json(&mut s);
        serde_json::from_str(&s).expect("valid JSON")
    }

    /// The same detail the audit wrote when it was built as a `Value`.
    #[test]
    fn via_is_the_json_it_was() {
        let via = |rule, score, new_person| Via {
            rule,
            score,
            new_person,
        };
        assert_eq!(
            json(via("document", Some(1.0), true)),
            serde_json::json!({"rule": "document", "score": 1.0f32, "new_person": true})
        );
        assert_eq!(
            json(via("scored", Some(0.875), false)),
            serde_json::json!({"rule": "scored", "score": 0.875f32})
        );
        assert_eq!(
            json(via("locked", None, false)),
            serde_json::json!({"rule": "locked"})
        );
        assert_eq!(
            json(via("odd \"rule\"\t", Some(f32::NAN), false)),
            serde_json::json!({"rule": "odd \"rule\"\t", "score": null})
        );
    }
}
