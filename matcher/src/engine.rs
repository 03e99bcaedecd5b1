//! Where records are matched: the PostgreSQL side of the matcher.
//!
//! Every change is applied in one transaction that holds the matcher's
//! advisory lock ([`MATCH_LOCK`]): recompute the changed records' blocking
//! keys and pairwise decisions, then recompute the persons of the affected
//! component (everything connected to the changed records through links,
//! operator links and current person membership), write the differences
//! (memberships, persons, review items) and the audit rows, and delete the
//! claimed change-feed rows. A crash before commit changes nothing; the rows
//! are claimed again after a restart.
//!
//! A full re-match ([`Engine::rematch_all`]) loads everything into memory and
//! goes through the same [`Component::apply`] as the incremental path.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::cluster::{self, Edge, EdgeKind};
use crate::features::{Features, SourceRow};
use crate::rules::{self, Decision, Weights};

/// A record: (source, source id).
pub type Rec = (String, String);

/// The advisory lock every matching transaction holds: the incremental
/// service, a full re-match and the operator commands serialise on it, so two
/// instances never compute the same person at once.
pub const MATCH_LOCK: i64 = 0x6D61_7463_6865_7201;

/// What an application changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changes: u64,
    pub records: u64,
    pub moved: u64,
    pub removed: u64,
    pub persons_created: u64,
    pub persons_retired: u64,
    pub reviews_opened: u64,
    pub reviews_closed: u64,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, o: Applied) {
        self.changes += o.changes;
        self.records += o.records;
        self.moved += o.moved;
        self.removed += o.removed;
        self.persons_created += o.persons_created;
        self.persons_retired += o.persons_retired;
        self.reviews_opened += o.reviews_opened;
        self.reviews_closed += o.reviews_closed;
    }
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub weights: Weights,
    pub max_block_size: i64,
    /// Who the audit log names for automatic decisions.
    pub actor: String,
}

/// A stored pairwise decision.
#[derive(Debug, Clone)]
pub struct PairRow {
    pub a: Rec,
    pub b: Rec,
    pub decision: Decision,
    pub rule: String,
    pub score: f32,
    pub evidence: Value,
}

fn ordered(x: &Rec, y: &Rec) -> (Rec, Rec) {
    if x <= y {
        (x.clone(), y.clone())
    } else {
        (y.clone(), x.clone())
    }
}

fn split(recs: &[Rec]) -> (Vec<&str>, Vec<&str>) {
    recs.iter().map(|(s, i)| (s.as_str(), i.as_str())).unzip()
}

impl Engine {
    pub fn new(weights: Weights, max_block_size: i64) -> Engine {
        Engine {
            weights,
            max_block_size,
            actor: "matcher".into(),
        }
    }

