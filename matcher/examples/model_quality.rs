//! Quality of the scorings on generated and FEBRL1–3 records, in memory
//! (no PostgreSQL): the blocking, pairwise decisions and clustering of the
//! engine on each set, scored against its truth. A quick loop for tuning;
//! the figures of record come from `etl evaluate` through the real path.
//!
//! `cargo run --release -p matcher --example model_quality [rules|priors|trained] [persons]`

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use matcher::cluster::{self, Edge, EdgeKind};
use matcher::engine::{Scoring, Setup};
use matcher::features::{Features, SourceRow};
use matcher::model::{self, Model, Thresholds};
use matcher::rules::{Decision, Weights};
use synth::truth::TruthRecord;

fn features(t: &TruthRecord) -> Features {
    Features::of(&SourceRow::of_record(t.source, &t.source_id, &t.record))
}

/// Why a true pair that no block held would not have linked either, or
/// that it would have (`not_blocked_link`).
fn not_blocked(setup: &Setup, nodes: &[Features], i: usize, j: usize) -> String {
    let levels = matcher::model::compare::compare(&nodes[i], &nodes[j]);
    if std::env::var("NOT_BLOCKED").is_ok() {
        println!("not blocked {levels:?}");
    }
    let why = match setup.evaluate(&nodes[i], &nodes[j]) {
        Some(p) if p.decision == Decision::Link => "link",
        Some(_) => "review",
        None => matcher::model::params::guard(&nodes[i], &nodes[j], &levels).unwrap_or("below"),
    };
    format!("not_blocked_{why}")
}

