//! Training: u from random record pairs, m and the prior by EM on blocked
//! pairs, name frequencies. Pure and deterministic: the same records give
//! the same model (random pairs come from a fixed seed, and every sum runs
//! in one order).
//!
//! A field used to choose the pairs of an EM pass agrees on almost all of
//! them, so that pass cannot estimate its m. Two passes: pairs sharing an
//! identifier (not a phone or e-mail, which households share) estimate the
//! names, birth date and sex;
//! pairs sharing a surname or first name and patronymic with the birth date
//! estimate the identifiers, phone and e-mail. The prior is then estimated
//! with m and u fixed on all the pairs the matcher compares (sharing any
//! blocking key). Last, the namesakes among those pairs are counted, with
//! the weight of the rarest names two of them share (see
//! [`Namesakes`](super::params::Namesakes)).

use std::collections::{HashMap, HashSet};

use super::compare::{compare, Field, Levels, FIELDS};
use super::params::{full_name_bits, FieldParams, Frequencies, Model, Namesakes};
use crate::features::Features;
use crate::par::par_map;

/// How a model is trained.
#[derive(Debug, Clone)]
pub struct Options {
    /// Random record pairs compared for u.
    pub random_pairs: usize,
    /// Blocks held by more records than this give no pairs.
    pub max_block_size: usize,
    pub max_iterations: usize,
    /// EM stops when no parameter moves by more than this.
    pub tolerance: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            random_pairs: 2_000_000,
            max_block_size: 100,
            max_iterations: 100,
            tolerance: 1e-7,
        }
    }
}

/// A trained model and what it was trained on.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: Model,
    pub records: usize,
    pub random_pairs: usize,
    pub blocked_pairs: usize,
    /// EM iterations of each pass (names, identifiers, prior).
    pub iterations: [usize; 3],
}

/// Each comparison pattern and how many pairs have it, in a fixed order.
type Patterns = Vec<(Levels, u64)>;

/// Trains a model on `records`, starting EM from `start` (the shipped
/// priors, or the model in use); `progress` receives one line per step.
pub fn train(
    records: &[Features],
    start: &Model,
    options: &Options,
    progress: &mut dyn FnMut(String),
) -> Trained {
    let mut model = start.clone();
    model.version = None;
    model.frequencies = frequencies(records);
    progress(format!(
        "{} records; name frequencies counted",
        records.len()
    ));
    let random = random_patterns(records, options.random_pairs);
    let random_pairs = random.iter().map(|(_, n)| *n as usize).sum();
    set_u(&mut model, &random, start, None);
    progress(format!(
        "u estimated from {random_pairs} random record pairs"
    ));
    let blocked = Blocked::of(records, options.max_block_size);
    fit(&mut model, &blocked, options, progress);
    // Random pairs hold matches too (in a small set with many duplicates,
    // one pair in 2,000), which makes an agreement on an identifier look
    // hundreds of times likelier between two people than it is. Once m
    // and the prior are known, u is estimated again from the random pairs,
    // each weighted by the probability that it is two people, and m and
    // the prior with it.
    let lambda = model.lambda;
    set_u(&mut model, &random, start, Some(lambda));
    progress("u estimated again, the matches among the random pairs left out".into());
    let iterations = fit(&mut model, &blocked, options, progress);
    let mut namesakes = namesakes(&blocked.all);
    namesakes.rarest_name_bits = rarest_namesakes(records, &blocked.namesake_pairs, &model);
    model.namesakes = Some(namesakes);
    progress(format!(
        "{} pairs agree on names and birth date and hold comparable SNILS or passports; {} of them are two people",
        namesakes.compared, namesakes.apart
    ));
    Trained {
        model,
        records: records.len(),
        random_pairs,
        blocked_pairs: blocked.pairs,
        iterations,
    }
}

