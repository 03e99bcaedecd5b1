//! The model on hand-made and generated records, without PostgreSQL.

use chrono::NaiveDate;

use super::compare::{compare, Field};
use super::params::{Frequencies, Model, NamesakeRule, Namesakes, Thresholds};
use super::train::{self, Options};
use crate::features::{Doc, Features, SourceRow};
use crate::rules::Decision;

pub(crate) fn record(source_id: &str, last: &str, first: &str, middle: &str) -> Features {
    Features {
        source: "qms".into(),
        source_id: source_id.into(),
        last: Some(last.into()),
        last_parts: vec![last.into()],
        first: Some(first.into()),
        middle: Some(middle.into()),
        birth: NaiveDate::from_ymd_opt(1980, 4, 12),
        sex: Some('M'),
        docs: vec![],
        snils: None,
        oms: None,
        phones: vec![],
        emails: vec![],
    }
}

pub(crate) fn passport(series: &str, number: &str) -> Doc {
    Doc {
        doc_type: proto::DocumentType::PASSPORT.0,
        series: series.into(),
        number: number.into(),
    }
}

pub(super) fn generated(persons: u64) -> Vec<Features> {
    let mut truth = synth::truth::TruthGenerator::new(11).records(persons);
    truth.sort_by(|a, b| (a.source, &a.source_id).cmp(&(b.source, &b.source_id)));
    truth
        .iter()
        .map(|t| Features::of(&SourceRow::of_record(t.source, &t.source_id, &t.record)))
        .collect()
}

#[test]
fn em_converges_to_the_same_model_from_the_same_data() {
    let records = generated(1_500);
    let options = Options {
        random_pairs: 200_000,
        ..Options::default()
    };
    let first = train::train(&records, &Model::priors(), &options, &mut |_| {});
    let second = train::train(&records, &Model::priors(), &options, &mut |_| {});
    assert_eq!(first.model, second.model);
    assert_eq!(first.iterations, second.iterations);
    assert!(
        first.iterations.iter().all(|&i| i < options.max_iterations),
        "EM converged: {:?}",
        first.iterations
    );
    // What it learned makes sense: an exact birth date is strong evidence,
    // a different one strong evidence against.
    let birth = &first.model.fields[Field::BirthDate.index()];
    assert!(birth.m[0] > 0.8, "m of an exact birth date: {}", birth.m[0]);
    assert!((birth.m[0] / birth.u[0]).log2() > 8.0);
    assert!((birth.m[3] / birth.u[3]).log2() < -3.0);
    assert!(first.model.lambda > 0.0 && first.model.lambda < 1.0);
}

/// The priors with `people` holding each of `names` (surname, first name,
/// patronymic) among 100,000 records, and two records that agree on those
/// names, birth date and sex and nothing else.
fn named_pair(names: [&str; 3], people: u32) -> (Model, Features, Features) {
    let mut model = Model::priors();
    let mut frequencies = Frequencies {
        records: 100_000,
        ..Default::default()
    };
    for (field, value) in ["last_name", "first_name", "middle_name"]
        .into_iter()
        .zip(names)
    {
        let counts = frequencies.counts.entry(field.into()).or_default();
        counts.insert(value.into(), people);
    }
    model.frequencies = frequencies;
    let [last, first, middle] = names;
    (
        model,
        record("1", last, first, middle),
        record("2", last, first, middle),
    )
}

/// Two records that agree on full name, birth date and sex and nothing
/// else: one person if the name is rare, a review if it is common.
#[test]
fn term_frequency_separates_a_rare_from_a_common_namesake_pair() {
    let mut model = Model::priors();
    let mut frequencies = Frequencies {
        records: 100_000,
        ..Default::default()
    };
    for (field, common, rare) in [
        ("last_name", "иванов", "чайковский"),
        ("first_name", "александр", "модест"),
        ("middle_name", "сергеевич", "ильич"),
    ] {
        let counts = frequencies.counts.entry(field.into()).or_default();
        counts.insert(common.into(), 3_000);
        counts.insert(rare.into(), 1);
    }
    model.frequencies = frequencies;
    let t = Thresholds::default();
    let common = (
        record("1", "иванов", "александр", "сергеевич"),
        record("2", "иванов", "александр", "сергеевич"),
    );
    let rare = (
        record("1", "чайковский", "модест", "ильич"),
        record("2", "чайковский", "модест", "ильич"),
    );
    let w_common = model.score(&common.0, &common.1).weight;
    let w_rare = model.score(&rare.0, &rare.1).weight;
    assert!(w_rare > w_common + 15.0, "{w_rare} against {w_common}");
    let rare = model.decide(&rare.0, &rare.1, &t).expect("a decision");
    assert_eq!(rare.decision, Decision::Link);
    let common = model.decide(&common.0, &common.1, &t);
    assert_ne!(common.map(|o| o.decision), Some(Decision::Link));
}