fn evaluate(name: &str, mut truth: Vec<TruthRecord>, kind: &str) {
    truth.sort_by(|a, b| (a.source, &a.source_id).cmp(&(b.source, &b.source_id)));
    let nodes: Vec<Features> = truth.iter().map(features).collect();
    let scoring = match kind {
        "rules" => Scoring::Rules(Weights::default()),
        "priors" => Scoring::Model {
            model: Arc::new(Model::priors()),
            thresholds: Thresholds::default(),
        },
        _ => {
            let started = std::time::Instant::now();
            let trained =
                model::train::train(&nodes, &Model::priors(), &Default::default(), &mut |_| {});
            eprintln!(
                "{name}: trained on {} records in {:.1} s; namesakes {:?}",
                nodes.len(),
                started.elapsed().as_secs_f64(),
                trained.model.namesakes
            );
            if std::env::var("SHOW_MODEL").is_ok() {
                println!("{}", model::store::show(&trained.model));
            }
            Scoring::Model {
                model: Arc::new(trained.model),
                thresholds: Thresholds::default(),
            }
        }
    };
    let scoring = match scoring {
        Scoring::Model {
            model,
            mut thresholds,
        } => {
            if let Some(bits) = std::env::var("BITS").ok().and_then(|b| b.parse().ok()) {
                thresholds.uncorroborated_margin_bits = bits;
            }
            if let Some(p) = std::env::var("LINK").ok().and_then(|b| b.parse().ok()) {
                thresholds.link_probability = p;
            }
            Scoring::Model { model, thresholds }
        }
        other => other,
    };
    let setup = Setup {
        scoring,
        max_block_size: 100,
        actor: "eval".into(),
    };
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (n, f) in nodes.iter().enumerate() {
        for k in f.keys() {
            blocks.entry(k).or_default().push(n);
        }
    }
    let pairing = std::time::Instant::now();
    let mut seen = HashSet::new();
    let mut missed: HashMap<String, u64> = HashMap::new();
    // Why each true pair was not linked, to count those left apart by the
    // clustering too.
    let mut reason: HashMap<(usize, usize), String> = HashMap::new();
    let mut margins: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut edges, mut reviews) = (Vec::new(), Vec::new());
    let mut item_evidence: HashMap<(usize, usize), String> = HashMap::new();
    for members in blocks.values().filter(|m| m.len() >= 2 && m.len() <= 100) {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                if !seen.insert((i, j)) {
                    continue;
                }
                let same = truth[i].person == truth[j].person;
                let Some(p) = setup.evaluate(&nodes[i], &nodes[j]) else {
                    if same && std::env::var("MISSED").is_ok() {
                        if let Scoring::Model { model, .. } = &setup.scoring {
                            let levels = matcher::model::compare::compare(&nodes[i], &nodes[j]);
                            let why = matcher::model::params::guard(&nodes[i], &nodes[j], &levels)
                                .unwrap_or("below");
                            *missed.entry(why.to_string()).or_default() += 1;
                            reason.insert((i, j), why.to_string());
                            if std::env::var("GUARDED").is_ok_and(|g| g == why) {
                                let show = |f: &Features| {
                                    (
                                        f.last.clone(),
                                        f.first.clone(),
                                        f.middle.clone(),
                                        f.birth,
                                        f.docs.len(),
                                    )
                                };
                                println!(
                                    "guarded {why}: {:?} | {:?}",
                                    show(&nodes[i]),
                                    show(&nodes[j])
                                );
                            }
                            if why == "below" && std::env::var("BELOW").is_ok() {
                                println!(
                                    "below {:.1} {:?}",
                                    model.score(&nodes[i], &nodes[j]).weight,
                                    levels
                                );
                            }
                        }
                    }
                    continue;
                };
                let evidence = p.evidence.value();
                if evidence.get("blocked_by").and_then(|v| v.as_str())
                    == Some("uncorroborated_namesake")
                {
                    let f = evidence["fields"].as_object().expect("fields");
                    let bits: f64 = f
                        .iter()
                        .filter(|(k, _)| *k != "birth_date")
                        .filter_map(|(_, v)| v["weight"].as_f64())
                        .sum::<f64>()
                        - (nodes.len() as f64).log2();
                    let bucket = (bits / 2.0).floor() * 2.0;
                    if std::env::var("NAMESAKES").is_ok() {
                        println!(
                            "namesake rule {} margin {bits:.1}: {}",
                            if same { "T" } else { "F" },
                            evidence["fields"]
                        );
                    }
                    *margins
                        .entry(format!("{}{bucket}", if same { "T" } else { "F" }))
                        .or_default() += 1;
                }
                if same && p.decision != Decision::Link && std::env::var("REVIEWS").is_ok() {
                    println!(
                        "review {} | {:?} {:?} {:?} | {:?} {:?} {:?}",
                        evidence,
                        nodes[i].last,
                        nodes[i].first,
                        nodes[i].birth,
                        nodes[j].last,
                        nodes[j].first,
                        nodes[j].birth
                    );
                }
                if same && p.decision != Decision::Link {
                    let mut why = evidence
                        .get("blocked_by")
                        .and_then(|v| v.as_str())
                        .unwrap_or("review")
                        .to_string();
                    if why == "uncorroborated_namesake" {
                        let f = &evidence["fields"];
                        let bits: f64 = ["last_name", "first_name", "middle_name"]
                            .iter()
                            .filter_map(|k| f[k]["weight"].as_f64())
                            .sum();
                        why = format!("{why}_{}", (bits / 4.0).floor() * 4.0);
                    }
                    reason.insert((i, j), why.clone());
                    *missed.entry(why).or_default() += 1;
                }
                if std::env::var("SHOW").is_ok()
                    && p.decision == Decision::Link
                    && truth[i].person != truth[j].person
                {
                    println!(
                        "false link {:?} {:?} {} {}",
                        truth[i].group, truth[j].group, p.score, evidence
                    );
                    println!(
                        "   {:?}\n   {:?}",
                        (
                            &nodes[i].last,
                            &nodes[i].first,
                            &nodes[i].middle,
                            nodes[i].birth,
                            &nodes[i].docs,
                            &nodes[i].phones
                        ),
                        (
                            &nodes[j].last,
                            &nodes[j].first,
                            &nodes[j].middle,
                            nodes[j].birth,
                            &nodes[j].docs,
                            &nodes[j].phones
                        )
                    );
                }
                match p.decision {
                    Decision::Link => edges.push(Edge {
                        a: i,
                        b: j,
                        kind: EdgeKind::Rule,
                        rule: p.rule,
                        score: p.score,
                    }),
                    _ => {
                        reviews.push((i, j));
                        item_evidence.insert((i, j), evidence.to_string());
                    }
                }
            }
        }
    }
    eprintln!(
        "{name}: {} candidate pairs decided in {:.1} s (one thread)",
        seen.len(),
        pairing.elapsed().as_secs_f64()
    );
    if !margins.is_empty() {
        println!("uncorroborated pairs by margin (T: one person, F: two): {margins:?}");
    }
    if !missed.is_empty() {
        println!("missed true pairs: {missed:?}");
    }
    let out = cluster::cluster(cluster::Input {
        nodes: &nodes,
        guards: setup.guards(),
        edges,
        keep_apart: &HashSet::new(),
    });
    let c = &out.cluster_of;
    let mut by_cluster: HashMap<usize, Vec<usize>> = HashMap::new();
    for (n, &k) in c.iter().enumerate() {
        by_cluster.entry(k).or_default().push(n);
    }
    let (mut found, mut correct) = (0u64, 0u64);
    let mut false_kinds: HashMap<String, u64> = HashMap::new();
    for members in by_cluster.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                found += 1;
                if truth[i].person == truth[j].person {
                    correct += 1;
                } else {
                    let kind = match (&truth[i].group, &truth[j].group) {
                        (Some(g), Some(h)) if g == h => {
                            g.split(':').next().unwrap_or("group").to_string()
                        }
                        _ => "other".into(),
                    };
                    *false_kinds.entry(kind).or_default() += 1;
                }
            }
        }
    }
    if std::env::var("MISSED").is_ok() {
        // True pairs in different clusters, by why their own pair (if
        // blocked) was not linked.
        let mut apart: std::collections::BTreeMap<String, u64> = Default::default();
        let mut of_person: HashMap<&str, Vec<usize>> = HashMap::new();
        for (n, t) in truth.iter().enumerate() {
            of_person.entry(&t.person).or_default().push(n);
        }
        for members in of_person.values() {
            for (x, &i) in members.iter().enumerate() {
                for &j in &members[x + 1..] {
                    if c[i] != c[j] {
                        let why = reason
                            .get(&(i.min(j), i.max(j)))
                            .or_else(|| reason.get(&(i, j)))
                            .or_else(|| reason.get(&(j, i)))
                            .cloned()
                            .unwrap_or_else(|| not_blocked(&setup, &nodes, i, j));
                        *apart.entry(why).or_default() += 1;
                    }
                }
            }
        }
        println!("true pairs left in different clusters: {apart:?}");
    }
    let mut by_person: HashMap<&str, u64> = HashMap::new();
    for t in &truth {
        *by_person.entry(&t.person).or_default() += 1;
    }
    let actual: u64 = by_person.values().map(|n| n * (n - 1) / 2).sum();
    // One open item per pair of persons, as the engine keeps them.
    let mut items: HashSet<(usize, usize)> = HashSet::new();
    let questions = reviews
        .iter()
        .copied()
        .chain(out.refused.iter().map(|r| (r.a, r.b)));
    for (i, j) in questions.filter(|(i, j)| c[*i] != c[*j]) {
        let pair = (c[i].min(c[j]), c[i].max(c[j]));
        if items.insert(pair) && std::env::var("ITEMS").is_ok() {
            let show = |f: &Features| (f.last.clone(), f.first.clone(), f.birth, f.docs.clone());
            println!(
                "item {}: {:?} | {:?} {}",
                if truth[i].person == truth[j].person {
                    "T"
                } else {
                    "F"
                },
                show(&nodes[i]),
                show(&nodes[j]),
                item_evidence.get(&(i, j)).map_or("refused", |e| e.as_str())
            );
        }
    }
    let open = items.len();
    let p = correct as f64 / found.max(1) as f64;
    let r = correct as f64 / actual.max(1) as f64;
    println!(
        "{name:<10} {kind:<8} records {:>7} P {p:.4} R {r:.4} F1 {:.4} false {:?} review {:.2}%",
        nodes.len(),
        2.0 * p * r / (p + r).max(1e-9),
        false_kinds,
        100.0 * open as f64 / nodes.len() as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("trained", |s| s.as_str()).to_string();
    let persons: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    // `SETS=febrl3,clerks` runs only those.
    let wanted = std::env::var("SETS").unwrap_or_default();
    let run = |name: &str| wanted.is_empty() || wanted.split(',').any(|w| w == name);
    if run("generator") {
        evaluate(
            "generator",
            synth::truth::TruthGenerator::new(2026).records(persons),
            &kind,
        );
    }
    if run("clerks") {
        evaluate(
            "clerks",
            synth::truth::TruthGenerator::new(2026)
                .with_clerks()
                .records(persons),
            &kind,
        );
    }
    for set in ["febrl1", "febrl2", "febrl3"] {
        if run(set) {
            evaluate(set, synth::febrl::records(set).expect("a set"), &kind);
        }
    }
}
