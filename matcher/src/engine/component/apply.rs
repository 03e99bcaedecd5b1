//! Applying a component: the graph of its links and decisions clustered,
//! person ids assigned (stable: a person keeps the records it had where it
//! can), and the difference written — memberships, persons, person
//! events, review items and the audit rows.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgConnection;

use super::super::events;
use super::super::phases::Phases;
use super::super::setup::Setup;
use super::super::types::{ordered, split, Applied, Evidence, PairRow, Rec};
use super::super::write::{self, Audit, NewItem, Placed, Via};
use super::Component;
use crate::cluster::{self, Edge, EdgeKind};
use crate::rules::Decision;

/// The node number of each live record of a component and its person
/// before this application.
struct Nodes<'c> {
    number: HashMap<(&'c str, &'c str), usize>,
    /// Each node's current person, looked up once.
    old: Vec<Option<i64>>,
}

impl Nodes<'_> {
    fn of(&self, r: &Rec) -> Option<usize> {
        self.number.get(&(r.0.as_str(), r.1.as_str())).copied()
    }
}

/// What is clustered: edges and the pairs kept apart, with what the
/// writing steps need to know of them.
struct Graph<'c> {
    edges: Vec<Edge>,
    keep_apart: HashSet<(usize, usize)>,
    /// Pairs an operator decided (their stored decision does not count).
    decided: HashSet<(Rec, Rec)>,
    links: Links<'c>,
}

/// The rule links used, by node pair (smaller node first).
struct Links<'c> {
    evidence: HashMap<(usize, usize), &'c PairRow>,
    /// Each node's links.
    adjacent: Vec<Vec<(usize, usize)>>,
}

/// The component clustered and given person ids: what the writing steps
/// share.
struct Placement<'c> {
    nodes: Nodes<'c>,
    out: cluster::Output,
    /// The person of each cluster (by its representative).
    person_for: HashMap<usize, i64>,
    /// Persons created by this application.
    created: HashSet<i64>,
    decided: HashSet<(Rec, Rec)>,
    links: Links<'c>,
}

impl Placement<'_> {
    /// The person of node `n` after this application.
    fn person(&self, n: usize) -> i64 {
        self.person_for[&self.out.cluster_of[n]]
    }
}

/// A review item the component should have open.
struct Wanted {
    reason: String,
    score: f32,
    evidence: Evidence,
}

impl Component {
    /// Clusters the component, assigns person ids and writes the difference.
    pub(in crate::engine) async fn apply(
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
        let nodes = self.numbered();
        let Graph {
            edges,
            keep_apart,
            decided,
            links,
        } = self.graph(&nodes);
        tracing::debug!(nodes = self.nodes.len(), "clustering");
        let out = cluster::cluster(cluster::Input {
            nodes: &self.nodes,
            guards: setup.guards(),
            edges,
            keep_apart: &keep_apart,
        });
        phases.mark("clustered");
        let (person_for, created) = self.assign_persons(tx, &nodes, &out).await?;
        applied.persons_created = created.len() as u64;
        phases.mark("person ids assigned");
        let placement = Placement {
            nodes,
            out,
            person_for,
            created,
            decided,
            links,
        };
        let mut audit = Audit::default();
        self.write_persons(tx, actor, &placement, &mut audit, &mut applied)
            .await?;
        phases.mark("memberships and persons written");
        self.write_review_items(tx, &placement, &mut audit, &mut applied)
            .await?;
        phases.mark("review items written");
        audit.write(tx, actor).await?;
        phases.mark("audit written");
        Ok(applied)
    }