/// Where the records show people with the same names and birth date (two
/// valid SNILS that differ), a pair known by names and birth date alone
/// needs rare names; where they show none, its probability decides; the
/// shipped priors (nothing counted) keep the rule.
#[test]
fn the_namesake_rule_applies_where_the_records_hold_namesakes() {
    let (mut model, a, b) = named_pair(["соколов", "андрей", "викторович"], 500);
    let t = Thresholds::default();
    let decision = |model: &Model| model.decide(&a, &b, &t).map(|o| (o.decision, o.blocked_by));
    let held = Some((Decision::Review, Some("uncorroborated_namesake")));
    assert_eq!(decision(&model), held, "priors: not counted");
    model.namesakes = Some(Namesakes {
        compared: 5_000,
        apart: 3,
        rarest_name_bits: None,
    });
    assert_eq!(decision(&model), held, "namesakes among the records");
    model.namesakes = Some(Namesakes {
        compared: 5_000,
        apart: 0,
        rarest_name_bits: None,
    });
    assert_eq!(
        decision(&model),
        Some((Decision::Link, None)),
        "no namesakes"
    );
    let shown = super::store::show(&model);
    assert!(
        shown.contains("namesakes: none among 5000 pairs"),
        "{shown}"
    );
    let always = Thresholds {
        namesake_rule: NamesakeRule::Always,
        ..t
    };
    let o = model
        .decide(&a, &b, &always)
        .map(|o| (o.decision, o.blocked_by));
    assert_eq!(o, held, "the rule on every model");

    // Counting: the same SNILS is one person, two valid ones two people;
    // without SNILS or passports on both sides nothing is counted.
    let with_snils = |r: Features, snils: &str| Features {
        snils: Some(snils.into()),
        ..r
    };
    let mut counted = Namesakes::default();
    for (x, y) in [
        (
            with_snils(a.clone(), "11223344595"),
            with_snils(b.clone(), "11223344595"),
        ),
        (
            with_snils(a.clone(), "11223344595"),
            with_snils(b.clone(), "12345678964"),
        ),
        (with_snils(a.clone(), "11223344595"), b.clone()),
        (
            with_snils(a.clone(), "11223344595"),
            with_snils(record("3", "соколов", "олег", "викторович"), "12345678964"),
        ),
    ] {
        counted.count(&compare(&x, &y), 1);
    }
    assert_eq!(
        counted,
        Namesakes {
            compared: 2,
            apart: 1,
            rarest_name_bits: None,
        }
    );
}

/// Rare names link a pair known by names and birth date alone only if they
/// are rarer than those of every namesake pair the training found: where
/// namesakes were found among names as rare, rarity proves nothing.
#[test]
fn rare_names_must_be_rarer_than_the_namesakes_found() {
    let (mut model, a, b) = named_pair(["пржевальский", "ипполит", "феоктистович"], 1);
    let t = Thresholds::default();
    let decision = |model: &Model| model.decide(&a, &b, &t).map(|o| (o.decision, o.blocked_by));
    let found = |rarest| Namesakes {
        compared: 5_000,
        apart: 3,
        rarest_name_bits: rarest,
    };
    let bits = super::params::full_name_bits(&model.score(&a, &b));
    model.namesakes = Some(found(None));
    assert_eq!(decision(&model), Some((Decision::Link, None)), "rare names");
    model.namesakes = Some(found(Some(bits - 1.0)));
    assert_eq!(
        decision(&model),
        Some((Decision::Link, None)),
        "rarer than the namesakes"
    );
    model.namesakes = Some(found(Some(bits)));
    assert_eq!(
        decision(&model),
        Some((Decision::Review, Some("uncorroborated_namesake"))),
        "namesakes found with names as rare"
    );

    // Training keeps how rare the names of the namesakes it found were.
    let records = generated(3_000);
    let options = Options {
        random_pairs: 200_000,
        ..Options::default()
    };
    let trained = train::train(&records, &Model::priors(), &options, &mut |_| {});
    let n = trained.model.namesakes.expect("counted");
    assert!(n.apart > 0, "the generator plants namesakes");
    assert!(n.rarest_name_bits.is_some_and(|b| b > 10.0), "{n:?}");
}

