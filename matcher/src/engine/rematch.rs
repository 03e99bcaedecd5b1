//! A full re-match (after a rule or weight change, or for an initial load):
//! everything recomputed from `source_records` in memory, in one
//! transaction, through the same [`Component::apply`] as the incremental
//! path, so it gives the same persons.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use super::component::Component;
use super::index::key_hashes;
use super::phases::Phases;
use super::setup::Setup;
use super::types::{Applied, PairRow};
use super::write;
use crate::features::{Features, SourceRow};
use crate::lock::lock;
use crate::par::par_map;

/// Recomputes everything from `source_records`: the same result as
/// applying every change incrementally. Claims (deletes) the change-feed
/// rows present at its start.
pub(super) async fn rematch_all(setup: &Setup, pool: &PgPool) -> sqlx::Result<Applied> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    // The model in use now (a training just before may have changed it).
    let setup = &setup.reloaded(&mut tx).await?;
    // The index builds below sort millions of keys: in memory rather
    // than through temporary files (the server default is 64 MB).
    sqlx::query("SET LOCAL maintenance_work_mem = '1GB'")
        .execute(&mut *tx)
        .await?;
    let changes = sqlx::query("DELETE FROM record_changes")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let mut phases = Phases::new("re-match", 0, true);
    let (nodes, keys_of) = read_all(&mut tx, &mut phases).await?;
    let pairs = rebuild_pairs(&mut tx, setup, &nodes, keys_of, &mut phases).await?;
    let component = Component::load_all(&mut tx, nodes, pairs).await?;
    phases.mark("state read");
    let mut applied = component.apply(&mut tx, setup, &mut phases).await?;
    applied.changes = changes;
    tx.commit().await?;
    phases.mark("committed");
    // The first batches after a re-match that wrote a million
    // memberships must not be planned from the statistics of the
    // tables before it (measured: a membership lookup of 2,000 new
    // records took 1.2 s as a sequential scan). After the commit: an
    // ANALYZE sees only committed rows.
    if applied.moved > 0 {
        sqlx::query("ANALYZE person_memberships, persons")
            .execute(pool)
            .await?;
        phases.mark("statistics updated");
    }
    Ok(applied)
}

/// Every live record's features and key hashes, sorted by record.
async fn read_all(
    tx: &mut PgConnection,
    phases: &mut Phases,
) -> sqlx::Result<(Vec<Features>, Vec<Box<[u64]>>)> {
    let rows: Vec<SourceRow> = sqlx::query(concat!(
        "SELECT ",
        crate::row_columns!(),
        " FROM source_records WHERE deleted_at IS NULL"
    ))
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .filter_map(crate::features::decode_row)
    .collect();
    phases.records = rows.len();
    phases.mark("records read");
    let mut nodes: Vec<(Features, Box<[u64]>)> = par_map(&rows, |r| {
        let f = Features::of(r);
        let k = key_hashes(&f.keys());
        (f, k)
    });
    drop(rows);
    nodes.sort_by(|(a, _), (b, _)| (&a.source, &a.source_id).cmp(&(&b.source, &b.source_id)));
    phases.mark("features and keys computed");
    Ok(nodes.into_iter().unzip())
}

