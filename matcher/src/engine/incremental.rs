//! A set of changed records, from one to a backlog of tens of thousands:
//! replace their blocking keys in the in-memory index ([`super::index`]),
//! find their candidates there, re-evaluate their pairs in Rust, and
//! recompute their component's persons ([`super::component`]). Every
//! PostgreSQL step is one set-based statement over the whole set (joins
//! against `UNNEST`ed arrays, COPY for the new rows), so a large batch costs
//! a few statements, not a few per record.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Postgres, Transaction};

use super::ahead::{self, Overlap};
use super::component::Component;
use super::index::{BlockIndex, Undo};
use super::pairing::{pair_up, Paired, Ready, LOUD_BATCH};
use super::phases::Phases;
use super::setup::Setup;
use super::types::{split, Applied, Rec};
use super::write;
use crate::features::Features;

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
    setup: &Setup,
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
            pair_up(setup, tx, &changed, ready, index, undo, &mut phases).await?
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
        let setup = setup.clone();
        tokio::spawn(async move {
            let prepared = ahead::prepare(&setup, &pool, pending, &mut lent).await;
            (lent, prepared)
        })
    });
    let mut marks: Vec<Rec> = Vec::new();
    let result = settle(setup, tx, paired, fresh, &mut marks, &mut phases).await;
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

/// The second half of a batch, in its transaction: the old pairs of
/// the changed records replaced by `paired`'s, their component
/// recomputed and its difference written. Needs no index: the records
/// it may have given state are pushed to `marks`, for the caller to
/// mark in the index (also if it fails: a mark only costs a lookup).
async fn settle(
    setup: &Setup,
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
    component.apply(tx, setup, phases).await
}

/// Recomputes the persons of `recs`' component from the stored pairs
/// (an operator decision or lock changed; the records did not). The
/// caller holds the lock.
pub(super) async fn recompute_persons(
    setup: &Setup,
    tx: &mut Transaction<'_, Postgres>,
    recs: &[Rec],
) -> sqlx::Result<Applied> {
    let mut recs = recs.to_vec();
    recs.sort();
    recs.dedup();
    let mut phases = Phases::new("decision", recs.len(), false);
    let component = Component::load(tx, &recs, HashMap::new(), None, &HashSet::new()).await?;
    phases.mark("component read");
    component.apply(tx, setup, &mut phases).await
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
