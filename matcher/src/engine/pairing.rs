//! The first half of a batch, everything that needs the blocking index:
//! the changed records' keys replaced in it, their candidates found and
//! read, their pairs evaluated ([`Paired`]).

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use super::index::{key_hashes, BlockIndex, Undo};
use super::phases::Phases;
use super::rows::load_rows;
use super::setup::Setup;
use super::types::{PairRow, Rec};
use crate::features::{Features, SourceRow};
use crate::par::par_map;

/// Batches of at least this many records log their phases at `info`.
pub(crate) const LOUD_BATCH: usize = 5_000;

/// From this many live records on, a batch computes their features, keys
/// and pairs on every core (a few milliseconds per thousand records on one).
const PARALLEL_FROM: usize = 1_000;

/// A record read ahead: its features and key hashes, `None` if deleted.
pub(crate) type Computed = Option<(Features, Box<[u64]>)>;

/// Rows read ahead and checked against the claimed changes: what a batch
/// uses instead of reading them (`super::ahead`).
pub(crate) type Ready = HashMap<Rec, Computed>;

/// The first half of a batch, everything that needs the blocking index:
/// the changed records' keys replaced in it, their candidates found and
/// read, their pairs evaluated. Pure computation and reads of
/// `source_records` (which only the loader writes): it does not depend on
/// the matcher's state in PostgreSQL, so the next batch's half can be
/// computed while this batch writes (`super::ahead::Prepared`).
pub(super) struct Paired {
    /// The changed records, sorted, each once.
    pub changed: Vec<Rec>,
    /// Index id → features of the live changed records.
    pub mine: HashMap<u32, Features>,
    /// Index id → features of their live candidates.
    pub others: HashMap<u32, Features>,
    /// Every pair of a changed record that has a decision.
    pub pairs: Vec<PairRow>,
}

/// The first half of a batch ([`Paired`]) of `changed` (sorted, each
/// once); rows not in `ready` are read on `conn`.
pub(super) async fn pair_up(
    setup: &Setup,
    conn: &mut PgConnection,
    changed: &[Rec],
    ready: &mut Ready,
    index: &mut BlockIndex,
    undo: &mut Undo,
    phases: &mut Phases,
) -> sqlx::Result<Paired> {
    let mine = replace_keys(conn, changed, ready, index, undo).await?;
    phases.mark("keys replaced");
    let usable = |key: u64| {
        let h = index.holders(key);
        (h.len() as i64 <= setup.max_block_size).then_some(h)
    };
    let mut candidates: HashSet<u32> = HashSet::new();
    for id in mine.keys() {
        for &k in index.keys_of(*id) {
            for &other in usable(k).unwrap_or(&[]) {
                if !mine.contains_key(&other) {
                    candidates.insert(other);
                }
            }
        }
    }
    phases.mark("blocks looked up");
    let others = read_candidates(conn, index, candidates).await?;
    phases.mark("candidates read");
    let pairs = evaluate_pairs(setup, index, &mine, &others);
    phases.mark("pairs evaluated");
    Ok(Paired {
        changed: changed.to_vec(),
        mine,
        others,
        pairs,
    })
}

/// Replaces the keys of `changed` in the index and gives back the features
/// of the live ones by index id. Keys are replaced before the lookups, so
/// that the records of one batch find each other (and a block's size counts
/// them), as a re-match would. A deleted record holds no key.
async fn replace_keys(
    conn: &mut PgConnection,
    changed: &[Rec],
    ready: &mut Ready,
    index: &mut BlockIndex,
    undo: &mut Undo,
) -> sqlx::Result<HashMap<u32, Features>> {
    let unread: Vec<Rec> = changed
        .iter()
        .filter(|r| !ready.contains_key(*r))
        .cloned()
        .collect();
    let mut rows = load_rows(conn, &unread).await?;
    drop(unread);
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
    Ok(mine)
}

/// The features of the live records among `candidates` (index ids).
async fn read_candidates(
    conn: &mut PgConnection,
    index: &BlockIndex,
    candidates: HashSet<u32>,
) -> sqlx::Result<HashMap<u32, Features>> {
    let candidates: Vec<(u32, Rec)> = candidates
        .into_iter()
        .map(|id| (id, index.rec(id)))
        .collect();
    let recs: Vec<Rec> = candidates.iter().map(|(_, r)| r.clone()).collect();
    let mut loaded = load_rows(conn, &recs).await?;
    drop(recs);
    let mut others: HashMap<u32, Features> = HashMap::with_capacity(candidates.len());
    for (id, r) in candidates {
        if let Some(row) = loaded.remove(&r).filter(|row| !row.deleted) {
            others.insert(id, Features::of(&row));
        }
    }
    Ok(others)
}

/// Every pair of a changed record (`mine`) with a record sharing a usable
/// key, once; a pair of two changed records belongs to the smaller id (ids
/// are sorted, so the order is the sequential one).
fn evaluate_pairs(
    setup: &Setup,
    index: &BlockIndex,
    mine: &HashMap<u32, Features>,
    others: &HashMap<u32, Features>,
) -> Vec<PairRow> {
    let usable = |key: u64| {
        let h = index.holders(key);
        (h.len() as i64 <= setup.max_block_size).then_some(h)
    };
    let mut ids: Vec<u32> = mine.keys().copied().collect();
    ids.sort_unstable();
    let features_of = |id: u32| mine.get(&id).or_else(|| others.get(&id));
    let pairs_of = |me: &u32| -> Vec<PairRow> {
        let me = *me;
        let mut done: Vec<u32> = Vec::new();
        let mut pairs = Vec::new();
        for &k in index.keys_of(me) {
            for &other in usable(k).unwrap_or(&[]) {
                if other == me || (other < me && mine.contains_key(&other)) || done.contains(&other)
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
                if let Some(p) = setup.evaluate(x, y) {
                    pairs.push(p);
                }
            }
        }
        pairs
    };
    if ids.len() >= PARALLEL_FROM {
        par_map(&ids, pairs_of)
    } else {
        ids.iter().map(pairs_of).collect()
    }
    .into_iter()
    .flatten()
    .collect()
}

/// The features and key hashes of the live records of `rows`, in order.
fn features_and_keys(rows: &[Option<SourceRow>]) -> Vec<(Features, Box<[u64]>)> {
    let live: Vec<&SourceRow> = rows.iter().flatten().collect();
    let of = |row: &&SourceRow| {
        let f = Features::of(row);
        let keys = key_hashes(&f.keys());
        (f, keys)
    };
    if live.len() >= PARALLEL_FROM {
        par_map(&live, of)
    } else {
        live.iter().map(of).collect()
    }
}
