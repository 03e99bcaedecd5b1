//! Reading a component's state: from a set of changed records (a
//! breadth-first walk over links, operator links and persons), or
//! everything (a full re-match).

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use super::super::rows::load_rows;
use super::super::types::{split, PairRow, Rec};
use super::{Component, DecisionRow, ItemRow, Member, OpenItem, OperatorDecision, StoredPair};
use crate::features::Features;
use crate::rules::Decision;

impl Component {
    /// The component of `seeds`: closed under links, operator links and
    /// current person membership. `known` holds features already read in
    /// this transaction (the changed records and their candidates): only the
    /// other records are read again. `seed_pairs`, when given, are all the
    /// pairs of the seeds (a batch has just deleted their old pairs and
    /// written these): the seeds' pairs are then not read back.
    ///
    /// A breadth-first walk ([`Walk`]): each step reads, for the records it
    /// reached, their pairs, operator decisions, open review items and
    /// current persons with those persons' other members — four set-based
    /// statements per step, each record probed once for each.
    ///
    /// `fresh` seeds are known to have no state (no pairs, review items or
    /// person, named by no decision: see `BlockIndex::may_have_state`):
    /// they are not probed.
    /// A backlog of new records is mostly fresh, and these probes were
    /// most of its cost.
    pub(in crate::engine) async fn load(
        tx: &mut PgConnection,
        seeds: &[Rec],
        known: HashMap<Rec, Features>,
        seed_pairs: Option<&[PairRow]>,
        fresh: &HashSet<Rec>,
    ) -> sqlx::Result<Component> {
        let mut walk = Walk {
            set: seeds.iter().cloned().collect(),
            placed: fresh.clone(),
            ..Walk::default()
        };
        let pairs_known: HashSet<Rec> = match seed_pairs {
            Some(_) => walk.set.clone(),
            None => HashSet::new(),
        };
        for p in seed_pairs.into_iter().flatten() {
            walk.add_pair(p.clone());
        }
        let mut frontier: Vec<Rec> = seeds.to_vec();
        while !frontier.is_empty() {
            walk.step(tx, &frontier, &pairs_known, fresh).await?;
            frontier = walk.next_frontier();
        }
        walk.into_component(tx, known).await
    }

    /// Everything: every live record (sorted), every pair.
    pub(in crate::engine) async fn load_all(
        tx: &mut PgConnection,
        nodes: Vec<Features>,
        pairs: Vec<PairRow>,
    ) -> sqlx::Result<Component> {
        let (links, reviews) = pairs
            .into_iter()
            .partition(|p| p.decision == Decision::Link);
        let decisions: Vec<DecisionRow> = sqlx::query_as(
            "SELECT id, kind, a_source, a_source_id, b_source, b_source_id FROM match_decisions
             WHERE revoked_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let items: Vec<ItemRow> = sqlx::query_as(
            "SELECT id, a_source, a_source_id, b_source, b_source_id FROM review_items WHERE status = 'open'",
        )
        .fetch_all(&mut *tx)
        .await?;
        let members: Vec<Member> = sqlx::query_as(
            "SELECT m.source, m.source_id, m.person_id, p.locked FROM person_memberships m
             JOIN persons p USING (person_id) WHERE m.valid_to IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut person_of = HashMap::with_capacity(members.len());
        let mut locked = HashSet::new();
        for m in members {
            if m.locked {
                locked.insert(m.person_id);
            }
            person_of.insert((m.source, m.source_id), m.person_id);
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
            decisions: decisions.into_iter().map(OperatorDecision::from).collect(),
            person_of,
            locked,
            open_items: items.into_iter().map(OpenItem::from).collect(),
        })
    }
}

/// What the walk from the seeds has found so far.
#[derive(Default)]
struct Walk {
    /// Every record reached.
    set: HashSet<Rec>,
    pairs: HashMap<(Rec, Rec), PairRow>,
    decisions: HashMap<i64, OperatorDecision>,
    open_items: HashMap<i64, OpenItem>,
    person_of: HashMap<Rec, i64>,
    locked: HashSet<i64>,
    /// Records whose current person (or lack of one) is known.
    placed: HashSet<Rec>,
    /// Records reached since the last step (some already in `set`).
    reached: Vec<Rec>,
}

impl Walk {
    fn add_pair(&mut self, p: PairRow) {
        if p.decision == Decision::Link {
            self.reached.extend([p.a.clone(), p.b.clone()]);
        }
        self.pairs.entry((p.a.clone(), p.b.clone())).or_insert(p);
    }

