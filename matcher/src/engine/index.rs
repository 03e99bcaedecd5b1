//! The blocking index, in the active instance's memory: blocking key →
//! the live records holding it, and record → its keys.
//!
//! It replaces the `match_keys` table, whose ~5 rows per record with two
//! index entries each were most of a batch's writes and of a full
//! re-match's index builds. Only one instance matches at a time (the
//! transaction-scoped [`crate::lock::MATCH_LOCK`]), so only that instance needs
//! the index; it builds it from `source_records` when it first takes the
//! lock, and keeps it equal to the database by:
//!
//! * changing it only for batches that commit: a batch's changes are
//!   applied at its start (so that records of one batch meet each other)
//!   and undone if the batch does not commit ([`BlockIndex::undo`]);
//! * the generation in `match_state`: every transaction that consumes
//!   changes or rewrites the matching state (each service batch, a full
//!   re-match) bumps it under the lock, and an instance whose last written
//!   generation is not the current one rebuilds its index first (another
//!   instance, or a re-match by another process, worked in between).
//!
//! What it holds for a record is the keys of its row as the matcher last
//! read it (at the build, or in the batch that applied its last change); a
//! row changed since has a change pending in `record_changes` (the loader
//! writes both in one transaction), which will replace them. That is what
//! `match_keys` held.
//!
//! It also knows which records may have matching state (a pair, an open
//! review item, a person: [`BlockIndex::may_have_state`]); a batch does not
//! look up the state of the others (new records, mostly), which was most
//! of the cost of matching a backlog of new records.
//!
//! Keys are stored as 64-bit hashes ([`key_hash`]) and records as interned
//! `u32` ids, to keep the memory small. A hash collision between two keys
//! only puts the holders of both into one block: more candidates, which the
//! rules then evaluate on the real values — never a wrong link. The full
//! re-match blocks on the same hashes, so both paths see the same blocks
//! (also for `max_block_size`), collisions included.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use futures::TryStreamExt;
use sqlx::PgConnection;

use super::types::Rec;
use crate::features::{Features, SourceRow};
use crate::par::par_map;

/// A blocking key's hash: SipHash-1-3 with fixed keys (`DefaultHasher::new`
/// is deterministic within a build: the service and a re-match run by the
/// same build hash alike).
pub fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

fn rec_hash(source: &str, source_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (source, source_id).hash(&mut h);
    h.finish()
}

/// The hashes of a record's keys, sorted and distinct.
pub fn key_hashes(keys: &[String]) -> Box<[u64]> {
    let mut h: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    h.sort_unstable();
    h.dedup();
    h.into_boxed_slice()
}

/// The matching state of a record `x` (columns `x.source`, `x.source_id`)
/// as SQL, for `concat!`: a current person, a pair, an open review item —
/// one `EXISTS` per index, joined by `$join`. `state_exists!(" OR ")` is
/// "has state" (the debug check of every batch, `incremental.rs`); `"NOT "`
/// before `state_exists!(" AND NOT ")` is "has none" (the index build),
/// which PostgreSQL plans as anti-joins.
#[macro_export]
macro_rules! state_exists {
    ($join:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM person_memberships m WHERE m.source = x.source
                     AND m.source_id = x.source_id AND m.valid_to IS NULL)",
            $join,
            "EXISTS (SELECT 1 FROM match_pairs p WHERE p.a_source = x.source AND p.a_source_id = x.source_id)",
            $join,
            "EXISTS (SELECT 1 FROM match_pairs p WHERE p.b_source = x.source AND p.b_source_id = x.source_id)",
            $join,
            "EXISTS (SELECT 1 FROM review_items r WHERE r.status = 'open'
                     AND r.a_source = x.source AND r.a_source_id = x.source_id)",
            $join,
            "EXISTS (SELECT 1 FROM review_items r WHERE r.status = 'open'
                     AND r.b_source = x.source AND r.b_source_id = x.source_id)"
        )
    };
}

/// The keys of the maps below are hashes already: used as they are.
#[derive(Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this hasher.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

/// A holders value with this bit set is an index into `many`; without, it
/// is the one record holding the key (most keys have one holder).
const MANY: u32 = 1 << 31;

/// An index change to undo if the batch does not commit: the record and
/// its keys before.
pub type Undo = Vec<(u32, Box<[u64]>)>;

