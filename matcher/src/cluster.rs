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

pub fn cluster(input: Input<'_>) -> Output {
    let n = input.nodes.len();
    let mut edges = input.edges;
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

    let mut parent: Vec<usize> = (0..n).collect();
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut locked = vec![false; n];
    let mut refused = Vec::new();

    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }

    for e in edges {
        let ra = find(&mut parent, e.a);
        let rb = find(&mut parent, e.b);
        if e.kind == EdgeKind::Locked {
            locked[ra] = true;
            locked[rb] = true;
        }
        if ra == rb {
            continue;
        }
        if e.kind == EdgeKind::Rule {
            if locked[ra] || locked[rb] {
                refused.push(Refused {
                    a: e.a,
                    b: e.b,
                    reason: "locked_person",
                    rule: e.rule,
                    score: e.score,
                });
                continue;
            }
            if let Some(reason) = union_conflict(
                input.nodes,
                input.keep_apart,
                input.guards,
                &members[ra],
                &members[rb],
            ) {
                if reason != "keep_apart" {
                    refused.push(Refused {
                        a: e.a,
                        b: e.b,
                        reason,
                        rule: e.rule,
                        score: e.score,
                    });
                }
                continue;
            }
        }
        // Union: the smaller index is the representative.
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[gone] = keep;
        let moved = std::mem::take(&mut members[gone]);
        members[keep].extend(moved);
        locked[keep] = locked[keep] || locked[gone] || e.kind == EdgeKind::Locked;
    }

    let cluster_of: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    let locked = (0..n).map(|i| locked[cluster_of[i]]).collect();
    Output {
        cluster_of,
        locked,
        refused,
    }
}

/// Why the union of two clusters would be wrong, if it would.
fn union_conflict(
    nodes: &[Features],
    keep_apart: &std::collections::HashSet<(usize, usize)>,
    guards: Guards,
    x: &[usize],
    y: &[usize],
) -> Option<&'static str> {
    for &i in x {
        for &j in y {
            let key = if i < j { (i, j) } else { (j, i) };
            if keep_apart.contains(&key) {
                return Some("keep_apart");
            }
            let conflict = match guards {
                Guards::Rules => pair_conflict(&nodes[i], &nodes[j]),
                Guards::Model => model_conflict(&nodes[i], &nodes[j]),
            };
            if let Some(reason) = conflict {
                return Some(reason);
            }
        }
    }
    None
}

/// The model's guards between two records that no person may hold.
pub fn model_conflict(a: &Features, b: &Features) -> Option<&'static str> {
    let levels = crate::model::compare::compare(a, b);
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
                && rules::passports_agree(x, y, a.birth, b.birth);
            if !replaced {
                return Some("chain_document_differs");
            }
        }
    }
    None
}