/// The comparison patterns EM is run on.
struct Blocked {
    /// Pairs sharing a document, SNILS or OMS number (not a phone or
    /// e-mail: a household's members would teach EM that names differ
    /// within one person).
    by_ids: Patterns,
    /// Pairs sharing a surname, or first name and patronymic, with the
    /// birth date.
    by_names: Patterns,
    /// Pairs sharing any blocking key: the pairs the matcher compares.
    all: Patterns,
    /// How many pairs `all` counts.
    pairs: usize,
    /// The pairs of `all` that are namesakes beyond doubt
    /// ([`Namesakes::apart`]), in a fixed order.
    namesake_pairs: Vec<(u32, u32)>,
}

impl Blocked {
    fn of(records: &[Features], max_block: usize) -> Blocked {
        let all = blocked(records, &[""], max_block);
        Blocked {
            by_ids: patterns(records, &blocked(records, &["d:", "s:", "o:"], max_block)),
            by_names: patterns(records, &blocked(records, &["n:", "f:"], max_block)),
            pairs: all.len(),
            namesake_pairs: namesake_pairs(records, &all),
            all: patterns(records, &all),
        }
    }
}

/// m by EM with u fixed, in two passes so that no field is estimated on
/// pairs chosen for agreeing on it, then the prior; gives each EM's
/// iterations.
fn fit(
    model: &mut Model,
    blocked: &Blocked,
    options: &Options,
    progress: &mut dyn FnMut(String),
) -> [usize; 3] {
    // EM on blocked pairs, most of which are matches, starts from an even
    // prior; the model's own prior is set at the end.
    model.lambda = 0.5;
    let mut iterations = [0; 3];
    let name_fields = [
        Field::LastName,
        Field::FirstName,
        Field::MiddleName,
        Field::BirthDate,
        Field::Sex,
    ];
    let passes: [(&str, &Patterns, bool); 2] = [
        ("names, birth date, sex", &blocked.by_ids, true),
        ("identifiers, phone, e-mail", &blocked.by_names, false),
    ];
    for (n, (what, patterns, names)) in passes.into_iter().enumerate() {
        let (fitted, its) = em(patterns, model, true, options);
        iterations[n] = its;
        for field in FIELDS {
            if name_fields.contains(&field) == names && !patterns.is_empty() {
                model.fields[field.index()].m = fitted.fields[field.index()].m.clone();
            }
        }
        progress(format!(
            "EM on {} pairs sharing {}: m of {what} in {its} iterations",
            patterns.iter().map(|(_, c)| c).sum::<u64>(),
            if names {
                "an identifier"
            } else {
                "names and birth date"
            }
        ));
    }
    // The prior is that of two records taken at random: the matches EM
    // expects among the pairs the matcher compares (those sharing any
    // blocking key; the others are taken as two people) over all possible
    // pairs. Blocking picks pairs for their agreeing fields, which the
    // weights already count: a prior of the compared pairs would count
    // that agreement twice.
    let (fitted, its) = em(&blocked.all, model, false, options);
    let n = model.frequencies.records as f64;
    let possible = (n * (n - 1.0) / 2.0).max(1.0);
    model.lambda = (fitted.lambda * blocked.pairs as f64 / possible).clamp(1e-12, 0.5);
    iterations[2] = its;
    progress(format!(
        "prior {:.3e} ({:.0} matches expected among {} blocked pairs, in {its} iterations)",
        model.lambda,
        fitted.lambda * blocked.pairs as f64,
        blocked.pairs
    ));
    iterations
}

/// The pairs that are namesakes beyond doubt, in a fixed order. Only pairs
/// equal on names and birth date are compared.
fn namesake_pairs(records: &[Features], pairs: &HashSet<(u32, u32)>) -> Vec<(u32, u32)> {
    let same_names = |a: &Features, b: &Features| {
        a.birth.is_some() && a.birth == b.birth && a.last == b.last && a.first == b.first
    };
    let mut list: Vec<(u32, u32)> = pairs
        .iter()
        .copied()
        .filter(|&(i, j)| same_names(&records[i as usize], &records[j as usize]))
        .filter(|&(i, j)| {
            Namesakes::apart(&compare(&records[i as usize], &records[j as usize])) == Some(true)
        })
        .collect();
    list.sort_unstable();
    list
}