#[derive(Default)]
pub struct BlockIndex {
    /// The `match_state` generation this index is equal to the database at;
    /// `None`: not built, or a batch is in flight.
    pub(super) generation: Option<i64>,
    sources: Vec<String>,
    /// Record hash → id; the rare second record with the same hash is in
    /// `collided`.
    ids: HashedMap<u32>,
    collided: HashMap<(String, String), u32>,
    /// Id → (source index, source id).
    recs: Vec<(u16, Box<str>)>,
    /// Id → its keys' hashes (empty: deleted, or no key).
    keys_of: Vec<Box<[u64]>>,
    /// Id → whether the record may have matching state (see
    /// [`BlockIndex::may_have_state`]).
    stated: Vec<bool>,
    /// Key hash → holders (see [`MANY`]).
    holders: HashedMap<u32>,
    many: Vec<Vec<u32>>,
    free: Vec<u32>,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex")
            .field("generation", &self.generation)
            .field("records", &self.recs.len())
            .field("keys", &self.holders.len())
            .finish()
    }
}

impl BlockIndex {
    /// Every live record's keys, read from `source_records` in pieces (the
    /// keys of one piece computed on every core while the next is read).
    ///
    /// Every other row of `source_records` (deleted, or not decodable) is
    /// entered too, without keys, so that every stored record is marked
    /// as one that may have matching state but those found without any
    /// ([`BlockIndex::may_have_state`]).
    pub async fn build(conn: &mut PgConnection) -> sqlx::Result<BlockIndex> {
        const PIECE: usize = 20_000;
        let mut index = BlockIndex::default();
        // Every row in one statement (one snapshot): a record deleted or
        // restored while the index is built must not fall between two.
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            crate::row_columns!(),
            " FROM source_records"
        ))
        .fetch(&mut *conn);
        let mut piece: Vec<SourceRow> = Vec::with_capacity(PIECE);
        let mut pending: Option<tokio::task::JoinHandle<Vec<(Rec, Box<[u64]>)>>> = None;
        loop {
            let row = rows.try_next().await?;
            let done = row.is_none();
            if let Some(row) = &row {
                match crate::features::decode_row(row) {
                    Some(decoded) if decoded.deleted => {
                        index.intern(&decoded.source, &decoded.source_id);
                    }
                    Some(decoded) => piece.push(decoded),
                    None => {
                        use sqlx::Row as _;
                        let s: String = row.try_get("source")?;
                        let i: String = row.try_get("source_id")?;
                        index.intern(&s, &i);
                    }
                }
            }
            if piece.len() < PIECE && !done {
                continue;
            }
            if let Some(p) = pending.take() {
                index.add_all(p.await.expect("key thread panicked"));
            }
            let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE));
            pending = Some(tokio::task::spawn_blocking(move || {
                par_map(&full, |r| {
                    let f = Features::of(r);
                    (
                        (f.source.clone(), f.source_id.clone()),
                        key_hashes(&f.keys()),
                    )
                })
            }));
            if done {
                break;
            }
        }
        if let Some(p) = pending.take() {
            index.add_all(p.await.expect("key thread panicked"));
        }
        drop(rows);
        index.mark_state(conn).await?;
        index.holders.shrink_to_fit();
        index.ids.shrink_to_fit();
        index.recs.shrink_to_fit();
        index.keys_of.shrink_to_fit();
        index.stated.shrink_to_fit();
        Ok(index)
    }

    /// Which records may have matching state, right after the build: all
    /// of them but those waiting in `record_changes` without any (no
    /// current person, pair or open review item: new records, mostly). A
    /// live record is either matched or waiting, so that is exact but for
    /// records set aside as dead letters (marked: only looked up for
    /// nothing). One statement whose cost follows the backlog, not the
    /// table.
    async fn mark_state(&mut self, conn: &mut PgConnection) -> sqlx::Result<()> {
        self.stated.iter_mut().for_each(|s| *s = true);
        let mut rows = sqlx::query_as::<_, (String, String)>(concat!(
            "SELECT DISTINCT x.source, x.source_id FROM record_changes x WHERE NOT ",
            crate::state_exists!(" AND NOT ")
        ))
        .persistent(crate::queue::KEEP_PLAN)
        .fetch(&mut *conn);
        while let Some((s, i)) = rows.try_next().await? {
            let id = self.intern(&s, &i);
            self.stated[id as usize] = false;
        }
        Ok(())
    }

    fn add_all(&mut self, recs: Vec<(Rec, Box<[u64]>)>) {
        for ((s, i), keys) in recs {
            self.replace(&s, &i, keys);
        }
    }

    pub fn records(&self) -> usize {
        self.recs.len()
    }

    pub fn keys(&self) -> usize {
        self.holders.len()
    }

    /// The memory the index holds, estimated from its tables' capacities
    /// (allocator overhead not counted).
    pub fn heap_bytes(&self) -> usize {
        let table = |cap: usize| cap * (16 + 1);
        table(self.ids.capacity())
            + table(self.holders.capacity())
            + self.recs.capacity() * 24
            + self.recs.iter().map(|r| r.1.len()).sum::<usize>()
            + self.keys_of.capacity() * 16
            + self.stated.capacity()
            + self.keys_of.iter().map(|k| k.len() * 8).sum::<usize>()
            + self.many.capacity() * 24
            + self.many.iter().map(|m| m.capacity() * 4).sum::<usize>()
    }

    fn id_of(&self, source: &str, source_id: &str) -> Option<u32> {
        match self.ids.get(&rec_hash(source, source_id)) {
            Some(&id) if self.rec_is(id, source, source_id) => Some(id),
            Some(_) => self
                .collided
                .get(&(source.to_string(), source_id.to_string()))
                .copied(),
            None => None,
        }
    }

    fn rec_is(&self, id: u32, source: &str, source_id: &str) -> bool {
        let (s, i) = &self.recs[id as usize];
        self.sources[*s as usize] == source && &**i == source_id
    }

    fn intern(&mut self, source: &str, source_id: &str) -> u32 {
        if let Some(id) = self.id_of(source, source_id) {
            return id;
        }
        let s = match self.sources.iter().position(|s| s == source) {
            Some(s) => s,
            None => {
                self.sources.push(source.to_string());
                self.sources.len() - 1
            }
        } as u16;
        let id = self.recs.len() as u32;
        assert!(id < MANY, "more than 2^31 records in the blocking index");
        self.recs.push((s, source_id.into()));
        self.keys_of.push(Box::new([]));
        self.stated.push(false);
        match self.ids.entry(rec_hash(source, source_id)) {
            Entry::Vacant(e) => {
                e.insert(id);
            }
            Entry::Occupied(_) => {
                self.collided
                    .insert((source.to_string(), source_id.to_string()), id);
            }
        }
        id
    }

    /// Whether the record may have matching state: a pair, an open review
    /// item or a current person. False means it has none (unless an
    /// operator's decision names it: operators may name any stored record
    /// and apply their decision in their own process, so a batch asks
    /// `match_decisions` about such records); the batch then skips looking
    /// for that state.
    ///
    /// Why that holds: the build marks every record but those it found
    /// without state (`mark_state`), a record entered later
    /// (written after the build) has none until a batch gives it, and the
    /// state of
    /// the matcher changes only under its lock, in batches of this instance
    /// (which mark every record they give state: the ends of the pairs
    /// they write and every record of the component they recompute) or in
    /// transactions of others: another instance's batch or a re-match bump
    /// the generation (this index is rebuilt), and an operator's decision
    /// reaches only the records the decision names (asked) and records
    /// that have state already (pairs, persons). A mark is never taken
    /// back: a record marked without state (its batch rolled back, its
    /// person gone) is only looked up for nothing.
    pub fn may_have_state(&self, source: &str, source_id: &str) -> bool {
        self.id_of(source, source_id)
            .is_some_and(|id| self.stated[id as usize])
    }

    /// [`BlockIndex::may_have_state`] of an id.
    pub fn id_may_have_state(&self, id: u32) -> bool {
        self.stated[id as usize]
    }

    /// Marks the record as one that may have matching state.
    pub fn mark_stated(&mut self, source: &str, source_id: &str) {
        let id = self.intern(source, source_id);
        self.stated[id as usize] = true;
    }

    /// The record of an id.
    pub fn rec(&self, id: u32) -> Rec {
        let (s, i) = &self.recs[id as usize];
        (self.sources[*s as usize].clone(), i.to_string())
    }

    /// Gives `source:source_id` the keys `keys` (empty: the record is gone);
    /// returns its id and its keys before.
    pub fn replace(
        &mut self,
        source: &str,
        source_id: &str,
        keys: Box<[u64]>,
    ) -> (u32, Box<[u64]>) {
        let id = self.intern(source, source_id);
        let old = std::mem::take(&mut self.keys_of[id as usize]);
        if *old == *keys {
            self.keys_of[id as usize] = keys;
            return (id, old);
        }
        for &k in old.iter() {
            if keys.binary_search(&k).is_err() {
                self.remove_holder(k, id);
            }
        }
        for &k in keys.iter() {
            if old.binary_search(&k).is_err() {
                self.add_holder(k, id);
            }
        }
        self.keys_of[id as usize] = keys;
        (id, old)
    }

    /// Puts back what a batch that did not commit changed, newest first.
    pub fn undo(&mut self, undo: Undo) {
        for (id, keys) in undo.into_iter().rev() {
            let (s, i) = &self.recs[id as usize];
            let (s, i) = (self.sources[*s as usize].clone(), i.to_string());
            self.replace(&s, &i, keys);
        }
    }

    /// A record's keys (sorted hashes).
    pub fn keys_of(&self, id: u32) -> &[u64] {
        &self.keys_of[id as usize]
    }

    /// The records holding a key.
    pub fn holders(&self, key: u64) -> &[u32] {
        match self.holders.get(&key) {
            None => &[],
            Some(v) if v & MANY != 0 => &self.many[(v & !MANY) as usize],
            Some(v) => std::slice::from_ref(v),
        }
    }

    fn add_holder(&mut self, key: u64, id: u32) {
        match self.holders.entry(key) {
            Entry::Vacant(e) => {
                e.insert(id);
            }
            Entry::Occupied(mut e) => {
                let v = *e.get();
                if v & MANY != 0 {
                    self.many[(v & !MANY) as usize].push(id);
                } else {
                    let slot = match self.free.pop() {
                        Some(slot) => {
                            self.many[slot as usize] = vec![v, id];
                            slot
                        }
                        None => {
                            self.many.push(vec![v, id]);
                            (self.many.len() - 1) as u32
                        }
                    };
                    e.insert(slot | MANY);
                }
            }
        }
    }

    fn remove_holder(&mut self, key: u64, id: u32) {
        let Entry::Occupied(mut e) = self.holders.entry(key) else {
            return;
        };
        let v = *e.get();
        if v & MANY == 0 {
            if v == id {
                e.remove();
            }
            return;
        }
        let slot = v & !MANY;
        let list = &mut self.many[slot as usize];
        if let Some(p) = list.iter().position(|&r| r == id) {
            list.swap_remove(p);
        }
        if list.len() == 1 {
            let only = list[0];
            self.many[slot as usize] = Vec::new();
            self.free.push(slot);
            e.insert(only);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(keys: &[u64]) -> Box<[u64]> {
        let mut v = keys.to_vec();
        v.sort_unstable();
        v.into_boxed_slice()
    }

    fn sorted_holders(ix: &BlockIndex, keys: &[u64]) -> Vec<Vec<u32>> {
        keys.iter()
            .map(|&k| {
                let mut h = ix.holders(k).to_vec();
                h.sort();
                h
            })
            .collect()
    }

    #[test]
    fn replace_and_undo_keep_holders_exact() {
        let mut ix = BlockIndex::default();
        ix.replace("a", "1", ks(&[10, 20]));
        ix.replace("a", "2", ks(&[20, 30]));
        ix.replace("b", "1", ks(&[20]));
        assert_eq!(ix.holders(20).len(), 3);
        assert_eq!(ix.holders(10), &[0]);
        let before = sorted_holders(&ix, &[10, 20, 30, 40]);
        let undo: Undo = vec![
            ix.replace("a", "1", ks(&[40])),
            ix.replace("b", "1", ks(&[])),
            ix.replace("c", "9", ks(&[20, 40])),
        ];
        assert_eq!(ix.holders(10), &[] as &[u32]);
        assert_eq!(ix.holders(40).len(), 2);
        assert_eq!(sorted_holders(&ix, &[20]), [[1, 3]]);
        ix.undo(undo);
        let after = sorted_holders(&ix, &[10, 20, 30, 40]);
        assert_eq!(before, after);
        assert_eq!(ix.rec(2), ("b".to_string(), "1".to_string()));
    }

    #[test]
    fn a_record_hash_collision_keeps_records_apart() {
        let mut ix = BlockIndex::default();
        let a = ix.intern("a", "1");
        // Simulate a second record whose hash collides with the first.
        let id = ix.recs.len() as u32;
        ix.sources.push("b".into());
        ix.recs.push((1, "2".into()));
        ix.keys_of.push(Box::new([]));
        ix.stated.push(false);
        ix.collided.insert(("b".into(), "2".into()), id);
        ix.ids.insert(rec_hash("b", "2"), a);
        assert_eq!(ix.id_of("a", "1"), Some(a));
        assert_eq!(ix.id_of("b", "2"), Some(id));
    }
}