    /// Takes the matcher lock for this transaction if it is free.
    pub async fn try_lock(tx: &mut PgConnection) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(MATCH_LOCK)
            .fetch_one(tx)
            .await
    }

    /// Waits for the matcher lock for this transaction.
    pub async fn lock(tx: &mut PgConnection) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MATCH_LOCK)
            .execute(tx)
            .await
            .map(drop)
    }

    /// Claims up to `limit` change-feed rows and applies them in one
    /// transaction. `Ok(None)` when another instance holds the lock.
    pub async fn process_batch(&self, pool: &PgPool, limit: i64) -> sqlx::Result<Option<Applied>> {
        let mut tx = pool.begin().await?;
        if !Self::try_lock(&mut tx).await? {
            return Ok(None);
        }
        let claimed: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT change_id, source, source_id, traceparent FROM record_changes
             ORDER BY change_id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Some(Applied::default()));
        }
        let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
        // Exported traces: this batch's work in each publisher's trace (a
        // child of the `traceparent` the loader stored), ended after commit.
        let _traces = etl_runtime::telemetry::continue_traces(
            claimed.iter().map(|c| c.3.as_deref()),
            |first, n| {
                tracing::info_span!(
                    "matcher.apply",
                    source = %claimed[first].1,
                    changes = n,
                    batch = claimed.len()
                )
            },
        );
        // The publishers' traces this batch continues (ids only: no
        // personal data), so that a trace search finds the matcher's work.
        let traces = trace_ids(claimed.iter().map(|c| c.3.as_deref()));
        tracing::debug!(
            changes = ids.len(),
            trace_ids = %traces.join(","),
            "claimed changes"
        );
        let mut recs: Vec<Rec> = claimed.into_iter().map(|c| (c.1, c.2)).collect();
        recs.sort();
        recs.dedup();
        let mut applied = self.recompute(&mut tx, &recs).await?;
        applied.changes = ids.len() as u64;
        sqlx::query("DELETE FROM record_changes WHERE change_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(applied))
    }

    /// Re-evaluates `changed` records (keys, pairs) and recomputes their
    /// component. The caller holds the lock.
    pub async fn recompute(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        changed: &[Rec],
    ) -> sqlx::Result<Applied> {
        let rows = load_rows(tx, changed).await?;
        let live: Vec<Features> = changed
            .iter()
            .filter_map(|r| rows.get(r))
            .filter(|row| !row.deleted)
            .map(Features::of)
            .collect();

        // Keys.
        let (s, i) = split(changed);
        sqlx::query(
            "DELETE FROM match_keys k USING UNNEST($1::text[], $2::text[]) AS f(s, i)
             WHERE k.source = f.s AND k.source_id = f.i",
        )
        .bind(&s)
        .bind(&i)
        .execute(&mut **tx)
        .await?;
        let mut keys_of: HashMap<Rec, Vec<String>> = HashMap::new();
        let (mut ks, mut kso, mut kid) = (Vec::new(), Vec::new(), Vec::new());
        for f in &live {
            let keys = f.keys();
            for k in &keys {
                ks.push(k.clone());
                kso.push(f.source.as_str());
                kid.push(f.source_id.as_str());
            }
            keys_of.insert((f.source.clone(), f.source_id.clone()), keys);
        }
        sqlx::query(
            "INSERT INTO match_keys (key, source, source_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ks)
        .bind(&kso)
        .bind(&kid)
        .execute(&mut **tx)
        .await?;

        // Pairs. Two statements, one per index: an `OR` of two `IN`s is a
        // sequential scan of the whole table.
        for sql in [
            "DELETE FROM match_pairs p USING UNNEST($1::text[], $2::text[]) AS f(s, i)
             WHERE p.a_source = f.s AND p.a_source_id = f.i",
            "DELETE FROM match_pairs p USING UNNEST($1::text[], $2::text[]) AS f(s, i)
             WHERE p.b_source = f.s AND p.b_source_id = f.i",
        ] {
            sqlx::query(sql)
                .bind(&s)
                .bind(&i)
                .execute(&mut **tx)
                .await?;
        }
        let mut all_keys: Vec<String> = ks.clone();
        all_keys.sort();
        all_keys.dedup();
        // One index lookup per key, each stopped after `max_block_size + 1`
        // holders: a key held by more records is not used, and counting all
        // holders of a switchboard number would cost more than the batch.
        let holders: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT u.key, k.source, k.source_id FROM UNNEST($1::text[]) AS u(key)
             CROSS JOIN LATERAL (SELECT source, source_id FROM match_keys m
                                 WHERE m.key = u.key LIMIT $2 + 1) k",
        )
        .bind(&all_keys)
        .bind(self.max_block_size)
        .fetch_all(&mut **tx)
        .await?;
        let mut by_key: HashMap<String, Vec<Rec>> = HashMap::new();
        for (k, s, i) in holders {
            by_key.entry(k).or_default().push((s, i));
        }
        by_key.retain(|_, holders| holders.len() as i64 <= self.max_block_size);
        let mut candidates: HashSet<Rec> = by_key.values().flatten().cloned().collect();
        for f in &live {
            candidates.remove(&(f.source.clone(), f.source_id.clone()));
        }
        let candidates: Vec<Rec> = candidates.into_iter().collect();
        let mut features: HashMap<Rec, Features> = load_rows(tx, &candidates)
            .await?
            .into_values()
            .filter(|r| !r.deleted)
            .map(|r| ((r.source.clone(), r.source_id.clone()), Features::of(&r)))
            .collect();
        for f in &live {
            features.insert((f.source.clone(), f.source_id.clone()), f.clone());
        }
        let mut pairs: HashMap<(Rec, Rec), PairRow> = HashMap::new();
        for f in &live {
            let me = (f.source.clone(), f.source_id.clone());
            for key in &keys_of[&me] {
                for other in by_key.get(key).into_iter().flatten() {
                    if *other == me {
                        continue;
                    }
                    let pair = ordered(&me, other);
                    if pairs.contains_key(&pair) {
                        continue;
                    }
                    let (Some(x), Some(y)) = (features.get(&pair.0), features.get(&pair.1)) else {
                        continue;
                    };
                    if let Some(p) = self.evaluate(x, y) {
                        pairs.insert(pair, p);
                    }
                }
            }
        }
        let pairs: Vec<PairRow> = pairs.into_values().collect();
        insert_pairs(tx, &pairs).await?;

        let component = Component::load(tx, changed).await?;
        component.apply(tx, &self.actor).await
    }

    /// The stored decision for a pair, if any.
    pub fn evaluate(&self, x: &Features, y: &Features) -> Option<PairRow> {
        let o = rules::evaluate(x, y, &self.weights)?;
        Some(PairRow {
            a: (x.source.clone(), x.source_id.clone()),
            b: (y.source.clone(), y.source_id.clone()),
            decision: o.decision,
            rule: o.rule.to_string(),
            score: o.score,
            evidence: serde_json::to_value(&o.evidence).expect("evidence serializes"),
        })
    }

    /// Recomputes everything from `source_records` (after a rule or weight
    /// change): the same result as applying every change incrementally.
    /// Claims (deletes) the change-feed rows present at its start.
    pub async fn rematch_all(&self, pool: &PgPool) -> sqlx::Result<Applied> {
        let started = std::time::Instant::now();
        let phase = |name: &str| {
            tracing::info!(
                phase = name,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "re-match"
            )
        };
        let mut tx = pool.begin().await?;
        Self::lock(&mut tx).await?;
        let changes = sqlx::query("DELETE FROM record_changes")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let rows: Vec<SourceRow> = sqlx::query_as(concat!(
            "SELECT ",
            crate::row_columns!(),
            " FROM source_records WHERE deleted_at IS NULL"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut nodes: Vec<Features> = rows.iter().map(Features::of).collect();
        drop(rows);
        phase("records loaded");
        nodes.sort_by(|a, b| (&a.source, &a.source_id).cmp(&(&b.source, &b.source_id)));

        // Keys and blocks.
        // Rebuilt from scratch: empty the tables and build their indexes
        // after the bulk copy (several times faster than maintaining them
        // row by row). All of it inside this transaction.
        for sql in [
            "TRUNCATE match_keys, match_pairs",
            "DROP INDEX match_keys_key",
            "ALTER TABLE match_keys DROP CONSTRAINT match_keys_pkey",
            "DROP INDEX match_pairs_b",
            "ALTER TABLE match_pairs DROP CONSTRAINT match_pairs_pkey",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        let mut blocks: HashMap<String, Vec<u32>> = HashMap::with_capacity(nodes.len() * 4);
        {
            let mut copy = tx
                .copy_in_raw("COPY match_keys (key, source, source_id) FROM STDIN")
                .await?;
            let mut buf = String::with_capacity(1 << 20);
            for (n, f) in nodes.iter().enumerate() {
                for k in f.keys() {
                    copy_field(&mut buf, &k);
                    buf.push('\t');
                    copy_field(&mut buf, &f.source);
                    buf.push('\t');
                    copy_field(&mut buf, &f.source_id);
                    buf.push('\n');
                    blocks.entry(k).or_default().push(n as u32);
                }
                if buf.len() > 1 << 20 {
                    copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                }
            }
            copy.send(buf.into_bytes()).await?;
            copy.finish().await?;
        }

        phase("keys written");
        // Pairs within each usable block.
        let mut seen: HashSet<(u32, u32)> = HashSet::new();
        let mut pairs: Vec<PairRow> = Vec::new();
        for members in blocks.values() {
            if members.len() < 2 || members.len() as i64 > self.max_block_size {
                continue;
            }
            for (x, &i) in members.iter().enumerate() {
                for &j in &members[x + 1..] {
                    let key = if i < j { (i, j) } else { (j, i) };
                    if !seen.insert(key) {
                        continue;
                    }
                    if let Some(p) = self.evaluate(&nodes[key.0 as usize], &nodes[key.1 as usize]) {
                        pairs.push(p);
                    }
                }
            }
        }
        drop(seen);
        drop(blocks);
        phase("pairs evaluated");
        {
            let mut copy = tx
                .copy_in_raw(
                    "COPY match_pairs (a_source, a_source_id, b_source, b_source_id, decision, rule, score, evidence) FROM STDIN",
                )
                .await?;
            let mut buf = String::with_capacity(1 << 20);
            for p in &pairs {
                for f in [&p.a.0, &p.a.1, &p.b.0, &p.b.1] {
                    copy_field(&mut buf, f);
                    buf.push('\t');
                }
                buf.push_str(p.decision.as_str());
                buf.push('\t');
                copy_field(&mut buf, &p.rule);
                buf.push('\t');
                buf.push_str(&p.score.to_string());
                buf.push('\t');
                copy_field(&mut buf, &p.evidence.to_string());
                buf.push('\n');
                if buf.len() > 1 << 20 {
                    copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                }
            }
            copy.send(buf.into_bytes()).await?;
            copy.finish().await?;
        }

        for sql in [
            "ALTER TABLE match_keys ADD CONSTRAINT match_keys_pkey PRIMARY KEY (source, source_id, key)",
            "CREATE INDEX match_keys_key ON match_keys (key)",
            "ALTER TABLE match_pairs ADD CONSTRAINT match_pairs_pkey PRIMARY KEY (a_source, a_source_id, b_source, b_source_id)",
            "CREATE INDEX match_pairs_b ON match_pairs (b_source, b_source_id)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // Fresh statistics: the incremental path's plans right after a
        // re-match must not be made from the empty table's.
        sqlx::query("ANALYZE match_keys, match_pairs")
            .execute(&mut *tx)
            .await?;
        phase("pairs written, indexes built");
        let component = Component::load_all(&mut tx, nodes, pairs).await?;
        phase("state loaded");
        let mut applied = component.apply(&mut tx, &self.actor).await?;
        applied.changes = changes;
        phase("persons written");
        tx.commit().await?;
        phase("committed");
        Ok(applied)
    }
}

/// COPY text format: backslash, tab, newline and carriage return escaped.
fn copy_field(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

async fn load_rows(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<HashMap<Rec, SourceRow>> {
    if recs.is_empty() {
        return Ok(HashMap::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<SourceRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::row_columns!(),
        " FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
           JOIN source_records r ON r.source = f.s AND r.source_id = f.i"
    ))
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.source.clone(), r.source_id.clone()), r))
        .collect())
}

async fn insert_pairs(tx: &mut PgConnection, pairs: &[PairRow]) -> sqlx::Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
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
                                      $5::text[], $6::text[], $7::float4[], $8::text[]) AS t(a, b, c, d, e, f, g, h)
         ON CONFLICT (a_source, a_source_id, b_source, b_source_id) DO UPDATE SET
             decision = EXCLUDED.decision, rule = EXCLUDED.rule, score = EXCLUDED.score,
             evidence = EXCLUDED.evidence, updated_at = now()",
    )
    .bind(&cols[0])
    .bind(&cols[1])
    .bind(&cols[2])
    .bind(&cols[3])
    .bind(&cols[4])
    .bind(&cols[5])
    .bind(&scores)
    .bind(&evidence)
    .execute(tx)
    .await?;
    Ok(())
}

