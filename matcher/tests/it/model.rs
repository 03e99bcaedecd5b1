//! The learned model (`matcher.scoring = "model"`) on the real path: the
//! loader's store, PostgreSQL, the engine's incremental batches and its
//! full re-match.

use crate::common;

use common::*;
use matcher::engine::Engine;
use matcher::model::train::Options;
use matcher::settings::ScoringKind;

fn model_engine() -> Engine {
    let mut settings = matcher::Settings::default();
    settings.matcher.scoring = ScoringKind::Model;
    let mut e = matcher::service::engine(&settings);
    e.read_ahead_from = 1;
    e
}

async fn model_fixture() -> Fixture {
    let mut f = Fixture::new().await;
    f.engine = model_engine();
    f
}

fn options() -> Options {
    Options {
        random_pairs: 100_000,
        ..Options::default()
    }
}

async fn train(f: &Fixture) -> i64 {
    matcher::model::store::train_and_store(&f.pool, &options(), &mut |_| {})
        .await
        .expect("training")
}

fn rows(records: &[synth::truth::TruthRecord]) -> Vec<(&str, &str, Option<proto::PatientRecord>)> {
    records
        .iter()
        .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
        .collect()
}

/// After a training, the incremental batches (which reload the model with
/// their blocking index) give the persons a full re-match gives; every
/// pair stores its probability and each field's contribution.
#[tokio::test]
async fn incremental_matching_equals_a_full_rematch_under_a_trained_model() {
    let f = model_fixture().await;
    let records = truth(41, 300);
    let (first, second) = records.split_at(records.len() / 2);
    f.write(rows(first)).await;
    f.drain().await;
    let version = train(&f).await;
    f.write(rows(second)).await;
    f.drain().await;
    match f.engine.setup().scoring {
        matcher::engine::Scoring::Model { model, .. } => assert_eq!(model.version, Some(version)),
        other => panic!("scoring by {other:?}"),
    }
    f.assert_equals_a_rematch().await;
    let pairs = f.count("SELECT count(*) FROM match_pairs").await;
    let explained = f
        .count(
            "SELECT count(*) FROM match_pairs WHERE evidence ? 'probability' AND evidence ? 'fields'
             AND (evidence->>'model_version')::bigint IS NOT NULL",
        )
        .await;
    assert!(pairs > 0);
    assert_eq!(
        explained, pairs,
        "every pair has its probability and contributions"
    );
    let items = f
        .count("SELECT count(*) FROM review_items WHERE status = 'open'")
        .await;
    let items_explained = f
        .count(
            "SELECT count(*) FROM review_items WHERE status = 'open' AND evidence ? 'probability'",
        )
        .await;
    assert_eq!(items, items_explained);
}

/// A one-digit typo in a passport links two records that agree on
/// everything else; twins (another first name) stay apart.
#[tokio::test]
async fn a_passport_typo_links_and_twins_stay_apart() {
    let f = model_fixture().await;
    let mut twin = with_passport(adult(), "4510", "123458");
    twin.first_name = Some("Павел".into());
    f.write(vec![
        ("qms", "a", Some(with_passport(adult(), "4510", "123456"))),
        (
            "infoclinica",
            "b",
            Some(with_passport(adult(), "4510", "123457")),
        ),
        ("infoclinica", "t", Some(twin)),
    ])
    .await;
    f.drain().await;
    assert!(f.same(("qms", "a"), ("infoclinica", "b")).await);
    assert!(!f.same(("qms", "a"), ("infoclinica", "t")).await);
    assert!(!f.same(("infoclinica", "b"), ("infoclinica", "t")).await);
    f.assert_equals_a_rematch().await;
}

/// An operator's "keep apart" holds against the model, through a
/// retraining and its re-match.
#[tokio::test]
async fn operator_decisions_override_the_model() {
    let f = model_fixture().await;
    f.write(vec![
        ("qms", "a", Some(with_passport(adult(), "4510", "123456"))),
        (
            "infoclinica",
            "b",
            Some(with_passport(adult(), "4510", "123456")),
        ),
    ])
    .await;
    f.write(rows(&truth(43, 60))).await;
    f.drain().await;
    let (a, b) = (
        ("qms".to_string(), "a".to_string()),
        ("infoclinica".to_string(), "b".to_string()),
    );
    assert!(f.same(("qms", "a"), ("infoclinica", "b")).await);
    matcher::operator::decide(&f.engine, &f.pool, "keep_apart", &a, &b, "tester", None)
        .await
        .unwrap();
    assert!(!f.same(("qms", "a"), ("infoclinica", "b")).await);
    train(&f).await;
    f.engine.rematch_all(&f.pool).await.unwrap();
    assert!(!f.same(("qms", "a"), ("infoclinica", "b")).await);
    f.assert_equals_a_rematch().await;
}

/// A retraining changes persons only as any matching does: each record
/// that moves gets a new membership naming the engine and the rule, and
/// the old one is closed (never edited otherwise or deleted).
#[tokio::test]
async fn retraining_changes_persons_only_through_the_audited_path() {
    let f = model_fixture().await;
    f.write(rows(&truth(47, 200))).await;
    f.drain().await;
    let before = f.count("SELECT count(*) FROM person_memberships").await;
    let closed_before = f
        .count("SELECT count(*) FROM person_memberships WHERE valid_to IS NOT NULL")
        .await;
    train(&f).await;
    let applied = f.engine.rematch_all(&f.pool).await.unwrap();
    let after = f.count("SELECT count(*) FROM person_memberships").await;
    let closed_after = f
        .count("SELECT count(*) FROM person_memberships WHERE valid_to IS NOT NULL")
        .await;
    // Every move is one new membership and one closed one.
    assert_eq!(after - before, applied.moved as i64);
    assert_eq!(closed_after - closed_before, applied.moved as i64);
    let unexplained = f
        .count(
            "SELECT count(*) FROM person_memberships WHERE valid_to IS NULL
             AND (actor IS DISTINCT FROM 'matcher' OR rule IS NULL)",
        )
        .await;
    assert_eq!(
        unexplained, 0,
        "every current membership names the engine and a rule"
    );
    // Training alone moved nobody.
    let persons = f.partition().await;
    train(&f).await;
    assert_eq!(f.partition().await, persons);
    f.assert_equals_a_rematch().await;
}
