//! A set of changed records, from one to a backlog of tens of thousands:
//! replace their blocking keys, find their candidates through the key index,
//! re-evaluate their pairs in Rust, and recompute their component's persons
//! ([`super::component`]). Every step is one set-based statement over the
//! whole set (joins against `UNNEST`ed arrays, COPY for the new rows), so a
//! large batch costs a few statements, not a few per record.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Postgres, Transaction};

use super::component::Component;
use super::{ordered, split, write, Applied, Engine, PairRow, Phases, Rec};
use crate::features::{Features, SourceRow};

/// Batches of at least this many records log their phases at `info`.
const LOUD_BATCH: usize = 5_000;

impl Engine {
    /// Re-evaluates `changed` records (keys, pairs) and recomputes their
    /// component. The caller holds the lock.
    pub async fn recompute(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        changed: &[Rec],
    ) -> sqlx::Result<Applied> {
        let mut changed = changed.to_vec();
        changed.sort();
        changed.dedup();
        let changed = &changed[..];
        let mut phases = Phases::new("batch", changed.len(), changed.len() >= LOUD_BATCH);
        let rows = load_rows(tx, changed).await?;
        let live: Vec<Features> = changed
            .iter()
            .filter_map(|r| rows.get(r))
            .filter(|row| !row.deleted)
            .map(Features::of)
            .collect();
        drop(rows);
        phases.mark("changed records read");

        // Keys: only the difference is written (an update that leaves the
        // names, birth date and identifiers alone changes no key, and each
        // key row costs two index entries).
        let (s, i) = split(changed);
        let stored: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT k.source, k.source_id, k.key FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
             JOIN match_keys k ON k.source = f.s AND k.source_id = f.i",
        )
        .bind(&s)
        .bind(&i)
        .fetch_all(&mut **tx)
        .await?;
        let mut old_keys: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
        for (s, i, k) in &stored {
            old_keys
                .entry((s.as_str(), i.as_str()))
                .or_default()
                .insert(k.as_str());
        }
        let keys_of: Vec<(Rec, Vec<String>)> = live
            .iter()
            .map(|f| ((f.source.clone(), f.source_id.clone()), f.keys()))
            .collect();
        let mut added: Vec<(&str, &str, &[String])> = Vec::new();
        let mut new_keys: Vec<String> = Vec::new();
        let mut new_of: Vec<(&str, &str, std::ops::Range<usize>)> = Vec::new();
        for ((s, i), keys) in &keys_of {
            let old = old_keys.remove(&(s.as_str(), i.as_str()));
            match old {
                None => added.push((s.as_str(), i.as_str(), keys.as_slice())),
                Some(mut old) => {
                    let start = new_keys.len();
                    for k in keys {
                        if !old.remove(k.as_str()) {
                            new_keys.push(k.clone());
                        }
                    }
                    new_of.push((s.as_str(), i.as_str(), start..new_keys.len()));
                    if !old.is_empty() {
                        old_keys.insert((s.as_str(), i.as_str()), old);
                    }
                }
            }
        }
        added.extend(
            new_of
                .iter()
                .map(|(s, i, r)| (*s, *i, &new_keys[r.clone()])),
        );
        // What is left in `old_keys` is gone (deleted records: all of theirs).
        let mut gone: [Vec<&str>; 3] = Default::default();
        for ((s, i), keys) in &old_keys {
            for k in keys {
                gone[0].push(s);
                gone[1].push(i);
                gone[2].push(k);
            }
        }
        if !gone[0].is_empty() {
            sqlx::query(
                "DELETE FROM match_keys k USING UNNEST($1::text[], $2::text[], $3::text[]) AS f(s, i, k)
                 WHERE k.source = f.s AND k.source_id = f.i AND k.key = f.k",
            )
            .bind(&gone[0])
            .bind(&gone[1])
            .bind(&gone[2])
            .execute(&mut **tx)
            .await?;
        }
        if !added.is_empty() {
            write::keys(tx, &added).await?;
        }
        drop(added);
        drop(old_keys);
        drop(stored);
        phases.mark("keys replaced");

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
        phases.mark("old pairs deleted");
        let mut all_keys: Vec<&str> = keys_of
            .iter()
            .flat_map(|(_, k)| k)
            .map(String::as_str)
            .collect();
        all_keys.sort_unstable();
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
        let mut features: HashMap<Rec, Features> = live
            .into_iter()
            .map(|f| ((f.source.clone(), f.source_id.clone()), f))
            .collect();
        let candidates: Vec<Rec> = by_key
            .values()
            .flatten()
            .filter(|r| !features.contains_key(*r))
            .cloned()
            .collect::<HashSet<Rec>>()
            .into_iter()
            .collect();
        phases.mark("blocks looked up");
        for row in load_rows(tx, &candidates).await?.into_values() {
            if !row.deleted {
                features.insert(
                    (row.source.clone(), row.source_id.clone()),
                    Features::of(&row),
                );
            }
        }
        phases.mark("candidates read");
        let mut pairs: HashMap<(Rec, Rec), PairRow> = HashMap::new();
        for (me, keys) in &keys_of {
            for key in keys {
                for other in by_key.get(key).into_iter().flatten() {
                    if other == me {
                        continue;
                    }
                    let pair = ordered(me, other);
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
        phases.mark("pairs evaluated");
        write::pairs(tx, &pairs).await?;
        phases.mark("pairs written");

        let component = Component::load(tx, changed, features).await?;
        phases.mark("component read");
        let applied = component.apply(tx, &self.actor, &mut phases).await?;
        Ok(applied)
    }
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