    fn numbered(&self) -> Nodes<'_> {
        let number = self
            .nodes
            .iter()
            .enumerate()
            .map(|(n, f)| ((f.source.as_str(), f.source_id.as_str()), n))
            .collect();
        let old = self
            .nodes
            .iter()
            .map(|f| {
                self.person_of
                    .get(&(f.source.clone(), f.source_id.clone()))
                    .copied()
            })
            .collect();
        Nodes { number, old }
    }

    /// The edges to cluster, in order: operator links, the members of
    /// locked persons, rule links that no operator decided.
    fn graph(&self, nodes: &Nodes) -> Graph<'_> {
        let mut graph = Graph {
            edges: Vec::new(),
            keep_apart: HashSet::new(),
            decided: HashSet::new(),
            links: Links {
                evidence: HashMap::new(),
                adjacent: vec![Vec::new(); self.nodes.len()],
            },
        };
        for d in &self.decisions {
            graph.decided.insert(ordered(&d.a, &d.b));
            let (Some(x), Some(y)) = (nodes.of(&d.a), nodes.of(&d.b)) else {
                continue;
            };
            if d.is_link() {
                graph
                    .edges
                    .push(edge(x, y, EdgeKind::Operator, "operator", 0.0));
            } else {
                graph.keep_apart.insert((x.min(y), x.max(y)));
            }
        }
        // Members of a locked person stay together.
        let mut first_of_locked: HashMap<i64, usize> = HashMap::new();
        for (n, p) in nodes.old.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| self.locked.contains(p)) {
                // A lone member still marks its cluster locked.
                let first = *first_of_locked.entry(*p).or_insert(n);
                graph
                    .edges
                    .push(edge(first, n, EdgeKind::Locked, "locked", 0.0));
            }
        }
        for p in &self.links {
            let (Some(x), Some(y)) = (nodes.of(&p.a), nodes.of(&p.b)) else {
                continue;
            };
            if graph.decided.contains(&ordered(&p.a, &p.b)) {
                continue;
            }
            let key = (x.min(y), x.max(y));
            graph.links.evidence.insert(key, p);
            graph.links.adjacent[x].push(key);
            graph.links.adjacent[y].push(key);
            graph
                .edges
                .push(edge(x, y, EdgeKind::Rule, &p.rule, p.score));
        }
        graph
    }

    /// Person ids: a locked person keeps its cluster; then the largest
    /// overlap between a new cluster and an old person wins (ties: the
    /// older person); every other cluster is a new person, created here.
    /// Gives the person of each cluster and the persons created.
    async fn assign_persons(
        &self,
        tx: &mut PgConnection,
        nodes: &Nodes<'_>,
        out: &cluster::Output,
    ) -> sqlx::Result<(HashMap<usize, i64>, HashSet<i64>)> {
        let mut person_for = kept_persons(&out.cluster_of, &nodes.old, &self.locked);
        let mut fresh: Vec<usize> = out
            .cluster_of
            .iter()
            .copied()
            .filter(|c| !person_for.contains_key(c))
            .collect();
        fresh.sort();
        fresh.dedup();
        let mut created = HashSet::with_capacity(fresh.len());
        if !fresh.is_empty() {
            let ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO persons (locked) SELECT false FROM generate_series(1, $1::int) RETURNING person_id",
            )
            .bind(fresh.len() as i32)
            .fetch_all(&mut *tx)
            .await?;
            for (c, id) in fresh.iter().zip(ids) {
                person_for.insert(*c, id);
                created.insert(id);
            }
        }
        Ok((person_for, created))
    }

    /// Membership changes, and the persons they leave without records
    /// (retired, never deleted) or give records. A new membership is also
    /// the record's `assigned` or `moved` row of the audit log: it carries
    /// the reason (`write::Placed`), so a new record's whole trail is its
    /// membership. A person created here has no audit row of its own
    /// either: the memberships it receives say so (`new_person`).
    async fn write_persons(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        placement: &Placement<'_>,
        audit: &mut Audit,
        applied: &mut Applied,
    ) -> sqlx::Result<()> {
        let (mut close, open) = self.moves(placement);
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
        close_memberships(tx, &close).await?;
        write::memberships(tx, actor, &open).await?;
        let retired = self.retired(placement);
        if !retired.is_empty() {
            retire(tx, &retired).await?;
            for &p in &retired {
                audit.push("person_retired", Some(p), None, None, None, Value::Null);
            }
            applied.persons_retired = retired.len() as u64;
        }
        // Persons that gained records (new ones are current already).
        let mut touched: Vec<i64> = open
            .iter()
            .map(|p| p.person)
            .filter(|p| !placement.created.contains(p))
            .collect();
        touched.sort();
        touched.dedup();
        if !touched.is_empty() {
            sqlx::query("UPDATE persons SET updated_at = now(), retired_at = NULL WHERE person_id = ANY($1)")
                .bind(&touched)
                .execute(&mut *tx)
                .await?;
        }
        // Person events, in this transaction.
        let kept: HashSet<i64> = placement.person_for.values().copied().collect();
        let changed = events::of_application(
            &open,
            &self.leaving,
            &self.person_of,
            &placement.created,
            &kept,
        );
        events::write(tx, &changed).await
    }

    /// The live records whose person changes: the memberships to close
    /// (those that had one) and the new ones, with their reasons.
    fn moves<'c>(&self, placement: &'c Placement<'c>) -> (Vec<Rec>, Vec<Placed<'c>>) {
        let mut close: Vec<Rec> = Vec::new();
        let mut open: Vec<Placed> = Vec::new();
        for (n, f) in self.nodes.iter().enumerate() {
            let new = placement.person(n);
            let old = placement.nodes.old[n];
            if old == Some(new) {
                continue;
            }
            let rec = (f.source.clone(), f.source_id.clone());
            if old.is_some() {
                close.push(rec.clone());
            }
            let mut via = reason(
                &placement.out,
                n,
                &placement.links.adjacent[n],
                &placement.links.evidence,
            );
            via.new_person = placement.created.contains(&new);
            open.push(Placed {
                rec,
                person: new,
                old,
                via,
            });
        }
        (close, open)
    }

    /// The persons of the component left without records, sorted (review
    /// partners outside the set are not its to retire).
    fn retired(&self, placement: &Placement<'_>) -> Vec<i64> {
        let kept: HashSet<i64> = placement.person_for.values().copied().collect();
        let in_set: HashSet<i64> = placement
            .nodes
            .old
            .iter()
            .flatten()
            .copied()
            .chain(
                self.leaving
                    .iter()
                    .filter_map(|r| self.person_of.get(r).copied()),
            )
            .collect();
        let old_persons: HashSet<i64> = self.person_of.values().copied().collect();
        let mut retired: Vec<i64> = old_persons
            .into_iter()
            .filter(|p| !kept.contains(p) && in_set.contains(p))
            .collect();
        retired.sort();
        retired
    }

    /// Review items: the open ones no longer wanted closed (obsolete), the
    /// wanted ones not open yet opened.
    async fn write_review_items(
        &self,
        tx: &mut PgConnection,
        placement: &Placement<'_>,
        audit: &mut Audit,
        applied: &mut Applied,
    ) -> sqlx::Result<()> {
        let wanted = self.wanted_items(placement);
        let mut existing: HashSet<(Rec, Rec)> = HashSet::new();
        let mut obsolete: Vec<i64> = Vec::new();
        for item in &self.open_items {
            let pair = ordered(&item.a, &item.b);
            if wanted.contains_key(&pair) {
                existing.insert(pair);
            } else {
                obsolete.push(item.id);
                audit.push(
                    "review_closed",
                    None,
                    Some(&item.a),
                    None,
                    Some(&item.b),
                    serde_json::json!({"item": item.id, "why": "obsolete"}),
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
        let mut new_items: Vec<(&(Rec, Rec), &Wanted)> = wanted
            .iter()
            .filter(|(pair, _)| !existing.contains(*pair))
            .collect();
        new_items.sort_by(|x, y| x.0.cmp(y.0));
        let mut items = Vec::with_capacity(new_items.len());
        for ((a, b), w) in new_items {
            audit.push(
                "review_opened",
                None,
                Some(a),
                None,
                Some(b),
                serde_json::json!({"reason": w.reason}),
            );
            items.push(NewItem {
                a,
                b,
                reason: &w.reason,
                score: w.score,
                evidence: &w.evidence,
            });
        }
        write::review_items(tx, &items).await?;
        applied.reviews_opened = items.len() as u64;
        Ok(())
    }

    /// The person of `r` after this application: its node's, or for a
    /// record outside the component its current one.
    fn final_person(&self, placement: &Placement<'_>, r: &Rec) -> Option<i64> {
        match placement.nodes.of(r) {
            Some(n) => Some(placement.person(n)),
            None => self.person_of.get(r).copied(),
        }
    }

    /// The review items the component should have open: one per pair of
    /// persons (see [`Component::one_per_person_pair`]) out of the pairs
    /// that ask whether two persons are one.
    fn wanted_items(&self, placement: &Placement<'_>) -> HashMap<(Rec, Rec), Wanted> {
        self.one_per_person_pair(placement, self.pair_questions(placement))
    }

    /// Ambiguous and conflicting pairs whose records are not in one person
    /// and that no operator decided, plus the links the clustering refused.
    fn pair_questions(&self, placement: &Placement<'_>) -> HashMap<(Rec, Rec), Wanted> {
        let final_person = |r: &Rec| self.final_person(placement, r);
        let leaving: HashSet<&Rec> = self.leaving.iter().collect();
        let live_or_outside = |r: &Rec| placement.nodes.of(r).is_some() || !leaving.contains(r);
        let mut wanted: HashMap<(Rec, Rec), Wanted> = HashMap::new();
        for p in &self.reviews {
            let pair = ordered(&p.a, &p.b);
            if placement.decided.contains(&pair) || !live_or_outside(&p.a) || !live_or_outside(&p.b)
            {
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
            wanted.insert(
                pair,
                Wanted {
                    reason,
                    score: p.score,
                    evidence: p.evidence.clone(),
                },
            );
        }
        for r in &placement.out.refused {
            let (a, b) = (&self.nodes[r.a], &self.nodes[r.b]);
            let pair = ordered(
                &(a.source.clone(), a.source_id.clone()),
                &(b.source.clone(), b.source_id.clone()),
            );
            let evidence = placement
                .links
                .evidence
                .get(&(r.a.min(r.b), r.a.max(r.b)))
                .map(|p| p.evidence.clone())
                .unwrap_or_default();
            wanted.insert(
                pair,
                Wanted {
                    reason: r.reason.to_string(),
                    score: r.score,
                    evidence,
                },
            );
        }
        wanted
    }

    /// A steward answers "are these two persons one?" once, not once per
    /// pair of their records: of the questions between two persons only the
    /// strongest pair is an item (highest score, then the smaller pair, so
    /// that every path picks the same one), and none once an operator has
    /// kept two of their records apart (the clustering keeps the two
    /// persons apart from then on). A pair with an end that has no person
    /// stays an item of its own.
    fn one_per_person_pair(
        &self,
        placement: &Placement<'_>,
        questions: HashMap<(Rec, Rec), Wanted>,
    ) -> HashMap<(Rec, Rec), Wanted> {
        let persons_of = |a: &Rec, b: &Rec| -> Option<(i64, i64)> {
            let (x, y) = (
                self.final_person(placement, a)?,
                self.final_person(placement, b)?,
            );
            Some((x.min(y), x.max(y)))
        };
        let kept_apart: HashSet<(i64, i64)> = self
            .decisions
            .iter()
            .filter(|d| !d.is_link())
            .filter_map(|d| persons_of(&d.a, &d.b))
            .collect();
        let mut items = HashMap::new();
        let mut strongest: HashMap<(i64, i64), ((Rec, Rec), Wanted)> = HashMap::new();
        for (pair, wanted) in questions {
            let Some(persons) = persons_of(&pair.0, &pair.1) else {
                items.insert(pair, wanted);
                continue;
            };
            if kept_apart.contains(&persons) {
                continue;
            }
            let weaker =
                |(held, w): &((Rec, Rec), Wanted)| stronger((&pair, wanted.score), (held, w.score));
            if strongest.get(&persons).is_none_or(weaker) {
                strongest.insert(persons, (pair, wanted));
            }
        }
        items.extend(strongest.into_values());
        items
    }
}

/// Whether question `x` (a pair and its score) is stronger than `y`: a
/// higher score, then the smaller pair.
fn stronger(x: (&(Rec, Rec), f32), y: (&(Rec, Rec), f32)) -> bool {
    x.1.total_cmp(&y.1).then_with(|| y.0.cmp(x.0)).is_gt()
}

fn edge(a: usize, b: usize, kind: EdgeKind, rule: &str, score: f32) -> Edge {
    Edge {
        a,
        b,
        kind,
        rule: rule.into(),
        score,
    }
}

/// The old persons that keep a cluster (by its representative): a locked
/// person first, then the largest overlap between a cluster and an old
/// person (ties: the older person), each person and each cluster once.
fn kept_persons(
    cluster_of: &[usize],
    old: &[Option<i64>],
    locked: &HashSet<i64>,
) -> HashMap<usize, i64> {
    let mut clusters: HashMap<usize, Vec<usize>> = HashMap::new();
    for (n, &c) in cluster_of.iter().enumerate() {
        clusters.entry(c).or_default().push(n);
    }
    // (not locked, -count, person, cluster)
    let mut overlap: Vec<(bool, usize, i64, usize)> = Vec::new();
    for (&c, members) in &clusters {
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for &n in members {
            if let Some(p) = old[n] {
                *counts.entry(p).or_default() += 1;
            }
        }
        for (p, k) in counts {
            overlap.push((!locked.contains(&p), usize::MAX - k, p, c));
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
    person_for
}

/// Closes the current memberships of `recs`.
async fn close_memberships(tx: &mut PgConnection, recs: &[Rec]) -> sqlx::Result<()> {
    for chunk in recs.chunks(50_000) {
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
    Ok(())
}

/// Retires those of `persons` that have no current membership left.
///
/// Set-based: the persons that still have a current membership are found
/// once for the whole list. Checked per person (a `NOT EXISTS`), the
/// planner, with the statistics of a freshly written table, intersected
/// `person_memberships_current` (every current row) for each person:
/// minutes for a mass delete.
async fn retire(tx: &mut PgConnection, persons: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "WITH still AS MATERIALIZED (
             SELECT DISTINCT person_id FROM person_memberships
             WHERE person_id = ANY($1) AND valid_to IS NULL)
         UPDATE persons SET retired_at = now(), updated_at = now()
         WHERE person_id = ANY($1) AND person_id NOT IN (SELECT person_id FROM still)",
    )
    .bind(persons)
    .execute(tx)
    .await
    .map(drop)
}

/// Why node `n` is where it is: the strongest link to its cluster, by
/// rule (no values).
fn reason<'a>(
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

fn rule_order(rule: &str) -> u8 {
    match rule {
        "document" => 0,
        "snils" => 1,
        "oms" => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::kept_persons;

    #[test]
    fn the_largest_overlap_keeps_its_person() {
        // Nodes 0-2 were person 10, node 3 person 11; now 0 and 1 are one
        // cluster, 2 and 3 another.
        let kept = kept_persons(
            &[0, 0, 2, 2],
            &[Some(10), Some(10), Some(10), Some(11)],
            &HashSet::new(),
        );
        assert_eq!(kept, HashMap::from([(0, 10), (2, 11)]));
    }

    #[test]
    fn on_a_tie_the_older_person_stays() {
        let kept = kept_persons(&[0, 0], &[Some(12), Some(11)], &HashSet::new());
        assert_eq!(kept, HashMap::from([(0, 11)]));
    }

    #[test]
    fn a_locked_person_keeps_its_cluster_first() {
        let kept = kept_persons(
            &[0, 0, 0],
            &[Some(11), Some(11), Some(12)],
            &HashSet::from([12]),
        );
        assert_eq!(kept, HashMap::from([(0, 12)]));
    }

    #[test]
    fn a_person_goes_to_one_cluster_and_new_records_to_none() {
        // Person 10 split in two equal halves; node 4 is new.
        let kept = kept_persons(
            &[0, 0, 2, 2, 4],
            &[Some(10), Some(10), Some(10), Some(10), None],
            &HashSet::new(),
        );
        assert_eq!(kept, HashMap::from([(0, 10)]));
    }
}
