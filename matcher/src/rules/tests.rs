//! Each rule and each conflict on hand-made records.

use chrono::NaiveDate;

use super::*;
use crate::features::{Doc, Features};

fn person() -> Features {
    Features {
        source: "qms".into(),
        source_id: "1".into(),
        last: Some("иванов".into()),
        last_parts: vec!["иванов".into()],
        first: Some("петр".into()),
        middle: Some("сергеевич".into()),
        birth: NaiveDate::from_ymd_opt(1990, 5, 3),
        sex: Some('M'),
        docs: vec![],
        snils: None,
        oms: None,
        phones: vec![],
        emails: vec![],
    }
}

fn other(f: &Features) -> Features {
    Features {
        source: "infoclinica".into(),
        source_id: "2".into(),
        ..f.clone()
    }
}

fn passport(series: &str, number: &str) -> Doc {
    Doc {
        doc_type: 1,
        series: series.into(),
        number: number.into(),
    }
}

fn decide(a: &Features, b: &Features) -> Option<(Decision, &'static str)> {
    evaluate(a, b, &Weights::default()).map(|o| (o.decision, o.rule))
}

#[test]
fn same_document_links_with_compatible_birth_date_and_surname() {
    let mut a = person();
    a.docs = vec![passport("4504", "123456")];
    let mut b = other(&a);
    b.first = Some("пётр".into()); // irrelevant to the identifier rule
    assert_eq!(decide(&a, &b), Some((Decision::Link, "document")));
    // Surname typo and day/month swap are still compatible.
    b.last = Some("иваноф".into());
    b.birth = NaiveDate::from_ymd_opt(1990, 3, 5);
    assert_eq!(decide(&a, &b), Some((Decision::Link, "document")));
    // A different surname: review, not link.
    b.last = Some("сидорова".into());
    b.last_parts = vec!["сидорова".into()];
    assert_eq!(decide(&a, &b), Some((Decision::Review, "document")));
    // Clearly different birth date: a conflict.
    let mut c = other(&a);
    c.birth = NaiveDate::from_ymd_opt(1971, 11, 20);
    assert_eq!(decide(&a, &c), Some((Decision::Conflict, "document")));
}

#[test]
fn birth_certificate_series_letters_matter() {
    let mut a = person();
    a.docs = vec![Doc {
        doc_type: 3,
        series: "IV-АИ".into(),
        number: "123456".into(),
    }];
    let mut b = other(&a);
    b.first = Some("иван".into());
    b.docs = vec![Doc {
        doc_type: 3,
        series: "IV-АК".into(),
        number: "123456".into(),
    }];
    // Same number, other series: different documents of one type.
    assert_eq!(decide(&a, &b), None);
}

#[test]
fn same_valid_snils_and_oms_link() {
    let mut a = person();
    a.snils = Some("11223344595".into());
    let b = other(&a);
    assert_eq!(decide(&a, &b), Some((Decision::Link, "snils")));
    let mut a = person();
    a.oms = Some("1234567890123452".into());
    let b = other(&a);
    assert_eq!(decide(&a, &b), Some((Decision::Link, "oms")));
}

#[test]
fn two_different_snils_are_a_conflict() {
    let mut a = person();
    a.snils = Some("11223344595".into());
    a.phones = vec!["79120000000".into()];
    let mut b = other(&a);
    b.snils = Some("11223344600".into());
    // Everything else equal: never linked.
    assert_eq!(decide(&a, &b), None);
    // With a shared passport too: a conflict for review.
    a.docs = vec![passport("4504", "123456")];
    b.docs = a.docs.clone();
    assert_eq!(decide(&a, &b), Some((Decision::Conflict, "document")));
}

#[test]
fn two_passports_of_one_period_are_two_people() {
    // Namesakes: same name and birth date, passports of the same years.
    let mut a = person();
    a.docs = vec![passport("4510", "123456")];
    let mut b = other(&a);
    b.docs = vec![passport("4611", "654321")];
    b.phones = vec!["79120000000".into()];
    a.phones = b.phones.clone();
    assert_eq!(decide(&a, &b), None);
}

