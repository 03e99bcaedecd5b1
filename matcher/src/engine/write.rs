//! The rows both paths write: many by COPY (text format), few by one
//! `INSERT … SELECT FROM UNNEST(arrays)`. COPY has no executor per row and
//! no arrays to build and unpack, but takes one round trip more (the
//! server answers the COPY before the rows are sent), which would be most
//! of the cost of an idle batch of one record. Every table written here has no row to
//! conflict with (the caller deleted or closed the old rows of the same
//! records first), so neither needs `ON CONFLICT`: a duplicate would be a
//! bug and fails the batch.
//!
//! Each table is described once ([`Table`]: its columns and their types),
//! and each kind of row gives its cells in that order ([`Cells`]): the same
//! description and the same cells serve both paths.

use serde_json::Value;
use sqlx::postgres::PgCopyIn;
use sqlx::PgConnection;

use super::types::{Evidence, PairRow, Rec};

/// From this many rows on, COPY.
const COPY_FROM: usize = 1_000;

/// A column's type, as the UNNEST path binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Text,
    Int8,
    Float4,
    Bool,
    /// Sent as text, cast by the server.
    Jsonb,
    /// JSON already serialized, stored as `json` (as written).
    Json,
}

/// A table written by [`rows`]: its columns in the order a row gives its
/// cells ([`Cells`]). The one description both write paths use.
pub(super) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Type)],
}

const PAIRS: Table = Table {
    name: "match_pairs",
    columns: &[
        ("a_source", Type::Text),
        ("a_source_id", Type::Text),
        ("b_source", Type::Text),
        ("b_source_id", Type::Text),
        ("decision", Type::Text),
        ("rule", Type::Text),
        ("score", Type::Float4),
        ("evidence", Type::Jsonb),
    ],
};

const MEMBERSHIPS: Table = Table {
    name: "person_memberships",
    columns: &[
        ("source", Type::Text),
        ("source_id", Type::Text),
        ("person_id", Type::Int8),
        ("actor", Type::Text),
        ("from_person_id", Type::Int8),
        ("rule", Type::Text),
        ("score", Type::Float4),
        ("new_person", Type::Bool),
    ],
};

const REVIEW_ITEMS: Table = Table {
    name: "review_items",
    columns: &[
        ("a_source", Type::Text),
        ("a_source_id", Type::Text),
        ("b_source", Type::Text),
        ("b_source_id", Type::Text),
        ("reason", Type::Text),
        ("score", Type::Float4),
        ("evidence", Type::Jsonb),
    ],
};

const AUDIT: Table = Table {
    name: "match_audit_events",
    columns: &[
        ("actor", Type::Text),
        ("action", Type::Text),
        ("person_id", Type::Int8),
        ("source", Type::Text),
        ("source_id", Type::Text),
        ("other_person_id", Type::Int8),
        ("other_source", Type::Text),
        ("other_source_id", Type::Text),
        ("detail", Type::Jsonb),
    ],
};

/// The outbox of person events (`engine::events`); the id and the time are
/// the table's defaults.
pub(super) const PERSON_EVENTS: Table = Table {
    name: "person_events",
    columns: &[
        ("kind", Type::Text),
        ("person_id", Type::Int8),
        ("other_person_id", Type::Int8),
        ("records", Type::Json),
    ],
};

impl Table {
    fn names(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }

    /// `INSERT … SELECT … FROM UNNEST($1::text[], …)`: one array per
    /// column, the rows inserted in the order given (a serial column
    /// numbers them in that order).
    fn insert_unnest(&self) -> String {
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(n, (_, ty))| {
                let element = match ty {
                    Type::Text | Type::Jsonb | Type::Json => "text",
                    Type::Int8 => "int8",
                    Type::Float4 => "float4",
                    Type::Bool => "bool",
                };
                format!("${}::{element}[]", n + 1)
            })
            .collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|(name, ty)| match ty {
                Type::Jsonb => format!("{name}::jsonb"),
                Type::Json => format!("{name}::json"),
                _ => name.to_string(),
            })
            .collect();
        format!(
            "INSERT INTO {} ({names}) SELECT {} FROM UNNEST({}) WITH ORDINALITY AS t({names}, n) ORDER BY n",
            self.name,
            values.join(", "),
            arrays.join(", "),
            names = self.names()
        )
    }

    /// The column at `n` of a row, checked to be of type `ty`: a row that
    /// does not fit its table is a bug.
    fn expect(&self, n: usize, ty: Type) {
        match self.columns.get(n) {
            Some((_, t)) if *t == ty => {}
            Some((name, t)) => panic!("{}.{name} is {t:?}, given {ty:?}", self.name),
            None => panic!(
                "a row of {} has more than {} cells",
                self.name,
                self.columns.len()
            ),
        }
    }
}

