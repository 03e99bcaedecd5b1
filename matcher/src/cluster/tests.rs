//! The chaining guard's birth-date exceptions, on hand-made records.

use chrono::NaiveDate;

use super::{cluster, Edge, EdgeKind, Guards, Input};
use crate::features::{Doc, Features};
use crate::model::tests::{passport, record};

/// A record whose birth date was typed wrong joins its person on a shared
/// passport and its names; another record of that person, with the right
/// birth date and no passport, then joins too (the union holds no birth
/// date the person did not hold already); a record born on a third day
/// does not.
#[test]
fn a_person_holding_a_wrong_birth_date_takes_its_other_records() {
    let born = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
    let mut right = record("1", "соколов", "андрей", "викторович");
    right.docs = vec![passport("4510", "555555")];
    let wrong = Features {
        source_id: "2".into(),
        birth: born(1975, 9, 30),
        ..right.clone()
    };
    let other = Features {
        docs: vec![],
        ..record("3", "соколов", "андрей", "викторович")
    };
    let third = Features {
        birth: born(1990, 1, 1),
        ..record("4", "соколов", "андрей", "викторович")
    };
    let nodes = vec![right, wrong, other, third];
    let edge = |a, b, rule: &str, score| Edge {
        a,
        b,
        kind: EdgeKind::Rule,
        rule: rule.into(),
        score,
    };
    let out = cluster(Input {
        nodes: &nodes,
        guards: Guards::Model,
        edges: vec![
            edge(0, 1, "document", 20.0),
            edge(0, 2, "model", 15.0),
            edge(2, 3, "model", 10.0),
        ],
        keep_apart: &Default::default(),
    });
    assert_eq!(out.cluster_of, vec![0, 0, 0, 3]);
    let refused: Vec<_> = out.refused.iter().map(|r| (r.a, r.b, r.reason)).collect();
    assert_eq!(refused, vec![(2, 3, "chain_birth_date_differs")]);
}

/// A record whose birth date was typed wrong, alone, joins a person of two
/// records on a SNILS it shares with one of them and its names, although
/// the other record (no SNILS) has the right birth date too; a person of
/// two records does not join that way.
#[test]
fn a_record_with_a_wrong_birth_date_joins_a_person_on_an_identifier() {
    let snils = "11223344595";
    let mut right = record("1", "соколов", "андрей", "викторович");
    right.docs = vec![passport("4510", "555555")];
    right.snils = Some(snils.into());
    let other = Features {
        source_id: "2".into(),
        snils: None,
        ..right.clone()
    };
    let wrong = Features {
        source_id: "3".into(),
        docs: vec![],
        birth: NaiveDate::from_ymd_opt(1975, 9, 30),
        ..right.clone()
    };
    // Another record with the same wrong birth date, sharing a document
    // with it: the two are linked first.
    let id = Doc {
        doc_type: proto::DocumentType::FOREIGN_NATIONAL_ID.0,
        series: String::new(),
        number: "7700123".into(),
    };
    let wrong_pair = Features {
        docs: vec![id.clone()],
        ..wrong.clone()
    };
    let wrong_too = Features {
        source_id: "4".into(),
        docs: vec![id],
        ..wrong.clone()
    };
    let edge = |a, b, rule: &str| Edge {
        a,
        b,
        kind: EdgeKind::Rule,
        rule: rule.into(),
        score: 20.0,
    };
    let alone = cluster(Input {
        nodes: &[right.clone(), other.clone(), wrong.clone()],
        guards: Guards::Model,
        edges: vec![edge(0, 1, "document"), edge(0, 2, "snils")],
        keep_apart: &Default::default(),
    });
    assert_eq!(alone.cluster_of, vec![0, 0, 0]);
    // Two records agreeing on the other birth date are not a typo.
    let two = cluster(Input {
        nodes: &[right, other, wrong_pair, wrong_too],
        guards: Guards::Model,
        edges: vec![
            edge(0, 1, "document"),
            edge(2, 3, "document"),
            edge(0, 2, "snils"),
        ],
        keep_apart: &Default::default(),
    });
    assert_eq!(two.cluster_of, vec![0, 0, 2, 2]);
    assert_eq!(two.refused[0].reason, "chain_birth_date_differs");
}