/// A one-digit typo in a passport number is a typo, not two people, when
/// everything else agrees; with another first name (twins) the pair stays
/// apart.
#[test]
fn a_one_digit_document_typo_links_unless_the_first_name_differs() {
    let model = Model::priors();
    let t = Thresholds::default();
    let mut a = record("1", "кузнецова", "мария", "петровна");
    a.sex = Some('F');
    a.docs = vec![passport("4510", "123456")];
    let mut b = a.clone();
    b.source_id = "2".into();
    b.docs = vec![passport("4510", "123457")];
    assert_eq!(compare(&a, &b)[Field::Passport.index()], Some(1));
    let o = model.decide(&a, &b, &t).expect("a decision");
    assert_eq!(o.decision, Decision::Link, "{:?}", o.scored);
    let mut twin = b.clone();
    twin.first = Some("дарья".into());
    let o = model.decide(&a, &twin, &t);
    assert!(o.is_none(), "twins are kept apart: {o:?}");
    // Two passports far apart are two people, whatever else agrees.
    let mut other = b.clone();
    other.docs = vec![passport("4510", "654321")];
    assert!(model.decide(&a, &other, &t).is_none());
}

#[test]
fn an_initial_agrees_with_a_full_name() {
    let a = record("1", "smith", "john", "william");
    let mut b = record("2", "smith", "john", "w");
    b.sex = None;
    assert_eq!(compare(&a, &b)[Field::MiddleName.index()], Some(1));
    b.middle = Some("k".into());
    assert_eq!(
        compare(&a, &b)[Field::MiddleName.index()],
        Some(Field::MiddleName.differs())
    );
    let model = Model::priors();
    b.middle = Some("w".into());
    assert!(
        model.score(&a, &b).weight
            > model
                .score(&a, &{
                    let mut c = b.clone();
                    c.middle = Some("k".into());
                    c
                })
                .weight
    );
}

#[test]
fn missing_fields_are_no_evidence() {
    let model = Model::priors();
    let a = record("1", "петров", "иван", "ильич");
    let mut b = a.clone();
    b.middle = None;
    b.sex = None;
    let s = model.score(&a, &b);
    assert_eq!(s.contributions[Field::MiddleName.index()], None);
    assert_eq!(s.contributions[Field::Sex.index()], None);
    assert_eq!(s.contributions[Field::Phone.index()], None);
}

#[test]
fn a_feminine_surname_form_is_not_a_typo() {
    let a = record("1", "петров", "иван", "ильич");
    let b = record("2", "петрова", "иван", "ильич");
    assert_eq!(compare(&a, &b)[Field::LastName.index()], Some(1));
}

/// A woman who took her husband's surname and got a passport for it: her
/// records before and after share the SNILS and link; another surname is
/// weaker evidence on two women's records than on two men's.
#[test]
fn a_married_woman_links_by_her_snils_with_another_surname_and_passport() {
    let model = Model::priors();
    let t = Thresholds::default();
    let mut before = record("1", "соколова", "анна", "петровна");
    before.sex = Some('F');
    before.snils = Some("11223344595".into());
    before.docs = vec![passport("4500", "123456")];
    let mut after = before.clone();
    after.source_id = "2".into();
    after.last = Some("морозова".into());
    after.last_parts = vec!["морозова".into()];
    // Born 1980: the passport of 20 made in 2000, the new one in 2007.
    after.docs = vec![passport("4507", "654321")];
    let levels = compare(&before, &after);
    assert_eq!(
        levels[Field::LastName.index()],
        Some(4),
        "differs_both_women"
    );
    assert_eq!(levels[Field::Passport.index()], Some(2), "replaced");
    let o = model.decide(&before, &after, &t).expect("a decision");
    assert_eq!(o.decision, Decision::Link, "{:?}", o.scored);
    let (mut his, mut other) = (before.clone(), after.clone());
    his.sex = Some('M');
    other.sex = Some('M');
    let men = compare(&his, &other)[Field::LastName.index()];
    assert_eq!(men, Some(Field::LastName.differs()));
    let surname = |s: super::params::Scored| s.contributions[Field::LastName.index()].unwrap();
    assert!(surname(model.score(&before, &after)) > surname(model.score(&his, &other)));
}