/// The most that the names of a namesake pair weigh under `model`.
fn rarest_namesakes(records: &[Features], pairs: &[(u32, u32)], model: &Model) -> Option<f64> {
    pairs
        .iter()
        .map(|&(i, j)| full_name_bits(&model.score(&records[i as usize], &records[j as usize])))
        .reduce(f64::max)
}

/// What the compared pairs say about namesakes (see [`Namesakes`]).
fn namesakes(all: &Patterns) -> Namesakes {
    let mut namesakes = Namesakes::default();
    for (levels, n) in all {
        namesakes.count(levels, *n);
    }
    namesakes
}

/// How many people hold each surname, first name and patronymic: each
/// value counted once per distinct birth date among the records holding it
/// (see [`Frequencies`]), with each field's total.
pub fn frequencies(records: &[Features]) -> Frequencies {
    let mut seen: HashSet<(Field, &str, Option<chrono::NaiveDate>, usize)> = HashSet::new();
    let mut counts: HashMap<String, HashMap<String, u32>> = HashMap::new();
    let mut totals: HashMap<String, u64> = HashMap::new();
    for (n, r) in records.iter().enumerate() {
        for (field, value) in [
            (Field::LastName, &r.last),
            (Field::FirstName, &r.first),
            (Field::MiddleName, &r.middle),
        ] {
            let Some(v) = value else { continue };
            // Without a birth date the record is a person of its own.
            let own = if r.birth.is_some() { 0 } else { n };
            if !seen.insert((field, v.as_str(), r.birth, own)) {
                continue;
            }
            *counts
                .entry(field.name().into())
                .or_default()
                .entry(v.clone())
                .or_default() += 1;
            *totals.entry(field.name().into()).or_default() += 1;
        }
    }
    Frequencies {
        records: records.len() as u64,
        counts,
        totals,
    }
}

/// splitmix64: a fixed sequence of random numbers (no dependence on the
/// platform or a crate's version).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The comparison patterns of up to `wanted` random record pairs (a fixed
/// seed).
fn random_patterns(records: &[Features], wanted: usize) -> Patterns {
    let n = records.len();
    let possible = n.saturating_mul(n.saturating_sub(1)) / 2;
    let count = wanted.min(possible);
    let mut state = 0x006d_6174_6368_6572_u64;
    let mut list = Vec::with_capacity(count);
    for _ in 0..count {
        let i = (splitmix(&mut state) % n as u64) as u32;
        let mut j = (splitmix(&mut state) % (n as u64 - 1)) as u32;
        if j >= i {
            j += 1;
        }
        list.push((i, j));
    }
    count_patterns(records, &list)
}

/// u of every level from the random pairs' patterns. With a prior (the
/// probability that two records taken at random are one person), each
/// pair counts by the probability, under `model`, that it is two people;
/// without, each counts fully. A level no pair showed keeps the smaller of
/// its prior and one in the pairs that had the field.
fn set_u(model: &mut Model, random: &Patterns, start: &Model, lambda: Option<f64>) {
    let mut counts: Vec<Vec<f64>> = FIELDS.iter().map(|f| vec![0.0; f.levels().len()]).collect();
    let mut present = vec![0.0; FIELDS.len()];
    let prior = lambda.map(|l| (l / (1.0 - l)).ln());
    for (levels, n) in random {
        let two_people = match prior {
            Some(prior) => 1.0 - posterior(model, prior, levels),
            None => 1.0,
        };
        for field in FIELDS {
            if let Some(level) = levels[field.index()] {
                counts[field.index()][level as usize] += two_people * *n as f64;
                present[field.index()] += *n as f64;
            }
        }
    }
    for field in FIELDS {
        let (c, p) = (&counts[field.index()], present[field.index()]);
        let total: f64 = c.iter().sum();
        let prior = &start.fields[field.index()].u;
        model.fields[field.index()].u = c
            .iter()
            .enumerate()
            .map(|(l, &k)| {
                if p == 0.0 {
                    prior[l]
                } else {
                    (k / total).max(prior[l].min(1.0 / p))
                }
            })
            .collect();
    }
}