/// Where the cells of one row go, in the order of its table's columns:
/// arrays for UNNEST or a COPY's text.
pub(super) trait Cells<'r> {
    fn opt_text(&mut self, v: Option<&'r str>);
    fn opt_int(&mut self, v: Option<i64>);
    fn opt_float(&mut self, v: Option<f32>);
    fn bool(&mut self, v: bool);
    fn json(&mut self, v: &Value);
    /// A pair's evidence (a [`Type::Jsonb`] column).
    fn evidence(&mut self, e: &Evidence);
    /// JSON already serialized (a [`Type::Json`] column).
    fn json_text(&mut self, v: &'r str);

    fn text(&mut self, v: &'r str) {
        self.opt_text(Some(v));
    }

    fn int(&mut self, v: i64) {
        self.opt_int(Some(v));
    }

    fn float(&mut self, v: f32) {
        self.opt_float(Some(v));
    }
}

/// Writes `rows` into `table`, in order, each row's cells given by
/// `cells`: by one `INSERT … FROM UNNEST` or, from [`COPY_FROM`] rows on,
/// by COPY.
pub(super) async fn rows<'r, T>(
    conn: &mut PgConnection,
    table: &'static Table,
    rows: &'r [T],
    cells: impl Fn(&'r T, &mut dyn Cells<'r>),
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if rows.len() < COPY_FROM {
        let mut arrays = Arrays::new(table, rows.len());
        for row in rows {
            cells(row, &mut arrays);
            arrays.end_row();
        }
        return arrays.insert(conn).await;
    }
    let mut copy = CopyIn::start(conn, table).await?;
    for row in rows {
        cells(row, &mut copy);
        copy.end_row().await?;
    }
    copy.finish().await.map(drop)
}

/// One array per column, for `INSERT … FROM UNNEST`.
enum Array<'r> {
    Text(Vec<Option<&'r str>>),
    Int8(Vec<Option<i64>>),
    Float4(Vec<Option<f32>>),
    Bool(Vec<bool>),
    Jsonb(Vec<String>),
    Json(Vec<&'r str>),
}

struct Arrays<'r> {
    table: &'static Table,
    columns: Vec<Array<'r>>,
    /// The column of the next cell.
    next: usize,
}

impl<'r> Arrays<'r> {
    fn new(table: &'static Table, rows: usize) -> Arrays<'r> {
        let columns = table
            .columns
            .iter()
            .map(|(_, ty)| match ty {
                Type::Text => Array::Text(Vec::with_capacity(rows)),
                Type::Int8 => Array::Int8(Vec::with_capacity(rows)),
                Type::Float4 => Array::Float4(Vec::with_capacity(rows)),
                Type::Bool => Array::Bool(Vec::with_capacity(rows)),
                Type::Jsonb => Array::Jsonb(Vec::with_capacity(rows)),
                Type::Json => Array::Json(Vec::with_capacity(rows)),
            })
            .collect();
        Arrays {
            table,
            columns,
            next: 0,
        }
    }

    /// The array of the next cell, which must be of type `ty`.
    fn column(&mut self, ty: Type) -> &mut Array<'r> {
        self.table.expect(self.next, ty);
        self.next += 1;
        &mut self.columns[self.next - 1]
    }

    fn end_row(&mut self) {
        assert_eq!(
            self.next,
            self.columns.len(),
            "a row of {} is short",
            self.table.name
        );
        self.next = 0;
    }

    async fn insert(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        // Built from the constant descriptions above: no input in it.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.table.insert_unnest()));
        for column in self.columns {
            query = match column {
                Array::Text(v) => query.bind(v),
                Array::Int8(v) => query.bind(v),
                Array::Float4(v) => query.bind(v),
                Array::Bool(v) => query.bind(v),
                Array::Jsonb(v) => query.bind(v),
                Array::Json(v) => query.bind(v),
            };
        }
        query.execute(conn).await.map(drop)
    }
}

impl<'r> Cells<'r> for Arrays<'r> {
    fn opt_text(&mut self, v: Option<&'r str>) {
        if let Array::Text(c) = self.column(Type::Text) {
            c.push(v);
        }
    }

    fn opt_int(&mut self, v: Option<i64>) {
        if let Array::Int8(c) = self.column(Type::Int8) {
            c.push(v);
        }
    }

    fn opt_float(&mut self, v: Option<f32>) {
        if let Array::Float4(c) = self.column(Type::Float4) {
            c.push(v);
        }
    }

    fn bool(&mut self, v: bool) {
        if let Array::Bool(c) = self.column(Type::Bool) {
            c.push(v);
        }
    }

    fn json(&mut self, v: &Value) {
        if let Array::Jsonb(c) = self.column(Type::Jsonb) {
            c.push(v.to_string());
        }
    }

    fn evidence(&mut self, e: &Evidence) {
        if let Array::Jsonb(c) = self.column(Type::Jsonb) {
            c.push(e.text().into_owned());
        }
    }

    fn json_text(&mut self, v: &'r str) {
        if let Array::Json(c) = self.column(Type::Json) {
            c.push(v);
        }
    }
}

/// One COPY in progress: rows are built in a buffer sent in ~1 MiB pieces.
struct CopyIn<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    table: &'static Table,
    buf: String,
    /// The column of the next cell.
    next: usize,
}