/// A model stored before the surname gained `differs_both_women` weighs it
/// as "differs": the same decisions until it is trained again.
#[test]
fn a_model_stored_before_a_level_was_added_weighs_it_as_differs() {
    let mut old = Model::priors();
    let last = &mut old.fields[Field::LastName.index()];
    last.m.remove(4);
    last.u.remove(4);
    let (m, u) = (last.m[4], last.u[4]);
    let upgraded = old.with_current_levels();
    let last = &upgraded.fields[Field::LastName.index()];
    assert_eq!(last.m.len(), Field::LastName.levels().len());
    assert_eq!((last.m[4], last.u[4]), (m, u));
    assert_eq!((last.m[5], last.u[5]), (m, u));
    assert_eq!(upgraded.clone().with_current_levels(), upgraded);
}

/// Birth dates far apart are two people, unless the pair holds one
/// identifier exactly and agrees on the names: then the birth date was
/// typed wrong on one side and the model weighs it. A parent's document
/// on a child's record (another first name, or a son named after his
/// father with another patronymic) stays a conflict.
#[test]
fn a_wrong_birth_date_is_weighed_when_identifier_and_names_agree() {
    use super::params::guard;
    let mut a = record("1", "кузнецов", "иван", "петрович");
    a.snils = Some("11223344595".into());
    let mut b = a.clone();
    b.source_id = "2".into();
    b.birth = NaiveDate::from_ymd_opt(1957, 11, 3);
    let blocked = |x: &Features, y: &Features| guard(x, y, &compare(x, y));
    assert_eq!(blocked(&a, &b), None);
    let mut child = b.clone();
    child.first = Some("олег".into());
    assert_eq!(blocked(&a, &child), Some("birth_date_differs"));
    let mut son = b.clone();
    son.middle = Some("иванович".into());
    assert_eq!(blocked(&a, &son), Some("birth_date_differs"));
    // Without the shared identifier it is a conflict, as before.
    let mut unshared = b.clone();
    unshared.snils = None;
    assert_eq!(blocked(&a, &unshared), Some("birth_date_differs"));
}

/// Random record pairs hold matches too; u is estimated again without
/// them, so an identifier shared by one person's many records is not
/// taken for a common coincidence.
#[test]
fn u_leaves_out_the_matches_among_random_pairs() {
    let truth = synth::febrl::records("febrl1").expect("febrl1");
    let records: Vec<Features> = truth
        .iter()
        .map(|t| Features::of(&SourceRow::of_record(t.source, &t.source_id, &t.record)))
        .collect();
    let options = Options {
        random_pairs: 200_000,
        ..Options::default()
    };
    let trained = train::train(&records, &Model::priors(), &options, &mut |_| {});
    // 500 true pairs among 499,500: about one random pair in 1,000 is one
    // person; nearly all share their ID number, two people almost never.
    let document = &trained.model.fields[Field::OtherDocument.index()];
    assert!(document.u[0] < 1e-4, "u of an equal ID: {}", document.u[0]);
}