/// The probability that a pair with `levels` is one person, given the log
/// prior odds (natural log).
fn posterior(model: &Model, ln_prior_odds: f64, levels: &Levels) -> f64 {
    let mut ln_odds = ln_prior_odds;
    for field in FIELDS {
        if let Some(l) = levels[field.index()] {
            let p = &model.fields[field.index()];
            ln_odds += (p.m[l as usize] / p.u[l as usize]).ln();
        }
    }
    1.0 / (1.0 + (-ln_odds).exp())
}

/// The pairs of records sharing a key with one of `prefixes` (blocks of 2
/// to `max_block` records), each once, smaller index first.
fn blocked(records: &[Features], prefixes: &[&str], max_block: usize) -> HashSet<(u32, u32)> {
    let keys = par_map(records, |r| r.keys());
    let mut blocks: HashMap<&str, Vec<u32>> = HashMap::new();
    for (n, ks) in keys.iter().enumerate() {
        for k in ks
            .iter()
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
        {
            blocks.entry(k.as_str()).or_default().push(n as u32);
        }
    }
    let mut pairs = HashSet::new();
    for members in blocks
        .values()
        .filter(|m| m.len() >= 2 && m.len() <= max_block)
    {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                pairs.insert((i.min(j), i.max(j)));
            }
        }
    }
    pairs
}

/// The comparison patterns of `pairs`, counted, in a fixed order.
fn patterns(records: &[Features], pairs: &HashSet<(u32, u32)>) -> Patterns {
    let mut list: Vec<(u32, u32)> = pairs.iter().copied().collect();
    list.sort_unstable();
    count_patterns(records, &list)
}

/// The comparison patterns of `list`, counted, in a fixed order.
fn count_patterns(records: &[Features], list: &[(u32, u32)]) -> Patterns {
    let levels = par_map(list, |&(i, j)| {
        compare(&records[i as usize], &records[j as usize])
    });
    let mut counts: HashMap<Levels, u64> = HashMap::new();
    for l in levels {
        *counts.entry(l).or_default() += 1;
    }
    let mut patterns: Patterns = counts.into_iter().collect();
    patterns.sort_unstable();
    patterns
}

/// Expectation–maximisation with u fixed: m of every field (when `fit_m`)
/// and the prior, from `start`, until no parameter moves by more than the
/// tolerance. Gives the model and the iterations it took.
pub fn em(
    patterns: &[(Levels, u64)],
    start: &Model,
    fit_m: bool,
    options: &Options,
) -> (Model, usize) {
    let mut model = start.clone();
    for it in 1..=options.max_iterations {
        let mut m_sums: Vec<Vec<f64>> =
            FIELDS.iter().map(|f| vec![0.0; f.levels().len()]).collect();
        let (mut matched, mut total) = (0.0, 0.0);
        let prior = (model.lambda / (1.0 - model.lambda)).ln();
        for (levels, count) in patterns {
            let p = posterior(&model, prior, levels);
            let c = *count as f64;
            matched += p * c;
            total += c;
            for field in FIELDS {
                if let Some(l) = levels[field.index()] {
                    m_sums[field.index()][l as usize] += p * c;
                }
            }
        }
        if total == 0.0 {
            return (model, it);
        }
        let mut moved: f64 = 0.0;
        let lambda = (matched / total).clamp(1e-9, 1.0 - 1e-9);
        moved = moved.max((lambda - model.lambda).abs());
        model.lambda = lambda;
        if fit_m {
            for field in FIELDS {
                let sums = &m_sums[field.index()];
                let present: f64 = sums.iter().sum();
                if present <= 0.0 {
                    continue;
                }
                let FieldParams { m, .. } = &mut model.fields[field.index()];
                for (l, s) in sums.iter().enumerate() {
                    let new = (s / present).max(1e-6);
                    moved = moved.max((new - m[l]).abs());
                    m[l] = new;
                }
            }
        }
        if moved <= options.tolerance {
            return (model, it);
        }
    }
    (model, options.max_iterations)
}