impl<'c> CopyIn<'c> {
    async fn start(conn: &'c mut PgConnection, table: &'static Table) -> sqlx::Result<CopyIn<'c>> {
        let copy = conn
            .copy_in_raw(&format!(
                "COPY {} ({}) FROM STDIN",
                table.name,
                table.names()
            ))
            .await?;
        Ok(CopyIn {
            copy,
            table,
            buf: String::with_capacity(1 << 16),
            next: 0,
        })
    }

    /// Starts the next cell, which must be of type `ty`.
    fn cell(&mut self, ty: Type) {
        self.table.expect(self.next, ty);
        self.next += 1;
    }

    /// A text field: backslash, tab, newline and carriage return escaped.
    fn escaped(&mut self, s: &str) {
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
    }

    fn null(&mut self) {
        self.buf.push_str("\\N\t");
    }

    /// A number (`Display` of an integer or a finite float is valid input).
    fn num(&mut self, v: impl std::fmt::Display) {
        use std::fmt::Write;
        let _ = write!(self.buf, "{v}\t");
    }

    /// Ends the row; sends the buffer when it is large.
    async fn end_row(&mut self) -> sqlx::Result<()> {
        assert_eq!(
            self.next,
            self.table.columns.len(),
            "a row of {} is short",
            self.table.name
        );
        self.next = 0;
        self.buf.pop();
        self.buf.push('\n');
        if self.buf.len() > 1 << 20 {
            let full = std::mem::replace(&mut self.buf, String::with_capacity(1 << 20));
            self.copy.send(full.into_bytes()).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> sqlx::Result<u64> {
        if !self.buf.is_empty() {
            self.copy
                .send(std::mem::take(&mut self.buf).into_bytes())
                .await?;
        }
        self.copy.finish().await
    }
}

impl<'r> Cells<'r> for CopyIn<'_> {
    fn opt_text(&mut self, v: Option<&'r str>) {
        self.cell(Type::Text);
        match v {
            Some(s) => self.escaped(s),
            None => self.null(),
        }
    }

    fn opt_int(&mut self, v: Option<i64>) {
        self.cell(Type::Int8);
        match v {
            Some(v) => self.num(v),
            None => self.null(),
        }
    }

    fn opt_float(&mut self, v: Option<f32>) {
        self.cell(Type::Float4);
        match v {
            Some(v) => self.num(v),
            None => self.null(),
        }
    }

    fn bool(&mut self, v: bool) {
        self.cell(Type::Bool);
        self.buf.push_str(if v { "t\t" } else { "f\t" });
    }

    fn json(&mut self, v: &Value) {
        self.cell(Type::Jsonb);
        self.escaped(&v.to_string());
    }

    fn evidence(&mut self, e: &Evidence) {
        self.cell(Type::Jsonb);
        self.escaped(&e.text());
    }

    fn json_text(&mut self, v: &'r str) {
        self.cell(Type::Json);
        self.escaped(v);
    }
}

pub(super) async fn pairs(conn: &mut PgConnection, pairs: &[PairRow]) -> sqlx::Result<()> {
    rows(conn, &PAIRS, pairs, |p, row| {
        row.text(&p.a.0);
        row.text(&p.a.1);
        row.text(&p.b.0);
        row.text(&p.b.1);
        row.text(p.decision.as_str());
        row.text(&p.rule);
        row.float(p.score);
        row.evidence(&p.evidence);
    })
    .await
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
    rows(conn, &MEMBERSHIPS, open, |p, row| {
        row.text(&p.rec.0);
        row.text(&p.rec.1);
        row.int(p.person);
        row.text(actor);
        row.opt_int(p.old);
        row.text(p.via.rule);
        row.opt_float(p.via.finite_score());
        row.bool(p.via.new_person);
    })
    .await
}

/// A new review item.
pub(super) struct NewItem<'a> {
    pub a: &'a Rec,
    pub b: &'a Rec,
    pub reason: &'a str,
    pub score: f32,
    pub evidence: &'a Evidence,
}

pub(super) async fn review_items(
    conn: &mut PgConnection,
    items: &[NewItem<'_>],
) -> sqlx::Result<()> {
    rows(conn, &REVIEW_ITEMS, items, |it, row| {
        row.text(&it.a.0);
        row.text(&it.a.1);
        row.text(&it.b.0);
        row.text(&it.b.1);
        row.text(it.reason);
        row.float(it.score);
        row.evidence(it.evidence);
    })
    .await
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
            // `{}` for none.
            detail: match detail {
                Value::Null => Value::Object(Default::default()),
                detail => detail,
            },
        });
    }

    pub async fn write(self, conn: &mut PgConnection, actor: &str) -> sqlx::Result<()> {
        rows(conn, &AUDIT, &self.rows, |r, row| {
            row.text(actor);
            row.text(r.action);
            row.opt_int(r.person);
            row.opt_text(r.rec.as_ref().map(|r| r.0.as_str()));
            row.opt_text(r.rec.as_ref().map(|r| r.1.as_str()));
            row.opt_int(r.other_person);
            row.opt_text(r.other.as_ref().map(|r| r.0.as_str()));
            row.opt_text(r.other.as_ref().map(|r| r.1.as_str()));
            row.json(&r.detail);
        })
        .await
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