#[test]
fn replaced_passport_links_only_with_corroboration() {
    // Born 1980: passport at 14 (1994 < 1997: exchange) — use born 1986:
    // passport at 14 in 2000, replaced at 20 in 2006.
    let mut a = person();
    a.birth = NaiveDate::from_ymd_opt(1986, 5, 3);
    a.docs = vec![passport("4500", "123456")];
    let mut b = other(&a);
    b.docs = vec![passport("4506", "654321")];
    let o = evaluate(&a, &b, &Weights::default()).unwrap();
    assert_eq!(
        o.decision,
        Decision::Review,
        "ambiguous without corroboration"
    );
    assert_eq!(o.evidence.document, Agreement::Replaced);
    a.phones = vec!["79120000000".into()];
    b.phones = a.phones.clone();
    assert_eq!(decide(&a, &b), Some((Decision::Link, "score")));
}

#[test]
fn scored_rule_names_and_dates() {
    let mut a = person();
    a.phones = vec!["79120000000".into()];
    let mut b = other(&a);
    // Exact name + birth date + phone: link.
    assert_eq!(decide(&a, &b), Some((Decision::Link, "score")));
    // Exact name and birth date alone: review (could be a namesake).
    b.phones = vec![];
    assert_eq!(decide(&a, &b), Some((Decision::Review, "score")));
    // Typo in the surname, swapped birth date, shared phone and e-mail: link.
    b.last = Some("ивонов".into());
    b.birth = NaiveDate::from_ymd_opt(1990, 3, 5);
    b.phones = a.phones.clone();
    a.emails = vec!["p@mail.ru".into()];
    b.emails = a.emails.clone();
    assert_eq!(decide(&a, &b), Some((Decision::Link, "score")));
    // Double surname against one half.
    let mut c = other(&a);
    c.last = Some("иванов-петров".into());
    c.last_parts = vec!["иванов".into(), "петров".into()];
    assert_eq!(
        evaluate(&a, &c, &Weights::default())
            .unwrap()
            .evidence
            .last_name,
        Agreement::Part
    );
}

#[test]
fn twins_are_not_linked() {
    let mut a = person();
    a.phones = vec!["79120000000".into()];
    a.emails = vec!["fam@mail.ru".into()];
    let mut b = other(&a);
    b.first = Some("алексей".into());
    assert_eq!(decide(&a, &b), None);
    // Different sex, same everything else: no link.
    let mut c = other(&a);
    c.sex = Some('F');
    c.first = Some("анна".into());
    assert_eq!(decide(&a, &c), None);
}

#[test]
fn birth_date_comparison() {
    let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
    assert_eq!(
        compare_birth(d(1990, 5, 3), d(1990, 5, 3)),
        Agreement::Exact
    );
    assert_eq!(compare_birth(d(1990, 5, 3), d(1990, 3, 5)), Agreement::Swap);
    assert_eq!(compare_birth(d(1990, 5, 3), d(1990, 5, 4)), Agreement::Typo);
    assert_eq!(compare_birth(d(1990, 5, 3), d(1991, 5, 3)), Agreement::Typo);
    assert_eq!(
        compare_birth(d(1990, 5, 3), d(1972, 11, 21)),
        Agreement::Differs
    );
    assert_eq!(compare_birth(None, d(1972, 11, 21)), Agreement::Missing);
}

#[test]
fn a_new_surname_makes_a_passport_of_any_year_a_replacement() {
    // Born 1990: passports of 14 (2004), of 20 (2010, 2011), one made at 27
    // (after a wedding, or a loss), one made at 13.
    let born = NaiveDate::from_ymd_opt(1990, 5, 3);
    let agree = |x: &str, y: &str, changed: bool| {
        passports_agree(&passport(x, "1"), &passport(y, "2"), born, born, changed)
    };
    assert!(agree("4504", "4510", false), "14 and 20");
    assert!(!agree("4510", "4511", false), "two of 20");
    assert!(
        !agree("4510", "4517", false),
        "20 and one made at 27: a loss is no proof"
    );
    assert!(
        agree("4510", "4517", true),
        "20 and one made at 27 for a new surname"
    );
    assert!(agree("4510", "4511", true), "married at 21");
    assert!(!agree("4517", "7717", true), "two made in one year");
    assert!(
        !agree("4503", "4510", true),
        "one made before 14 is not the holder's"
    );
    let unknown = passports_agree(
        &passport("4510", "1"),
        &passport("4517", "2"),
        None,
        None,
        true,
    );
    assert!(!unknown, "without a birth date nothing is plausible");
}
