//! From pairs to persons, shared by the incremental path and the full
//! re-match: the state of a set of records (its component), the clustering
//! with the chaining guard, stable person ids, and the difference written
//! (memberships, persons, review items, audit).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgConnection;

use super::phases::Phases;
use super::rows::load_rows;
use super::setup::Setup;
use super::types::{ordered, split, Applied, PairRow, Rec};
use super::write::{self, Audit, NewItem, Placed, Via};
use crate::cluster::{self, Edge, EdgeKind};
use crate::features::Features;
use crate::rules::Decision;

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

impl Component {
    /// The component of `seeds`: closed under links, operator links and
    /// current person membership. `known` holds features already read in
    /// this transaction (the changed records and their candidates): only the
    /// other records are read again. `seed_pairs`, when given, are all the
    /// pairs of the seeds (a batch has just deleted their old pairs and
    /// written these): the seeds' pairs are then not read back.
    ///
    /// A breadth-first walk: each step reads, for the records it reached,
    /// their pairs, operator decisions, open review items and current
    /// persons with those persons' other members — four set-based
    /// statements per step, each record probed once for each.
    ///
    /// `fresh` seeds are known to have no state (no pairs, review items or
    /// person, named by no decision: see `BlockIndex::may_have_state`):
    /// they are not probed.
    /// A backlog of new records is mostly fresh, and these probes were
    /// most of its cost.
    pub(super) async fn load(
        tx: &mut PgConnection,
        seeds: &[Rec],
        mut known: HashMap<Rec, Features>,
        seed_pairs: Option<&[PairRow]>,
        fresh: &HashSet<Rec>,
    ) -> sqlx::Result<Component> {
        let mut set: HashSet<Rec> = seeds.iter().cloned().collect();
        let pairs_known: HashSet<Rec> = match seed_pairs {
            Some(_) => set.clone(),
            None => HashSet::new(),
        };
        let mut pairs: HashMap<(Rec, Rec), PairRow> = HashMap::new();
        let mut decisions: HashMap<i64, (String, Rec, Rec)> = HashMap::new();
        let mut open_items: HashMap<i64, (Rec, Rec)> = HashMap::new();
        let mut person_of: HashMap<Rec, i64> = HashMap::new();
        let mut locked = HashSet::new();
        // Records whose current person (or lack of one) is known.
        let mut placed: HashSet<Rec> = fresh.clone();
        let mut reached: Vec<Rec> = Vec::new();
        for p in seed_pairs.into_iter().flatten() {
            if p.decision == Decision::Link {
                reached.extend([p.a.clone(), p.b.clone()]);
            }
            pairs.insert((p.a.clone(), p.b.clone()), p.clone());
        }
        let mut frontier: Vec<Rec> = seeds.to_vec();
        while !frontier.is_empty() {
            let probe: Vec<Rec> = frontier
                .iter()
                .filter(|r| !pairs_known.contains(*r))
                .cloned()
                .collect();
            if !probe.is_empty() {
                let (s, i) = split(&probe);
                let rows: Vec<(String, String, String, String, String, String, f32, Value)> =
                    sqlx::query_as(
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
                for (a0, a1, b0, b1, d, rule, score, evidence) in rows {
                    let decision = match d.as_str() {
                        "link" => Decision::Link,
                        "review" => Decision::Review,
                        _ => Decision::Conflict,
                    };
                    let (a, b) = ((a0, a1), (b0, b1));
                    if decision == Decision::Link {
                        reached.extend([a.clone(), b.clone()]);
                    }
                    pairs.entry((a.clone(), b.clone())).or_insert(PairRow {
                        a,
                        b,
                        decision,
                        rule,
                        score,
                        evidence,
                    });
                }
            }
            let stated: Vec<Rec> = frontier
                .iter()
                .filter(|r| !fresh.contains(*r))
                .cloned()
                .collect();
            let (s, i) = split(&stated);
            let rows: Vec<(i64, String, String, String, String, String)> = if stated.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(
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
                .await?
            };
            for (id, kind, a0, a1, b0, b1) in rows {
                let (a, b) = ((a0, a1), (b0, b1));
                if kind == "link" {
                    reached.extend([a.clone(), b.clone()]);
                }
                decisions.insert(id, (kind, a, b));
            }
            let rows: Vec<(i64, String, String, String, String)> = if stated.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(
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
                .await?
            };
            for (id, a0, a1, b0, b1) in rows {
                open_items.insert(id, ((a0, a1), (b0, b1)));
            }
            // Current persons and their other members (a member found
            // here is placed already: not probed again).
            let unplaced: Vec<Rec> = frontier
                .iter()
                .filter(|r| !placed.contains(*r))
                .cloned()
                .collect();
            for (r, p, l) in members_of_persons(tx, &unplaced).await? {
                if l {
                    locked.insert(p);
                }
                person_of.insert(r.clone(), p);
                placed.insert(r.clone());
                reached.push(r);
            }
            placed.extend(unplaced);
            frontier = std::mem::take(&mut reached)
                .into_iter()
                .filter(|r| set.insert(r.clone()))
                .collect();
        }
        let mut recs: Vec<Rec> = set.into_iter().collect();
        recs.sort();
        let unknown: Vec<Rec> = recs
            .iter()
            .filter(|r| !known.contains_key(*r))
            .cloned()
            .collect();
        let rows = load_rows(tx, &unknown).await?;
        let mut nodes = Vec::new();
        let mut leaving = Vec::new();
        for r in &recs {
            if let Some(f) = known.remove(r) {
                nodes.push(f);
                continue;
            }
            match rows.get(r) {
                Some(row) if !row.deleted => nodes.push(Features::of(row)),
                _ => leaving.push(r.clone()),
            }
        }
        let (links, reviews): (Vec<PairRow>, Vec<PairRow>) = pairs
            .into_values()
            .partition(|p| p.decision == Decision::Link);
        // Persons of review partners outside the set.
        let mut partners: Vec<Rec> = reviews
            .iter()
            .flat_map(|p| [&p.a, &p.b])
            .filter(|r| !placed.contains(*r))
            .cloned()
            .collect();
        partners.sort();
        partners.dedup();
        if !partners.is_empty() {
            let (s, i) = split(&partners);
            let members: Vec<(String, String, i64, bool)> = sqlx::query_as(
                "SELECT m.source, m.source_id, m.person_id, p.locked FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
                 JOIN person_memberships m ON m.source = f.s AND m.source_id = f.i AND m.valid_to IS NULL
                 JOIN persons p USING (person_id)",
            )
            .bind(&s)
            .bind(&i)
            .fetch_all(&mut *tx)
            .await?;
            for (s, i, p, l) in members {
                person_of.insert((s, i), p);
                if l {
                    locked.insert(p);
                }
            }
        }
        let mut decisions: Vec<(i64, (String, Rec, Rec))> = decisions.into_iter().collect();
        decisions.sort_by_key(|d| d.0);
        let mut open_items: Vec<(i64, Rec, Rec)> = open_items
            .into_iter()
            .map(|(id, (a, b))| (id, a, b))
            .collect();
        open_items.sort_by_key(|o| o.0);
        Ok(Component {
            nodes,
            leaving,
            links,
            reviews,
            decisions: decisions.into_iter().map(|(_, d)| d).collect(),
            person_of,
            locked,
            open_items,
        })
    }

    /// The live records of the component (each gets a person).
    pub(super) fn records(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .map(|f| (f.source.as_str(), f.source_id.as_str()))
    }

    /// Everything: every live record (sorted), every pair.
    pub(super) async fn load_all(
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
    pub(super) async fn apply(
        self,
        tx: &mut PgConnection,
        setup: &Setup,
        phases: &mut Phases,
    ) -> sqlx::Result<Applied> {
        let actor = setup.actor.as_str();
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
        // Each node's current person, looked up once.
        let old: Vec<Option<i64>> = self
            .nodes
            .iter()
            .map(|f| {
                self.person_of
                    .get(&(f.source.clone(), f.source_id.clone()))
                    .copied()
            })
            .collect();

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
        for (n, p) in old.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| self.locked.contains(p)) {
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
            guards: setup.guards(),
            edges,
            keep_apart: &keep_apart,
        });

        phases.mark("clustered");

        // Person ids: a locked person keeps its cluster; then the largest
        // overlap between a new cluster and an old person wins (ties: the
        // older person); every other cluster is a new person.
        let mut clusters: HashMap<usize, Vec<usize>> = HashMap::new();
        for (n, &c) in out.cluster_of.iter().enumerate() {
            clusters.entry(c).or_default().push(n);
        }
        let old_of = |n: usize| old[n];
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

        phases.mark("person ids assigned");

        // Membership changes. A new membership is also the record's
        // `assigned` or `moved` row of the audit log: it carries the reason
        // (`write::Placed`), so a new record's whole trail is its
        // membership. A person created here has no audit row of its own
        // either: the memberships it receives say so (`new_person`).
        let mut audit = Audit::default();
        let created: HashSet<i64> = fresh.iter().map(|c| person_for[c]).collect();
        let mut close: Vec<Rec> = Vec::new();
        let mut open: Vec<Placed> = Vec::new();
        for (n, f) in self.nodes.iter().enumerate() {
            let new = person_for[&out.cluster_of[n]];
            let old = old_of(n);
            if old == Some(new) {
                continue;
            }
            let rec = (f.source.clone(), f.source_id.clone());
            if old.is_some() {
                close.push(rec.clone());
            }
            let mut via = self.reason(&out, n, &adjacent[n], &link_evidence);
            via.new_person = created.contains(&new);
            open.push(Placed {
                rec,
                person: new,
                old,
                via,
            });
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
        write::memberships(tx, actor, &open).await?;
        // Persons left without records are retired, never deleted.
        let old_persons: HashSet<i64> = self.person_of.values().copied().collect();
        let kept: HashSet<i64> = person_for.values().copied().collect();
        let mut retired: Vec<i64> = old_persons
            .iter()
            .filter(|p| !kept.contains(p))
            .copied()
            .collect();
        // Review partners outside the set are not ours to retire.
        let in_set: HashSet<i64> = old
            .iter()
            .flatten()
            .copied()
            .chain(
                self.leaving
                    .iter()
                    .filter_map(|r| self.person_of.get(r).copied()),
            )
            .collect();
        retired.retain(|p| in_set.contains(p));
        retired.sort();
        if !retired.is_empty() {
            // Set-based: the persons that still have a current membership
            // are found once for the whole list. Checked per person (a
            // `NOT EXISTS`), the planner, with the statistics of a freshly
            // written table, intersected `person_memberships_current` (every
            // current row) for each person: minutes for a mass delete.
            sqlx::query(
                "WITH still AS MATERIALIZED (
                     SELECT DISTINCT person_id FROM person_memberships
                     WHERE person_id = ANY($1) AND valid_to IS NULL)
                 UPDATE persons SET retired_at = now(), updated_at = now()
                 WHERE person_id = ANY($1) AND person_id NOT IN (SELECT person_id FROM still)",
            )
            .bind(&retired)
            .execute(&mut *tx)
            .await?;
            for &p in &retired {
                audit.push("person_retired", Some(p), None, None, None, Value::Null);
            }
            applied.persons_retired = retired.len() as u64;
        }
        // Persons that gained records (new ones are current already).
        let mut touched: Vec<i64> = open
            .iter()
            .map(|p| p.person)
            .filter(|p| !created.contains(p))
            .collect();
        touched.sort();
        touched.dedup();
        if !touched.is_empty() {
            sqlx::query("UPDATE persons SET updated_at = now(), retired_at = NULL WHERE person_id = ANY($1)")
                .bind(&touched)
                .execute(&mut *tx)
                .await?;
        }

        phases.mark("memberships and persons written");

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
        let mut items = Vec::with_capacity(new_items.len());
        for ((a, b), (reason, score, evidence)) in &new_items {
            audit.push(
                "review_opened",
                None,
                Some(a),
                None,
                Some(b),
                serde_json::json!({"reason": reason}),
            );
            items.push(NewItem {
                a,
                b,
                reason,
                score: *score,
                evidence,
            });
        }
        write::review_items(tx, &items).await?;
        applied.reviews_opened = new_items.len() as u64;
        phases.mark("review items written");
        audit.write(tx, actor).await?;
        phases.mark("audit written");
        Ok(applied)
    }