/// A person's duplicate records count as one holder of their names: a
/// name is counted once per distinct birth date among its records, and a
/// record without a birth date on its own.
#[test]
fn name_frequencies_count_people_not_duplicate_records() {
    let mut records = vec![
        record("1", "чайковский", "модест", "ильич"),
        record("2", "чайковский", "модест", "ильич"),
        record("3", "чайковский", "модест", "ильич"),
        record("4", "иванов", "модест", "ильич"),
    ];
    let mut other = record("5", "иванов", "петр", "ильич");
    other.birth = NaiveDate::from_ymd_opt(1990, 1, 2);
    records.push(other);
    for id in ["6", "7"] {
        let mut undated = record(id, "иванов", "петр", "ильич");
        undated.birth = None;
        records.push(undated);
    }
    let f = train::frequencies(&records);
    let count = |field: &str, value: &str| f.counts[field][value];
    assert_eq!(f.records, 7);
    assert_eq!(count("last_name", "чайковский"), 1);
    assert_eq!(count("last_name", "иванов"), 4);
    assert_eq!(count("first_name", "модест"), 1);
    assert_eq!(count("first_name", "петр"), 3);
    assert_eq!(count("middle_name", "ильич"), 4);
    assert_eq!(f.total(Field::LastName), 5);
    assert_eq!(f.total(Field::FirstName), 4);
    assert_eq!(f.total(Field::MiddleName), 4);
    // The share of a name is of the people counted for its field.
    let mut model = Model::priors();
    model.frequencies = f;
    let a = record("1", "чайковский", "модест", "ильич");
    let s = model.score(&a, &a.clone());
    let m = model.fields[Field::LastName.index()].m[0];
    let expected = (m / (1.0 / 5.0)).log2();
    let got = s.contributions[Field::LastName.index()].unwrap();
    assert!((got - expected).abs() < 1e-9, "{got} against {expected}");
}

/// The fields' totals are stored with the parameters (the counts have a
/// table of their own); a model stored before totals were kept takes the
/// records as every field's total.
#[test]
fn frequency_totals_travel_with_the_parameters() {
    let mut model = Model::priors();
    model.frequencies = train::frequencies(&[
        record("1", "иванов", "петр", "ильич"),
        record("2", "петров", "петр", "ильич"),
    ]);
    let params = serde_json::to_value(&model).unwrap();
    assert!(!params.to_string().contains("иванов"));
    let back: Model = serde_json::from_value(params.clone()).unwrap();
    assert_eq!(back.frequencies.total(Field::LastName), 2);
    assert_eq!(back.frequencies.total(Field::FirstName), 1);
    assert!(back.frequencies.counts.is_empty());
    let mut old = params;
    old.as_object_mut().unwrap().remove("frequencies");
    let mut old: Model = serde_json::from_value(old).unwrap();
    old.frequencies.records = 40;
    assert_eq!(old.frequencies.total(Field::FirstName), 40);
}

/// The evidence as a JSON tree, as it was built before it was serialized
/// straight from structs.
fn evidence_tree(version: Option<i64>, o: &super::ModelOutcome) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    for field in super::FIELDS {
        if let (Some(level), Some(w)) = (
            o.scored.levels[field.index()],
            o.scored.contributions[field.index()],
        ) {
            fields.insert(
                field.name().into(),
                serde_json::json!({
                    "level": field.levels()[level as usize],
                    "weight": (w * 100.0).round() / 100.0,
                }),
            );
        }
    }
    let mut e = serde_json::json!({
        "model_version": version,
        "probability": o.scored.probability,
        "weight": (o.scored.weight * 100.0).round() / 100.0,
        "fields": fields,
    });
    if let Some(why) = o.blocked_by {
        e["blocked_by"] = why.into();
    }
    e
}

/// The stored text is the one the JSON tree gives, byte for byte, for the
/// decided pairs of generated records (with and without `blocked_by`).
#[test]
fn evidence_text_is_the_json_tree_text() {
    let records = generated(300);
    let model = Model::priors();
    let t = Thresholds::default();
    let mut seen = std::collections::HashSet::new();
    for (i, a) in records.iter().enumerate() {
        for b in &records[i + 1..] {
            let Some(o) = model.decide(a, b, &t) else {
                continue;
            };
            for version in [None, Some(3)] {
                let text = super::params::evidence(version, &o);
                assert_eq!(text, evidence_tree(version, &o).to_string());
            }
            seen.insert(o.blocked_by.is_some());
        }
    }
    assert_eq!(seen.len(), 2, "pairs with and without a guard");
}
