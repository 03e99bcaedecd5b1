//! The rows both paths write, by COPY (text format) rather than
//! `INSERT … UNNEST`: no executor per row, no arrays to build and unpack.
//! Every table written here has no row to conflict with (the caller deleted
//! or closed the old rows of the same records first), so COPY's lack of
//! `ON CONFLICT` is no loss: a duplicate would be a bug and fails the batch.

use serde_json::Value;
use sqlx::postgres::PgCopyIn;
use sqlx::PgConnection;

use super::{PairRow, Rec};

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

/// Blocking keys: (record, its keys).
pub(super) async fn keys(
    conn: &mut PgConnection,
    keys: &[(&str, &str, &[String])],
) -> sqlx::Result<()> {
    let mut copy = CopyIn::start(conn, "match_keys (key, source, source_id)").await?;
    for (source, id, ks) in keys {
        for k in ks.iter() {
            copy.text(k).text(source).text(id).end_row().await?;
        }
    }
    copy.finish().await.map(drop)
}

pub(super) async fn pairs(conn: &mut PgConnection, pairs: &[PairRow]) -> sqlx::Result<()> {
    if pairs.is_empty() {
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

/// New current memberships: (record, person).
pub(super) async fn memberships(conn: &mut PgConnection, open: &[(Rec, i64)]) -> sqlx::Result<()> {
    if open.is_empty() {
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

/// One audit row.
struct AuditRow {
    action: &'static str,
    person: Option<i64>,
    rec: Option<Rec>,
    other_person: Option<i64>,
    other: Option<Rec>,
    detail: Value,
}

/// Audit rows collected during an application, written together.
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
        let mut copy = CopyIn::start(
            conn,
            "match_audit (actor, action, person_id, source, source_id, other_person_id,
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
            if r.detail.is_null() {
                copy.text("{}");
            } else {
                copy.text(&r.detail.to_string());
            }
            copy.end_row().await?;
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
