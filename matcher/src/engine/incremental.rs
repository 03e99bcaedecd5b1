//! A set of changed records, from one to a backlog of tens of thousands:
//! replace their blocking keys in the in-memory index ([`super::index`]),
//! find their candidates there, re-evaluate their pairs in Rust, and
//! recompute their component's persons ([`super::component`]). Every
//! PostgreSQL step is one set-based statement over the whole set (joins
//! against `UNNEST`ed arrays, COPY for the new rows), so a large batch costs
//! a few statements, not a few per record.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Postgres, Transaction};

use super::ahead::{Overlap, Ready};
use super::component::Component;
use super::index::{key_hashes, BlockIndex, Undo};
use super::{split, write, Applied, Engine, PairRow, Phases, Rec};
use crate::features::{Features, SourceRow};

/// Batches of at least this many records log their phases at `info`.
pub(super) const LOUD_BATCH: usize = 5_000;

/// The first half of a batch, everything that needs the blocking index:
/// the changed records' keys replaced in it, their candidates found and
/// read, their pairs evaluated. Pure computation and reads of
/// `source_records` (which only the loader writes): it does not depend on
/// the matcher's state in PostgreSQL, so the next batch's half can be
/// computed while this batch writes ([`super::ahead::Prepared`]).
pub(super) struct Paired {
    /// The changed records, sorted, each once.
    pub changed: Vec<Rec>,
    /// Index id → features of the live changed records.
    mine: HashMap<u32, Features>,
    /// Index id → features of their live candidates.
    others: HashMap<u32, Features>,
    /// Every pair of a changed record that has a decision.
    pairs: Vec<PairRow>,
}