/// The pairs of `nodes`, evaluated and written to `match_pairs`, rebuilt
/// from scratch: the table emptied and its indexes built after the bulk
/// copy (several times faster than maintaining them row by row), all
/// inside the re-match's transaction, which also bumps the generation.
/// The blocking keys are not written: the service keeps them in memory
/// and rebuilds them after the generation bump.
async fn rebuild_pairs(
    tx: &mut PgConnection,
    setup: &Setup,
    nodes: &[Features],
    keys_of: Vec<Box<[u64]>>,
    phases: &mut Phases,
) -> sqlx::Result<Vec<PairRow>> {
    for sql in [
        "TRUNCATE match_pairs",
        "DROP INDEX match_pairs_b",
        "ALTER TABLE match_pairs DROP CONSTRAINT match_pairs_pkey",
        "UPDATE match_state SET generation = generation + 1, updated_at = now()",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    let pairs = pairs_in_blocks(setup, nodes, &keys_of);
    drop(keys_of);
    phases.mark("pairs evaluated");
    write::pairs(tx, &pairs).await?;
    phases.mark("pairs written");
    for sql in [
        "ALTER TABLE match_pairs ADD CONSTRAINT match_pairs_pkey PRIMARY KEY (a_source, a_source_id, b_source, b_source_id)",
        "CREATE INDEX match_pairs_b ON match_pairs (b_source, b_source_id)",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    // Fresh statistics: the incremental path's plans right after a
    // re-match must not be made from the empty table's.
    sqlx::query("ANALYZE match_pairs").execute(&mut *tx).await?;
    phases.mark("indexes built");
    Ok(pairs)
}

/// Every pair of records sharing a usable block (2 to `max_block_size`
/// holders; blocks are key hashes, as in the service's index), evaluated once: in the block of the first usable key the
/// two share (keys numbered in order of first appearance), so that the
/// blocks can be shared out between threads without a common "seen" set.
fn pairs_in_blocks(setup: &Setup, nodes: &[Features], keys_of: &[Box<[u64]>]) -> Vec<PairRow> {
    let mut key_id: HashMap<u64, u32> = HashMap::with_capacity(nodes.len() * 4);
    let mut blocks: Vec<Vec<u32>> = Vec::new();
    let mut ids_of: Vec<Vec<u32>> = Vec::with_capacity(nodes.len());
    for (n, keys) in keys_of.iter().enumerate() {
        let mut ids = Vec::with_capacity(keys.len());
        for &k in keys.iter() {
            let id = *key_id.entry(k).or_insert_with(|| {
                blocks.push(Vec::new());
                (blocks.len() - 1) as u32
            });
            blocks[id as usize].push(n as u32);
            ids.push(id);
        }
        ids_of.push(ids);
    }
    drop(key_id);
    let usable = |b: u32| {
        let len = blocks[b as usize].len() as i64;
        len >= 2 && len <= setup.max_block_size
    };
    // Each node's usable blocks, sorted.
    let ids_of: Vec<Vec<u32>> = ids_of
        .into_iter()
        .map(|mut ids| {
            ids.retain(|&b| usable(b));
            ids.sort_unstable();
            ids
        })
        .collect();
    let first_shared = |x: &[u32], y: &[u32]| {
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            match x[i].cmp(&y[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return Some(x[i]),
            }
        }
        None
    };
    let usable_blocks: Vec<u32> = (0..blocks.len() as u32).filter(|&b| usable(b)).collect();
    par_map(&usable_blocks, |&b| {
        let members = &blocks[b as usize];
        let mut pairs = Vec::new();
        // Members are in node order: i < j.
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                if first_shared(&ids_of[i as usize], &ids_of[j as usize]) != Some(b) {
                    continue;
                }
                if let Some(p) = setup.evaluate(&nodes[i as usize], &nodes[j as usize]) {
                    pairs.push(p);
                }
            }
        }
        pairs
    })
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::rules::Weights;

    fn record(n: usize) -> Features {
        Features {
            source: "qms".into(),
            source_id: format!("{n:03}"),
            last: Some("иванов".into()),
            last_parts: vec!["иванов".into()],
            first: Some("петр".into()),
            middle: Some("сергеевич".into()),
            birth: NaiveDate::from_ymd_opt(1990, 5, 3),
            sex: Some('M'),
            docs: vec![],
            snils: Some("11223344595".into()),
            oms: None,
            phones: vec![],
            emails: vec![],
        }
    }

    fn setup(max_block_size: i64) -> Setup {
        Setup {
            scoring: crate::engine::Scoring::Rules(Weights::default()),
            max_block_size,
            actor: "matcher".into(),
        }
    }

    fn names(pairs: &[PairRow]) -> Vec<(String, String)> {
        let mut names: Vec<_> = pairs
            .iter()
            .map(|p| (p.a.1.clone(), p.b.1.clone()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pair_sharing_several_blocks_is_evaluated_once() {
        let nodes: Vec<Features> = (0..3).map(record).collect();
        let keys: Vec<Box<[u64]>> = vec![Box::new([1, 2, 3]), Box::new([2, 3]), Box::new([3, 9])];
        let pairs = pairs_in_blocks(&setup(100), &nodes, &keys);
        assert_eq!(
            names(&pairs),
            [("000", "001"), ("000", "002"), ("001", "002")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn blocks_over_the_largest_size_give_no_pairs() {
        let nodes: Vec<Features> = (0..4).map(record).collect();
        // Key 1 is held by all four (over the limit of 3); key 2 by two.
        let keys: Vec<Box<[u64]>> = vec![
            Box::new([1, 2]),
            Box::new([1, 2]),
            Box::new([1]),
            Box::new([1]),
        ];
        let pairs = pairs_in_blocks(&setup(3), &nodes, &keys);
        assert_eq!(names(&pairs), [("000".to_string(), "001".to_string())]);
    }
}