/// Everything needed to recompute the persons of a set of records.
pub struct Component {
    /// Live records of the set, sorted by key.
    nodes: Vec<Features>,
    /// Records of the set that are deleted or gone.
    leaving: Vec<Rec>,
    links: Vec<PairRow>,
    /// Review and conflict pairs with at least one end in the set.
    reviews: Vec<PairRow>,
    /// Active operator decisions touching the set: (kind, a, b).
    decisions: Vec<(String, Rec, Rec)>,
    /// Current person of every record of the set and of review partners.
    person_of: HashMap<Rec, i64>,
    locked: HashSet<i64>,
    /// Open review items touching the set.
    open_items: Vec<(i64, Rec, Rec)>,
}

type RecRow = (String, String);

impl Component {
    /// The component of `seeds`: closed under links, operator links and
    /// current person membership.
    async fn load(tx: &mut PgConnection, seeds: &[Rec]) -> sqlx::Result<Component> {
        let mut set: HashSet<Rec> = seeds.iter().cloned().collect();
        let mut frontier: Vec<Rec> = seeds.to_vec();
        while !frontier.is_empty() {
            let (s, i) = split(&frontier);
            let next: Vec<RecRow> = sqlx::query_as(
                "SELECT p.b_source, p.b_source_id FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                     JOIN match_pairs p ON p.a_source = f.s AND p.a_source_id = f.i WHERE p.decision = 'link'
                 UNION SELECT p.a_source, p.a_source_id FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                     JOIN match_pairs p ON p.b_source = f.s AND p.b_source_id = f.i WHERE p.decision = 'link'
                 UNION SELECT d.b_source, d.b_source_id FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                     JOIN match_decisions d ON d.a_source = f.s AND d.a_source_id = f.i
                     WHERE d.kind = 'link' AND d.revoked_at IS NULL
                 UNION SELECT d.a_source, d.a_source_id FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                     JOIN match_decisions d ON d.b_source = f.s AND d.b_source_id = f.i
                     WHERE d.kind = 'link' AND d.revoked_at IS NULL
                 UNION SELECT m2.source, m2.source_id FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                     JOIN person_memberships m1 ON m1.source = f.s AND m1.source_id = f.i AND m1.valid_to IS NULL
                     JOIN person_memberships m2 ON m2.person_id = m1.person_id AND m2.valid_to IS NULL",
            )
            .bind(&s)
            .bind(&i)
            .fetch_all(&mut *tx)
            .await?;
            frontier = next.into_iter().filter(|r| set.insert(r.clone())).collect();
        }
        let mut recs: Vec<Rec> = set.into_iter().collect();
        recs.sort();
        let rows = load_rows(tx, &recs).await?;
        let mut nodes = Vec::new();
        let mut leaving = Vec::new();
        for r in &recs {
            match rows.get(r) {
                Some(row) if !row.deleted => nodes.push(Features::of(row)),
                _ => leaving.push(r.clone()),
            }
        }
        let (s, i) = split(&recs);
        let pairs: Vec<(String, String, String, String, String, String, f32, Value)> =
            sqlx::query_as(
                "SELECT p.a_source, p.a_source_id, p.b_source, p.b_source_id, p.decision, p.rule, p.score, p.evidence
                 FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                 JOIN match_pairs p ON p.a_source = f.s AND p.a_source_id = f.i
                 UNION SELECT p.a_source, p.a_source_id, p.b_source, p.b_source_id, p.decision, p.rule, p.score, p.evidence
                 FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                 JOIN match_pairs p ON p.b_source = f.s AND p.b_source_id = f.i",
            )
            .bind(&s)
            .bind(&i)
            .fetch_all(&mut *tx)
            .await?;
        let (mut links, mut reviews) = (Vec::new(), Vec::new());
        for (a0, a1, b0, b1, d, rule, score, evidence) in pairs {
            let decision = match d.as_str() {
                "link" => Decision::Link,
                "review" => Decision::Review,
                _ => Decision::Conflict,
            };
            let p = PairRow {
                a: (a0, a1),
                b: (b0, b1),
                decision,
                rule,
                score,
                evidence,
            };
            if decision == Decision::Link {
                links.push(p);
            } else {
                reviews.push(p);
            }
        }
        let decisions: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT d.kind, d.a_source, d.a_source_id, d.b_source, d.b_source_id
             FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN match_decisions d ON d.a_source = f.s AND d.a_source_id = f.i WHERE d.revoked_at IS NULL
             UNION SELECT d.kind, d.a_source, d.a_source_id, d.b_source, d.b_source_id
             FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN match_decisions d ON d.b_source = f.s AND d.b_source_id = f.i WHERE d.revoked_at IS NULL",
        )
        .bind(&s)
        .bind(&i)
        .fetch_all(&mut *tx)
        .await?;
        let decisions = decisions
            .into_iter()
            .map(|(k, a0, a1, b0, b1)| (k, (a0, a1), (b0, b1)))
            .collect();
        let items: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT r.id, r.a_source, r.a_source_id, r.b_source, r.b_source_id
             FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN review_items r ON r.a_source = f.s AND r.a_source_id = f.i WHERE r.status = 'open'
             UNION SELECT r.id, r.a_source, r.a_source_id, r.b_source, r.b_source_id
             FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN review_items r ON r.b_source = f.s AND r.b_source_id = f.i WHERE r.status = 'open'",
        )
        .bind(&s)
        .bind(&i)
        .fetch_all(&mut *tx)
        .await?;
        let open_items = items
            .into_iter()
            .map(|(id, a0, a1, b0, b1)| (id, (a0, a1), (b0, b1)))
            .collect();
        // Persons of the set and of review partners outside it.
        let mut wanted: Vec<Rec> = recs.clone();
        wanted.extend(reviews.iter().flat_map(|p| [p.a.clone(), p.b.clone()]));
        wanted.sort();
        wanted.dedup();
        let (s, i) = split(&wanted);
        let members: Vec<(String, String, i64, bool)> = sqlx::query_as(
            "SELECT m.source, m.source_id, m.person_id, p.locked FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN person_memberships m ON m.source = f.s AND m.source_id = f.i AND m.valid_to IS NULL
             JOIN persons p USING (person_id)",
        )
        .bind(&s)
        .bind(&i)
        .fetch_all(&mut *tx)
        .await?;
        let mut person_of = HashMap::new();
        let mut locked = HashSet::new();
        for (s, i, p, l) in members {
            person_of.insert((s, i), p);
            if l {
                locked.insert(p);
            }
        }
        Ok(Component {
            nodes,
            leaving,
            links,
            reviews,
            decisions,
            person_of,
            locked,
            open_items,
        })
    }

    /// Everything: every live record (sorted), every pair.
    async fn load_all(
        tx: &mut PgConnection,
        nodes: Vec<Features>,
        pairs: Vec<PairRow>,
    ) -> sqlx::Result<Component> {
        let (links, reviews) = pairs
            .into_iter()
            .partition(|p| p.decision == Decision::Link);
        let decisions: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT kind, a_source, a_source_id, b_source, b_source_id FROM match_decisions
             WHERE revoked_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let decisions = decisions
            .into_iter()
            .map(|(k, a0, a1, b0, b1)| (k, (a0, a1), (b0, b1)))
            .collect();
        let items: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, a_source, a_source_id, b_source, b_source_id FROM review_items WHERE status = 'open'",
        )
        .fetch_all(&mut *tx)
        .await?;
        let open_items = items
            .into_iter()
            .map(|(id, a0, a1, b0, b1)| (id, (a0, a1), (b0, b1)))
            .collect();
        let members: Vec<(String, String, i64, bool)> = sqlx::query_as(
            "SELECT m.source, m.source_id, m.person_id, p.locked FROM person_memberships m
             JOIN persons p USING (person_id) WHERE m.valid_to IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut person_of = HashMap::with_capacity(members.len());
        let mut locked = HashSet::new();
        for (s, i, p, l) in members {
            person_of.insert((s, i), p);
            if l {
                locked.insert(p);
            }
        }
        let live: HashSet<(&str, &str)> = nodes
            .iter()
            .map(|f| (f.source.as_str(), f.source_id.as_str()))
            .collect();
        let leaving = person_of
            .keys()
            .filter(|(s, i)| !live.contains(&(s.as_str(), i.as_str())))
            .cloned()
            .collect();
        Ok(Component {
            nodes,
            leaving,
            links,
            reviews,
            decisions,
            person_of,
            locked,
            open_items,
        })
    }

    /// Clusters the component, assigns person ids and writes the difference.
    async fn apply(self, tx: &mut PgConnection, actor: &str) -> sqlx::Result<Applied> {
        let mut applied = Applied {
            records: self.nodes.len() as u64,
            ..Default::default()
        };
        let index: HashMap<(&str, &str), usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(n, f)| ((f.source.as_str(), f.source_id.as_str()), n))
            .collect();
        let idx = |r: &Rec| index.get(&(r.0.as_str(), r.1.as_str())).copied();

        let mut edges = Vec::new();
        let mut keep_apart = HashSet::new();
        let mut decided: HashSet<(Rec, Rec)> = HashSet::new();
        for (kind, a, b) in &self.decisions {
            decided.insert(ordered(a, b));
            let (Some(x), Some(y)) = (idx(a), idx(b)) else {
                continue;
            };
            if kind == "link" {
                edges.push(Edge {
                    a: x,
                    b: y,
                    kind: EdgeKind::Operator,
                    rule: "operator".into(),
                    score: 0.0,
                });
            } else {
                keep_apart.insert((x.min(y), x.max(y)));
            }
        }
        // Members of a locked person stay together.
        let mut first_of_locked: HashMap<i64, usize> = HashMap::new();
        for (n, f) in self.nodes.iter().enumerate() {
            let r = (f.source.clone(), f.source_id.clone());
            if let Some(p) = self.person_of.get(&r).filter(|p| self.locked.contains(p)) {
                match first_of_locked.get(p) {
                    Some(&first) => edges.push(Edge {
                        a: first,
                        b: n,
                        kind: EdgeKind::Locked,
                        rule: "locked".into(),
                        score: 0.0,
                    }),
                    None => {
                        first_of_locked.insert(*p, n);
                        // A lone member still marks its cluster locked.
                        edges.push(Edge {
                            a: n,
                            b: n,
                            kind: EdgeKind::Locked,
                            rule: "locked".into(),
                            score: 0.0,
                        });
                    }
                }
            }
        }
        let mut link_evidence: HashMap<(usize, usize), &PairRow> = HashMap::new();
        let mut adjacent: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.nodes.len()];
        for p in &self.links {
            let (Some(x), Some(y)) = (idx(&p.a), idx(&p.b)) else {
                continue;
            };
            if decided.contains(&ordered(&p.a, &p.b)) {
                continue;
            }
            link_evidence.insert((x.min(y), x.max(y)), p);
            adjacent[x].push((x.min(y), x.max(y)));
            adjacent[y].push((x.min(y), x.max(y)));
            edges.push(Edge {
                a: x,
                b: y,
                kind: EdgeKind::Rule,
                rule: p.rule.clone(),
                score: p.score,
            });
        }
        tracing::debug!(nodes = self.nodes.len(), "clustering");
        let out = cluster::cluster(cluster::Input {
            nodes: &self.nodes,
            edges,
            keep_apart: &keep_apart,
        });

        // Person ids: a locked person keeps its cluster; then the largest
        // overlap between a new cluster and an old person wins (ties: the
        // older person); every other cluster is a new person.
        let mut clusters: HashMap<usize, Vec<usize>> = HashMap::new();
        for (n, &c) in out.cluster_of.iter().enumerate() {
            clusters.entry(c).or_default().push(n);
        }
        let old_of = |n: usize| {
            let f = &self.nodes[n];
            self.person_of
                .get(&(f.source.clone(), f.source_id.clone()))
                .copied()
        };
        let mut overlap: Vec<(bool, usize, i64, usize)> = Vec::new(); // (not locked, -count, person, cluster)
        for (&c, members) in &clusters {
            let mut counts: HashMap<i64, usize> = HashMap::new();
            for &n in members {
                if let Some(p) = old_of(n) {
                    *counts.entry(p).or_default() += 1;
                }
            }
            for (p, k) in counts {
                overlap.push((!self.locked.contains(&p), usize::MAX - k, p, c));
            }
        }
        overlap.sort();
        let mut person_for: HashMap<usize, i64> = HashMap::new();
        let mut used: HashSet<i64> = HashSet::new();
        for (_, _, p, c) in overlap {
            if person_for.contains_key(&c) || used.contains(&p) {
                continue;
            }
            person_for.insert(c, p);
            used.insert(p);
        }
        let mut fresh: Vec<usize> = clusters
            .keys()
            .filter(|c| !person_for.contains_key(c))
            .copied()
            .collect();
        fresh.sort();
        if !fresh.is_empty() {
            let ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO persons (locked) SELECT false FROM generate_series(1, $1::int) RETURNING person_id",
            )
            .bind(fresh.len() as i32)
            .fetch_all(&mut *tx)
            .await?;
            for (c, id) in fresh.iter().zip(ids) {
                person_for.insert(*c, id);
            }
            applied.persons_created = fresh.len() as u64;
        }

        // Membership changes.
        let mut audit = Audit::default();
        for &c in &fresh {
            audit.push(
                "person_created",
                Some(person_for[&c]),
                None,
                None,
                None,
                Value::Null,
            );
        }
        let mut close: Vec<Rec> = Vec::new();
        let mut open: Vec<(Rec, i64)> = Vec::new();
        for (n, f) in self.nodes.iter().enumerate() {
            let new = person_for[&out.cluster_of[n]];
            let old = old_of(n);
            if old == Some(new) {
                continue;
            }
            let r = (f.source.clone(), f.source_id.clone());
            if old.is_some() {
                close.push(r.clone());
            }
            let via = self.reason(&out, n, &adjacent[n], &link_evidence);
            audit.push(
                if old.is_some() { "moved" } else { "assigned" },
                Some(new),
                Some(&r),
                old,
                None,
                via,
            );
            open.push((r, new));
        }
        for r in &self.leaving {
            if let Some(&old) = self.person_of.get(r) {
                close.push(r.clone());
                audit.push(
                    "record_removed",
                    Some(old),
                    Some(r),
                    None,
                    None,
                    Value::Null,
                );
                applied.removed += 1;
            }
        }
        applied.moved = open.len() as u64;
        for chunk in close.chunks(50_000) {
            let (s, i) = split(chunk);
            sqlx::query(
                "UPDATE person_memberships m SET valid_to = now() FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                 WHERE m.valid_to IS NULL AND m.source = f.s AND m.source_id = f.i",
            )
            .bind(&s)
            .bind(&i)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in open.chunks(50_000) {
            let s: Vec<&str> = chunk.iter().map(|(r, _)| r.0.as_str()).collect();
            let i: Vec<&str> = chunk.iter().map(|(r, _)| r.1.as_str()).collect();
            let p: Vec<i64> = chunk.iter().map(|(_, p)| *p).collect();
            sqlx::query(
                "INSERT INTO person_memberships (source, source_id, person_id)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])",
            )
            .bind(&s)
            .bind(&i)
            .bind(&p)
            .execute(&mut *tx)
            .await?;
        }
        // Persons left without records are retired, never deleted.
        let old_persons: HashSet<i64> = self.person_of.values().copied().collect();
        let kept: HashSet<i64> = person_for.values().copied().collect();
        let mut retired: Vec<i64> = old_persons
            .iter()
            .filter(|p| !kept.contains(p))
            .copied()
            .collect();
        // Review partners outside the set are not ours to retire.
        let in_set: HashSet<i64> = self
            .nodes
            .iter()
            .map(|f| (f.source.clone(), f.source_id.clone()))
            .chain(self.leaving.iter().cloned())
            .filter_map(|r| self.person_of.get(&r).copied())
            .collect();
        retired.retain(|p| in_set.contains(p));
        retired.sort();
        if !retired.is_empty() {
            sqlx::query(
                "UPDATE persons SET retired_at = now(), updated_at = now() WHERE person_id = ANY($1)
                 AND NOT EXISTS (SELECT 1 FROM person_memberships m WHERE m.person_id = persons.person_id AND m.valid_to IS NULL)",
            )
            .bind(&retired)
            .execute(&mut *tx)
            .await?;
            for &p in &retired {
                audit.push("person_retired", Some(p), None, None, None, Value::Null);
            }
            applied.persons_retired = retired.len() as u64;
        }
        let mut touched: Vec<i64> = open.iter().map(|(_, p)| *p).collect();
        touched.sort();
        touched.dedup();
        if !touched.is_empty() {
            sqlx::query("UPDATE persons SET updated_at = now(), retired_at = NULL WHERE person_id = ANY($1)")
                .bind(&touched)
                .execute(&mut *tx)
                .await?;
        }

        // Review items: ambiguous and conflicting pairs whose records are not
        // in one person and that no operator decided, plus refused links.
        let final_person = |r: &Rec| -> Option<i64> {
            match idx(r) {
                Some(n) => Some(person_for[&out.cluster_of[n]]),
                None => self.person_of.get(r).copied(),
            }
        };
        let leaving: HashSet<&Rec> = self.leaving.iter().collect();
        let live_or_outside = |r: &Rec| idx(r).is_some() || !leaving.contains(r);
        let mut desired: HashMap<(Rec, Rec), (String, f32, Value)> = HashMap::new();
        for p in &self.reviews {
            let pair = ordered(&p.a, &p.b);
            if decided.contains(&pair) || !live_or_outside(&p.a) || !live_or_outside(&p.b) {
                continue;
            }
            let (fa, fb) = (final_person(&p.a), final_person(&p.b));
            if fa.is_some() && fa == fb {
                continue;
            }
            let reason = match p.decision {
                Decision::Conflict => format!("{}_conflict", p.rule),
                _ => format!("{}_ambiguous", p.rule),
            };
            desired.insert(pair, (reason, p.score, p.evidence.clone()));
        }
        for r in &out.refused {
            let (a, b) = (&self.nodes[r.a], &self.nodes[r.b]);
            let pair = ordered(
                &(a.source.clone(), a.source_id.clone()),
                &(b.source.clone(), b.source_id.clone()),
            );
            let evidence = link_evidence
                .get(&(r.a.min(r.b), r.a.max(r.b)))
                .map(|p| p.evidence.clone())
                .unwrap_or(Value::Null);
            desired.insert(pair, (r.reason.to_string(), r.score, evidence));
        }
        let mut existing: HashSet<(Rec, Rec)> = HashSet::new();
        let mut obsolete: Vec<i64> = Vec::new();
        for (id, a, b) in &self.open_items {
            let pair = ordered(a, b);
            if desired.contains_key(&pair) {
                existing.insert(pair);
            } else {
                obsolete.push(*id);
                audit.push(
                    "review_closed",
                    None,
                    Some(a),
                    None,
                    Some(b),
                    serde_json::json!({"item": id, "why": "obsolete"}),
                );
            }
        }
        if !obsolete.is_empty() {
            sqlx::query(
                "UPDATE review_items SET status = 'obsolete', closed_at = now() WHERE id = ANY($1)",
            )
            .bind(&obsolete)
            .execute(&mut *tx)
            .await?;
            applied.reviews_closed = obsolete.len() as u64;
        }
        let mut new_items: Vec<(&(Rec, Rec), &(String, f32, Value))> = desired
            .iter()
            .filter(|(pair, _)| !existing.contains(*pair))
            .collect();
        new_items.sort_by(|x, y| x.0.cmp(y.0));
        for chunk in new_items.chunks(20_000) {
            let mut cols: [Vec<&str>; 5] = Default::default();
            let mut scores = Vec::new();
            let mut evidence = Vec::new();
            for ((a, b), (reason, score, ev)) in chunk {
                cols[0].push(&a.0);
                cols[1].push(&a.1);
                cols[2].push(&b.0);
                cols[3].push(&b.1);
                cols[4].push(reason);
                scores.push(*score);
                evidence.push(ev.to_string());
                audit.push(
                    "review_opened",
                    None,
                    Some(a),
                    None,
                    Some(b),
                    serde_json::json!({"reason": reason}),
                );
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
            .execute(&mut *tx)
            .await?;
        }
        applied.reviews_opened = new_items.len() as u64;
        audit.write(tx, actor).await?;
        Ok(applied)
    }

    /// Why node `n` is where it is: the strongest link to its cluster, by
    /// rule (no values).
    fn reason(
        &self,
        out: &cluster::Output,
        n: usize,
        adjacent: &[(usize, usize)],
        links: &HashMap<(usize, usize), &PairRow>,
    ) -> Value {
        let c = out.cluster_of[n];
        let best = adjacent
            .iter()
            .filter(|(x, y)| out.cluster_of[*x] == c && out.cluster_of[*y] == c)
            .filter_map(|e| links.get(e))
            .min_by(|x, y| {
                (rule_order(&x.rule), -x.score)
                    .partial_cmp(&(rule_order(&y.rule), -y.score))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        match best {
            Some(p) => serde_json::json!({"rule": p.rule, "score": p.score}),
            None if out.locked[n] => serde_json::json!({"rule": "locked"}),
            None => serde_json::json!({"rule": "operator_or_alone"}),
        }
    }
}

fn rule_order(rule: &str) -> u8 {
    match rule {
        "document" => 0,
        "snils" => 1,
        "oms" => 2,
        _ => 3,
    }
}

/// Audit rows collected during an application, written together.
#[derive(Default)]
struct Audit {
    action: Vec<&'static str>,
    person: Vec<Option<i64>>,
    source: Vec<Option<String>>,
    source_id: Vec<Option<String>>,
    other_person: Vec<Option<i64>>,
    other_source: Vec<Option<String>>,
    other_source_id: Vec<Option<String>>,
    detail: Vec<String>,
}

impl Audit {
    fn push(
        &mut self,
        action: &'static str,
        person: Option<i64>,
        rec: Option<&Rec>,
        other_person: Option<i64>,
        other: Option<&Rec>,
        detail: Value,
    ) {
        self.action.push(action);
        self.person.push(person);
        self.source.push(rec.map(|r| r.0.clone()));
        self.source_id.push(rec.map(|r| r.1.clone()));
        self.other_person.push(other_person);
        self.other_source.push(other.map(|r| r.0.clone()));
        self.other_source_id.push(other.map(|r| r.1.clone()));
        self.detail.push(if detail.is_null() {
            "{}".into()
        } else {
            detail.to_string()
        });
    }

    async fn write(self, tx: &mut PgConnection, actor: &str) -> sqlx::Result<()> {
        let n = self.action.len();
        let mut start = 0;
        while start < n {
            let end = (start + 50_000).min(n);
            sqlx::query(
                "INSERT INTO match_audit (actor, action, person_id, source, source_id, other_person_id,
                                          other_source, other_source_id, detail)
                 SELECT $1, a, b, c, d, e, f, g, h::jsonb FROM UNNEST($2::text[], $3::int8[], $4::text[],
                        $5::text[], $6::int8[], $7::text[], $8::text[], $9::text[]) AS t(a, b, c, d, e, f, g, h)",
            )
            .bind(actor)
            .bind(&self.action[start..end])
            .bind(&self.person[start..end])
            .bind(&self.source[start..end])
            .bind(&self.source_id[start..end])
            .bind(&self.other_person[start..end])
            .bind(&self.other_source[start..end])
            .bind(&self.other_source_id[start..end])
            .bind(&self.detail[start..end])
            .execute(&mut *tx)
            .await?;
            start = end;
        }
        Ok(())
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

/// The distinct, well-formed trace ids of claimed changes' `traceparent`s,
/// sorted; malformed or missing ones are skipped.
pub fn trace_ids<'a>(traceparents: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut ids: Vec<String> = traceparents
        .into_iter()
        .flatten()
        .filter_map(proto::trace::trace_id_of)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod trace_tests {
    use super::trace_ids;

    #[test]
    fn trace_ids_are_distinct_well_formed_ids() {
        let a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let b = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ids = trace_ids([Some(a), None, Some("garbage"), Some(b), Some(a)]);
        assert_eq!(
            ids,
            [
                "0af7651916cd43dd8448eb211c80319c",
                "4bf92f3577b34da6a3ce929d0e0e4736"
            ]
        );
    }
}