    /// Reads the state of `frontier`: its pairs (unless `pairs_known`),
    /// operator decisions and open review items (unless `fresh`), current
    /// persons with their other members (unless placed already).
    async fn step(
        &mut self,
        tx: &mut PgConnection,
        frontier: &[Rec],
        pairs_known: &HashSet<Rec>,
        fresh: &HashSet<Rec>,
    ) -> sqlx::Result<()> {
        let probe: Vec<Rec> = frontier
            .iter()
            .filter(|r| !pairs_known.contains(*r))
            .cloned()
            .collect();
        for p in pairs_of(tx, &probe).await? {
            self.add_pair(p);
        }
        let stated: Vec<Rec> = frontier
            .iter()
            .filter(|r| !fresh.contains(*r))
            .cloned()
            .collect();
        for d in decisions_of(tx, &stated).await? {
            if d.is_link() {
                self.reached.extend([d.a.clone(), d.b.clone()]);
            }
            self.decisions.insert(d.id, d);
        }
        for item in open_items_of(tx, &stated).await? {
            self.open_items.insert(item.id, item);
        }
        // Current persons and their other members (a member found
        // here is placed already: not probed again).
        let unplaced: Vec<Rec> = frontier
            .iter()
            .filter(|r| !self.placed.contains(*r))
            .cloned()
            .collect();
        for m in members_of_persons(tx, &unplaced).await? {
            if m.locked {
                self.locked.insert(m.person_id);
            }
            let (person, r) = (m.person_id, m.rec());
            self.person_of.insert(r.clone(), person);
            self.placed.insert(r.clone());
            self.reached.push(r);
        }
        self.placed.extend(unplaced);
        Ok(())
    }

    /// The records reached by the last step that are new to the set.
    fn next_frontier(&mut self) -> Vec<Rec> {
        std::mem::take(&mut self.reached)
            .into_iter()
            .filter(|r| self.set.insert(r.clone()))
            .collect()
    }