    /// Why node `n` is where it is: the strongest link to its cluster, by
    /// rule (no values).
    fn reason<'a>(
        &self,
        out: &cluster::Output,
        n: usize,
        adjacent: &[(usize, usize)],
        links: &HashMap<(usize, usize), &'a PairRow>,
    ) -> Via<'a> {
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
        let (rule, score) = match best {
            Some(p) => (p.rule.as_str(), Some(p.score)),
            None if out.locked[n] => ("locked", None),
            None => ("operator_or_alone", None),
        };
        Via {
            rule,
            score,
            new_person: false,
        }
    }
}

/// The current person of each of `recs` that has one, with that person's
/// other current members: (record, person, locked).
async fn members_of_persons(
    tx: &mut PgConnection,
    recs: &[Rec],
) -> sqlx::Result<Vec<(Rec, i64, bool)>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT m2.source, m2.source_id, m2.person_id, p.locked FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
         JOIN person_memberships m1 ON m1.source = f.s AND m1.source_id = f.i AND m1.valid_to IS NULL
         JOIN persons p ON p.person_id = m1.person_id
         JOIN person_memberships m2 ON m2.person_id = m1.person_id AND m2.valid_to IS NULL",
    )
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, i, p, l)| ((s, i), p, l))
        .collect())
}

fn rule_order(rule: &str) -> u8 {
    match rule {
        "document" => 0,
        "snils" => 1,
        "oms" => 2,
        _ => 3,
    }
}