impl Engine {
    /// Re-evaluates `changed` records (keys, pairs) and recomputes their
    /// component. The caller holds the lock and an index equal to the
    /// database; every index change made is pushed to `undo`, for the
    /// caller to undo if the transaction does not commit. Records in
    /// `ready` were read ahead and checked against their claimed changes
    /// ([`super::ahead`]): taken from there (a part of the batch applied
    /// again after a failure reads them).
    ///
    /// `overlap`: this batch's first half if the batch before prepared it
    /// (its index changes are added to `undo`), and the next batch's
    /// read-ahead, whose first half is computed — on the index, lent to a
    /// task of its own — while this batch writes; it is left in
    /// `overlap.next` (its index changes made after this batch's; undone
    /// here if this batch fails).
    pub(super) async fn match_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        changed: &[Rec],
        ready: &mut Ready,
        index: &mut BlockIndex,
        undo: &mut Undo,
        overlap: &mut Overlap,
    ) -> sqlx::Result<Applied> {
        let mut changed = changed.to_vec();
        changed.sort();
        changed.dedup();
        let mut phases = Phases::new("batch", changed.len(), changed.len() >= LOUD_BATCH);
        let paired = match overlap.this.take() {
            Some(prepared) if prepared.paired.changed == changed => {
                phases.mark("pairs prepared by the batch before");
                undo.extend(prepared.undo);
                prepared.paired
            }
            other => {
                if let Some(prepared) = other {
                    index.undo(prepared.undo);
                }
                self.pair_up(tx, &changed, ready, index, undo, &mut phases)
                    .await?
            }
        };
        // Live records without matching state (no pairs, review items or
        // person: `BlockIndex::may_have_state`): new records, mostly. Asked
        // now, after the batch before marked what it gave state.
        let fresh: HashSet<Rec> = paired
            .mine
            .keys()
            .filter(|id| !index.id_may_have_state(**id))
            .map(|id| index.rec(*id))
            .collect();
        let next = overlap.next_ahead.take().map(|(pool, pending)| {
            let mut lent = std::mem::take(index);
            let engine = self.clone();
            tokio::spawn(async move {
                let prepared = engine.prepare(&pool, pending, &mut lent).await;
                (lent, prepared)
            })
        });
        let mut marks: Vec<Rec> = Vec::new();
        let result = self
            .settle(tx, paired, fresh, &mut marks, &mut phases)
            .await;
        if let Some(next) = next {
            match next.await {
                Ok((lent, prepared)) => {
                    *index = lent;
                    overlap.next = prepared;
                }
                // The index went with the task: the next batch rebuilds
                // it (this one's is empty, without a generation).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => panic!("the task preparing the next batch was cancelled"),
            }
            phases.mark("next batch's pairs prepared");
        }
        for (s, i) in &marks {
            index.mark_stated(s, i);
        }
        if result.is_err() {
            // Made on top of this batch's changes: undone first.
            if let Some(prepared) = overlap.next.take() {
                index.undo(prepared.undo);
            }
        }
        result
    }

    /// The first half of a batch ([`Paired`]) of `changed` (sorted, each
    /// once); rows not in `ready` are read on `conn`.
    pub(super) async fn pair_up(
        &self,
        conn: &mut PgConnection,
        changed: &[Rec],
        ready: &mut Ready,
        index: &mut BlockIndex,
        undo: &mut Undo,
        phases: &mut Phases,
    ) -> sqlx::Result<Paired> {
        let unread: Vec<Rec> = changed
            .iter()
            .filter(|r| !ready.contains_key(*r))
            .cloned()
            .collect();
        let mut rows = load_rows(conn, &unread).await?;
        drop(unread);
        phases.mark("changed records read");

        // Keys: replaced in the index before the lookups, so that the
        // records of one batch find each other (and a block's size counts
        // them), as a re-match would. A deleted record holds no key.
        let mut mine: HashMap<u32, Features> = HashMap::with_capacity(changed.len());
        let live: Vec<Option<SourceRow>> = changed
            .iter()
            .filter(|r| !ready.contains_key(*r))
            .map(|r| rows.remove(r).filter(|row| !row.deleted))
            .collect();
        let mut computed = features_and_keys(&live).into_iter();
        let mut live = live.iter();
        for r in changed {
            let (f, keys) = match ready.remove(r) {
                Some(Some((f, keys))) => (f, keys),
                Some(None) => {
                    undo.push(index.replace(&r.0, &r.1, Box::new([])));
                    continue;
                }
                None => {
                    if live.next().expect("one per unread record").is_none() {
                        undo.push(index.replace(&r.0, &r.1, Box::new([])));
                        continue;
                    }
                    computed.next().expect("one per live record")
                }
            };
            let change = index.replace(&r.0, &r.1, keys);
            mine.insert(change.0, f);
            undo.push(change);
        }
        drop(live);
        drop(rows);
        phases.mark("keys replaced");

        // Blocks: a key held by more than `max_block_size` records is not
        // used.
        let usable = |key: u64| {
            let h = index.holders(key);
            (h.len() as i64 <= self.max_block_size).then_some(h)
        };
        let mut ids: Vec<u32> = mine.keys().copied().collect();
        ids.sort_unstable();
        let mut candidates: HashSet<u32> = HashSet::new();
        for id in &ids {
            for &k in index.keys_of(*id) {
                for &other in usable(k).unwrap_or(&[]) {
                    if !mine.contains_key(&other) {
                        candidates.insert(other);
                    }
                }
            }
        }
        let candidates: Vec<(u32, Rec)> = candidates
            .into_iter()
            .map(|id| (id, index.rec(id)))
            .collect();
        phases.mark("blocks looked up");
        let recs: Vec<Rec> = candidates.iter().map(|(_, r)| r.clone()).collect();
        let mut loaded = load_rows(conn, &recs).await?;
        drop(recs);
        let mut others: HashMap<u32, Features> = HashMap::with_capacity(candidates.len());
        for (id, r) in candidates {
            if let Some(row) = loaded.remove(&r).filter(|row| !row.deleted) {
                others.insert(id, Features::of(&row));
            }
        }
        drop(loaded);
        phases.mark("candidates read");
        let features_of = |id: u32| mine.get(&id).or_else(|| others.get(&id));
        // The pairs of one changed record: with each record sharing a
        // usable key, once; a pair of two changed records belongs to the
        // smaller id (ids are sorted, so the order is the sequential one).
        let pairs_of = |me: &u32| -> Vec<PairRow> {
            let me = *me;
            let mut done: Vec<u32> = Vec::new();
            let mut pairs = Vec::new();
            for &k in index.keys_of(me) {
                for &other in usable(k).unwrap_or(&[]) {
                    if other == me
                        || (other < me && mine.contains_key(&other))
                        || done.contains(&other)
                    {
                        continue;
                    }
                    done.push(other);
                    let (Some(x), Some(y)) = (features_of(me), features_of(other)) else {
                        continue;
                    };
                    let (x, y) = if (&x.source, &x.source_id) <= (&y.source, &y.source_id) {
                        (x, y)
                    } else {
                        (y, x)
                    };
                    if let Some(p) = self.evaluate(x, y) {
                        pairs.push(p);
                    }
                }
            }
            pairs
        };
        let pairs: Vec<PairRow> = if ids.len() >= PARALLEL_FROM {
            super::rematch::par_map(&ids, pairs_of)
        } else {
            ids.iter().map(pairs_of).collect()
        }
        .into_iter()
        .flatten()
        .collect();
        phases.mark("pairs evaluated");
        Ok(Paired {
            changed: changed.to_vec(),
            mine,
            others,
            pairs,
        })
    }

    /// The second half of a batch, in its transaction: the old pairs of
    /// the changed records replaced by `paired`'s, their component
    /// recomputed and its difference written. Needs no index: the records
    /// it may have given state are pushed to `marks`, for the caller to
    /// mark in the index (also if it fails: a mark only costs a lookup).
    async fn settle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        paired: Paired,
        mut fresh: HashSet<Rec>,
        marks: &mut Vec<Rec>,
        phases: &mut Phases,
    ) -> sqlx::Result<Applied> {
        let Paired {
            changed,
            mine,
            others,
            pairs,
        } = paired;
        for r in named_by_decisions(tx, &fresh).await? {
            fresh.remove(&r);
        }
        #[cfg(debug_assertions)]
        assert_stateless(tx, &fresh).await?;

        // Old pairs. Two statements, one per index: an `OR` of two `IN`s is
        // a sequential scan of the whole table. Fresh records have none.
        let known: Vec<Rec> = changed
            .iter()
            .filter(|r| !fresh.contains(*r))
            .cloned()
            .collect();
        if !known.is_empty() {
            let (s, i) = split(&known);
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
        }
        drop(known);
        phases.mark("old pairs deleted");
        write::pairs(tx, &pairs).await?;
        phases.mark("pairs written");

        let features: HashMap<Rec, Features> = mine
            .into_values()
            .chain(others.into_values())
            .map(|f| ((f.source.clone(), f.source_id.clone()), f))
            .collect();
        let component = Component::load(tx, &changed, features, Some(&pairs), &fresh).await?;
        phases.mark("component read");
        // Everything this batch may give state: the ends of its pairs, and
        // every record of the component (each gets a person).
        for p in &pairs {
            marks.extend([p.a.clone(), p.b.clone()]);
        }
        marks.extend(
            component
                .records()
                .map(|(s, i)| (s.to_owned(), i.to_owned())),
        );
        component.apply(tx, &self.actor, phases).await
    }

    /// Recomputes the persons of `recs`' component from the stored pairs
    /// (an operator decision or lock changed; the records did not). The
    /// caller holds the lock.
    pub async fn recompute_persons(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        recs: &[Rec],
    ) -> sqlx::Result<Applied> {
        let mut recs = recs.to_vec();
        recs.sort();
        recs.dedup();
        let mut phases = Phases::new("decision", recs.len(), false);
        let component = Component::load(tx, &recs, HashMap::new(), None, &HashSet::new()).await?;
        phases.mark("component read");
        component.apply(tx, &self.actor, &mut phases).await
    }
}

