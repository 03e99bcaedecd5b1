//! From pairwise decisions to persons: constrained, order-independent
//! clustering.
//!
//! Links are applied one by one in a fixed order — operator links, then the
//! members of locked persons, then rule links by strength (document, SNILS,
//! OMS, then score, highest first; ties by record keys) — each uniting two
//! clusters only if the union holds no conflict. That is the guard against
//! chaining: A~B and B~C never pull C into A's person when C contradicts A
//! (two different SNILS, two documents of one type that are not a passport
//! replacement, clearly different birth dates, an operator's "keep apart");
//! the refused link becomes a review item instead. The result depends only
//! on the set of links and records, never on the order of arrival, which is
//! why incremental matching and a full re-match agree.

use crate::features::Features;
use crate::rules::{self, Agreement};

/// A link between two nodes (indices into the node list).
#[derive(Debug, Clone)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    pub kind: EdgeKind,
    pub rule: String,
    pub score: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeKind {
    /// An operator said these two are one person: always applied.
    Operator = 0,
    /// Members of a locked person stay together.
    Locked = 1,
    /// A rule linked them: applied when the union holds no conflict.
    Rule = 2,
}

/// A link the clustering refused, with why (a review item).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub a: usize,
    pub b: usize,
    pub reason: &'static str,
    pub rule: String,
    pub score: f32,
}

/// Which hard conflicts keep two clusters apart: those of the scoring in
/// use, so that a pair the scoring links is never refused for a conflict
/// the scoring does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guards {
    /// [`pair_conflict`] (the fixed rules).
    Rules,
    /// The model's guards ([`crate::model::params::guard`]).
    Model,
}

pub struct Input<'a> {
    /// Sorted by (source, source_id): indices follow that order.
    pub nodes: &'a [Features],
    pub guards: Guards,
    pub edges: Vec<Edge>,
    /// Pairs (a < b) an operator keeps apart.
    pub keep_apart: &'a std::collections::HashSet<(usize, usize)>,
}

pub struct Output {
    /// For each node, its cluster's representative (smallest node index).
    pub cluster_of: Vec<usize>,
    /// Whether the node's cluster holds a locked person's members.
    pub locked: Vec<bool>,
    pub refused: Vec<Refused>,
}

fn rule_rank(rule: &str) -> u8 {
    match rule {
        "document" => 0,
        "snils" => 1,
        "oms" => 2,
        _ => 3,
    }
}

pub fn cluster(mut input: Input<'_>) -> Output {
    let mut forest = Forest::new(input.nodes.len());
    let mut refused = Vec::new();
    for e in ordered(std::mem::take(&mut input.edges)) {
        let (ra, rb) = (forest.find(e.a), forest.find(e.b));
        if e.kind == EdgeKind::Locked {
            forest.locked[ra] = true;
            forest.locked[rb] = true;
        }
        if ra == rb {
            continue;
        }
        if e.kind == EdgeKind::Rule {
            match forest.refusal(&input, &e, ra, rb) {
                Verdict::Unite => {}
                Verdict::Refuse(r) => {
                    refused.push(r);
                    continue;
                }
                Verdict::KeepApart => continue,
            }
        }
        forest.unite(ra, rb, e.kind == EdgeKind::Locked);
    }
    forest.output(refused)
}