    /// The component of the records reached: their features (those not
    /// `known` read now), pairs, decisions, review items, and the persons
    /// of review partners outside the set.
    async fn into_component(
        self,
        tx: &mut PgConnection,
        known: HashMap<Rec, Features>,
    ) -> sqlx::Result<Component> {
        let Walk {
            set,
            pairs,
            decisions,
            open_items,
            mut person_of,
            mut locked,
            placed,
            reached: _,
        } = self;
        let mut recs: Vec<Rec> = set.into_iter().collect();
        recs.sort();
        let (nodes, leaving) = live_and_leaving(tx, &recs, known).await?;
        let (links, reviews): (Vec<PairRow>, Vec<PairRow>) = pairs
            .into_values()
            .partition(|p| p.decision == Decision::Link);
        // Persons of review partners and of records kept apart from the
        // set's, outside the set: review items are one per pair of persons.
        let mut partners: Vec<Rec> = reviews
            .iter()
            .flat_map(|p| [&p.a, &p.b])
            .chain(decisions.values().flat_map(|d| [&d.a, &d.b]))
            .filter(|r| !placed.contains(*r))
            .cloned()
            .collect();
        partners.sort();
        partners.dedup();
        for m in members(tx, &partners).await? {
            if m.locked {
                locked.insert(m.person_id);
            }
            person_of.insert((m.source, m.source_id), m.person_id);
        }
        let mut decisions: Vec<OperatorDecision> = decisions.into_values().collect();
        decisions.sort_by_key(|d| d.id);
        let mut open_items: Vec<OpenItem> = open_items.into_values().collect();
        open_items.sort_by_key(|o| o.id);
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
}

/// The features of the live records of `recs` (sorted), taken from
/// `known` or read; and the records that are deleted or gone.
async fn live_and_leaving(
    tx: &mut PgConnection,
    recs: &[Rec],
    mut known: HashMap<Rec, Features>,
) -> sqlx::Result<(Vec<Features>, Vec<Rec>)> {
    let unknown: Vec<Rec> = recs
        .iter()
        .filter(|r| !known.contains_key(*r))
        .cloned()
        .collect();
    let rows = load_rows(tx, &unknown).await?;
    let mut nodes = Vec::new();
    let mut leaving = Vec::new();
    for r in recs {
        if let Some(f) = known.remove(r) {
            nodes.push(f);
            continue;
        }
        match rows.get(r) {
            Some(row) if !row.deleted => nodes.push(Features::of(row)),
            _ => leaving.push(r.clone()),
        }
    }
    Ok((nodes, leaving))
}

/// The stored pairs with an end in `recs`. Two joins, one per index: an
/// `OR` would scan the whole table.
async fn pairs_of(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<Vec<PairRow>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<StoredPair> = sqlx::query_as(
        "SELECT p.a_source, p.a_source_id, p.b_source, p.b_source_id, p.decision, p.rule, p.score, p.evidence
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN match_pairs p ON p.a_source = f.s AND p.a_source_id = f.i
         UNION ALL SELECT p.a_source, p.a_source_id, p.b_source, p.b_source_id, p.decision, p.rule, p.score, p.evidence
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN match_pairs p ON p.b_source = f.s AND p.b_source_id = f.i",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(PairRow::from).collect())
}

/// The active operator decisions naming a record of `recs`.
async fn decisions_of(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<Vec<OperatorDecision>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<DecisionRow> = sqlx::query_as(
        "SELECT d.id, d.kind, d.a_source, d.a_source_id, d.b_source, d.b_source_id
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN match_decisions d ON d.a_source = f.s AND d.a_source_id = f.i WHERE d.revoked_at IS NULL
         UNION ALL SELECT d.id, d.kind, d.a_source, d.a_source_id, d.b_source, d.b_source_id
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN match_decisions d ON d.b_source = f.s AND d.b_source_id = f.i WHERE d.revoked_at IS NULL",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(OperatorDecision::from).collect())
}

/// The open review items naming a record of `recs`.
async fn open_items_of(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<Vec<OpenItem>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT r.id, r.a_source, r.a_source_id, r.b_source, r.b_source_id
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN review_items r ON r.a_source = f.s AND r.a_source_id = f.i WHERE r.status = 'open'
         UNION ALL SELECT r.id, r.a_source, r.a_source_id, r.b_source, r.b_source_id
         FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN review_items r ON r.b_source = f.s AND r.b_source_id = f.i WHERE r.status = 'open'",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(OpenItem::from).collect())
}

/// The current memberships of `recs` (those that have one).
async fn members(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<Vec<Member>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    sqlx::query_as(
        "SELECT m.source, m.source_id, m.person_id, p.locked FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN person_memberships m ON m.source = f.s AND m.source_id = f.i AND m.valid_to IS NULL
         JOIN persons p USING (person_id)",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await
}

/// The current memberships of `recs`' persons: each record's own and its
/// person's other members.
async fn members_of_persons(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<Vec<Member>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    sqlx::query_as(
        "SELECT m2.source, m2.source_id, m2.person_id, p.locked FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN person_memberships m1 ON m1.source = f.s AND m1.source_id = f.i AND m1.valid_to IS NULL
         JOIN persons p ON p.person_id = m1.person_id
         JOIN person_memberships m2 ON m2.person_id = m1.person_id AND m2.valid_to IS NULL",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await
}