/// From this many live records on, a batch computes their features and keys
/// on every core (a few milliseconds per thousand records on one).
const PARALLEL_FROM: usize = 1_000;

/// The features and key hashes of the live records of `rows`, in order.
fn features_and_keys(rows: &[Option<SourceRow>]) -> Vec<(Features, Box<[u64]>)> {
    let live: Vec<&SourceRow> = rows.iter().flatten().collect();
    let of = |row: &&SourceRow| {
        let f = Features::of(row);
        let keys = key_hashes(&f.keys());
        (f, keys)
    };
    if live.len() >= PARALLEL_FROM {
        super::rematch::par_map(&live, of)
    } else {
        live.iter().map(of).collect()
    }
}

/// The records of `recs` that an operator's decision names, revoked ones
/// included (a revoked link may have left its records a person); by the
/// indexes of migration `20261202130001`.
async fn named_by_decisions(tx: &mut PgConnection, recs: &HashSet<Rec>) -> sqlx::Result<Vec<Rec>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let recs: Vec<Rec> = recs.iter().cloned().collect();
    let (s, i) = split(&recs);
    sqlx::query_as(
        "SELECT d.a_source, d.a_source_id FROM match_decisions d
         JOIN UNNEST($1::text[], $2::text[]) AS f(s, i) ON d.a_source = f.s AND d.a_source_id = f.i
         UNION SELECT d.b_source, d.b_source_id FROM match_decisions d
         JOIN UNNEST($1::text[], $2::text[]) AS f(s, i) ON d.b_source = f.s AND d.b_source_id = f.i",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await
}

/// Debug builds (every test) check what the batch relies on for `fresh`
/// records: no pair, open review item or current person names them.
#[cfg(debug_assertions)]
async fn assert_stateless(tx: &mut PgConnection, fresh: &HashSet<Rec>) -> sqlx::Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let recs: Vec<Rec> = fresh.iter().cloned().collect();
    let (s, i) = split(&recs);
    let with_state: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM UNNEST($1::text[], $2::text[]) AS x(source, source_id) WHERE ",
        crate::state_exists!(" OR ")
    ))
    .bind(&s)
    .bind(&i)
    .fetch_one(tx)
    .await?;
    assert_eq!(
        with_state, 0,
        "records the blocking index marks without state have matching state"
    );
    Ok(())
}

/// The rows of `recs` in `source_records` (deleted ones included).
pub(super) async fn load_rows(
    tx: &mut PgConnection,
    recs: &[Rec],
) -> sqlx::Result<HashMap<Rec, SourceRow>> {
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