/// The edges in the order they are applied: operator links, locked
/// persons' members, then rule links by strength (document, SNILS, OMS,
/// score high to low; ties by record keys), each pair once per kind,
/// smaller node first.
fn ordered(mut edges: Vec<Edge>) -> Vec<Edge> {
    for e in &mut edges {
        if e.a > e.b {
            std::mem::swap(&mut e.a, &mut e.b);
        }
    }
    edges.sort_by(|x, y| {
        (x.kind, rule_rank(&x.rule))
            .cmp(&(y.kind, rule_rank(&y.rule)))
            .then(y.score.total_cmp(&x.score))
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    edges.dedup_by(|x, y| x.a == y.a && x.b == y.b && x.kind == y.kind);
    edges
}

/// What becomes of a rule link between two clusters.
enum Verdict {
    Unite,
    /// Refused: a review item.
    Refuse(Refused),
    /// An operator keeps the clusters apart: no review item.
    KeepApart,
}

/// The clusters so far: union–find with each root's members and whether it
/// holds a locked person's members.
struct Forest {
    parent: Vec<usize>,
    members: Vec<Vec<usize>>,
    locked: Vec<bool>,
}

impl Forest {
    fn new(n: usize) -> Forest {
        Forest {
            parent: (0..n).collect(),
            members: (0..n).map(|i| vec![i]).collect(),
            locked: vec![false; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Whether rule link `e` may unite the clusters of roots `ra` and `rb`.
    fn refusal(&self, input: &Input<'_>, e: &Edge, ra: usize, rb: usize) -> Verdict {
        let refuse = |reason| {
            Verdict::Refuse(Refused {
                a: e.a,
                b: e.b,
                reason,
                rule: e.rule.clone(),
                score: e.score,
            })
        };
        if self.locked[ra] || self.locked[rb] {
            return refuse("locked_person");
        }
        match union_conflict(input, e, &self.members[ra], &self.members[rb]) {
            None => Verdict::Unite,
            Some("keep_apart") => Verdict::KeepApart,
            Some(reason) => refuse(reason),
        }
    }

    /// Unites two roots: the smaller index is the representative.
    fn unite(&mut self, ra: usize, rb: usize, locked: bool) {
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[gone] = keep;
        let moved = std::mem::take(&mut self.members[gone]);
        self.members[keep].extend(moved);
        self.locked[keep] = self.locked[keep] || self.locked[gone] || locked;
    }

    fn output(mut self, refused: Vec<Refused>) -> Output {
        let n = self.parent.len();
        let cluster_of: Vec<usize> = (0..n).map(|i| self.find(i)).collect();
        let locked = (0..n).map(|i| self.locked[cluster_of[i]]).collect();
        Output {
            cluster_of,
            locked,
            refused,
        }
    }
}

/// Why the union of two clusters by link `e` would be wrong, if it would.
/// Under the model a birth-date conflict is looked at again, without the
/// birth dates, when the union holds no new birth date or `e` brings in a
/// record whose birth date was typed wrong (worked out once, at the first
/// such conflict: most unions have none).
fn union_conflict(input: &Input<'_>, e: &Edge, x: &[usize], y: &[usize]) -> Option<&'static str> {
    let nodes = input.nodes;
    let mut dates_waived = None;
    for &i in x {
        for &j in y {
            let key = if i < j { (i, j) } else { (j, i) };
            if input.keep_apart.contains(&key) {
                return Some("keep_apart");
            }
            let conflict = match input.guards {
                Guards::Rules => pair_conflict(&nodes[i], &nodes[j]),
                Guards::Model => match model_conflict(&nodes[i], &nodes[j], true) {
                    Some("chain_birth_date_differs")
                        if *dates_waived.get_or_insert_with(|| {
                            birth_dates_held(nodes, x, y) || mistyped_birth_date(nodes, e, x, y)
                        }) =>
                    {
                        model_conflict(&nodes[i], &nodes[j], false)
                    }
                    other => other,
                },
            };
            if let Some(reason) = conflict {
                return Some(reason);
            }
        }
    }
    None
}

/// Whether every birth date of one cluster is close (equal, swapped or a
/// typo apart) to a birth date of the other. Their union then holds no
/// birth date that one of them does not hold already: a record whose birth
/// date was typed wrong was linked to that cluster on an identifier and its
/// names (the model's guard lets such a pair be weighed), and another
/// record of the same person that carries the right birth date, or the
/// wrong one, contradicts nothing new.
fn birth_dates_held(nodes: &[Features], x: &[usize], y: &[usize]) -> bool {
    let dates = |c: &[usize]| -> Vec<chrono::NaiveDate> {
        c.iter().filter_map(|&n| nodes[n].birth).collect()
    };
    let (dx, dy) = (dates(x), dates(y));
    let differs = crate::model::Field::BirthDate.differs();
    let close = |d: &chrono::NaiveDate, e: &chrono::NaiveDate| {
        crate::model::compare::birth_date(Some(*d), Some(*e)) != Some(differs)
    };
    let within = |a: &[chrono::NaiveDate], b: &[chrono::NaiveDate]| {
        a.iter().all(|d| b.iter().any(|e| close(d, e)))
    };
    within(&dy, &dx) || within(&dx, &dy)
}

/// Whether link `e` brings one record alone into a cluster on an identifier
/// they share and its names, with a birth date unlike its partner's: the
/// model weighed that birth date as typed wrong (see
/// `model::params::same_named_holder`), and the cluster's other records
/// contradict it no more than the partner does.
fn mistyped_birth_date(nodes: &[Features], e: &Edge, x: &[usize], y: &[usize]) -> bool {
    let alone = |c: &[usize]| c.len() == 1 && (c[0] == e.a || c[0] == e.b);
    if !alone(x) && !alone(y) {
        return false;
    }
    let levels = crate::model::compare::compare(&nodes[e.a], &nodes[e.b]);
    levels[crate::model::Field::BirthDate.index()] == Some(crate::model::Field::BirthDate.differs())
        && crate::model::params::same_named_holder(&levels)
}

/// The model's guards between two records that no person may hold; their
/// birth dates left out unless `with_birth_dates`.
pub fn model_conflict(a: &Features, b: &Features, with_birth_dates: bool) -> Option<&'static str> {
    let mut levels = crate::model::compare::compare(a, b);
    if !with_birth_dates {
        levels[crate::model::Field::BirthDate.index()] = None;
    }
    Some(match crate::model::params::guard(a, b, &levels)? {
        "snils_differs" => "chain_snils_differs",
        "birth_date_differs" => "chain_birth_date_differs",
        "passport_differs" => "chain_passport_differs",
        _ => "chain_twins",
    })
}

/// The hard conflicts between two records that no person may hold.
pub fn pair_conflict(a: &Features, b: &Features) -> Option<&'static str> {
    if let (Some(x), Some(y)) = (&a.snils, &b.snils) {
        if x != y {
            return Some("chain_snils_differs");
        }
    }
    if rules::compare_birth(a.birth, b.birth) == Agreement::Differs {
        return Some("chain_birth_date_differs");
    }
    for x in &a.docs {
        for y in b
            .docs
            .iter()
            .filter(|y| y.doc_type == x.doc_type && *y != x)
        {
            if a.docs.contains(y) || b.docs.contains(x) {
                continue;
            }
            let replaced = x.doc_type == proto::DocumentType::PASSPORT.0
                && rules::passports_agree(x, y, a.birth, b.birth, rules::surname_changed(a, b));
            if !replaced {
                return Some("chain_document_differs");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
