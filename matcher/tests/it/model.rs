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

/// After a training and its re-match, the incremental batches (which
/// reload the model with their blocking index) give the persons a full
/// re-match gives; every
/// pair stores its probability and each field's contribution.
#[tokio::test]
async fn incremental_matching_equals_a_full_rematch_under_a_trained_model() {
    let f = model_fixture().await;
    let records = truth(41, 300);
    let (first, second) = records.split_at(records.len() / 2);
    f.write(rows(first)).await;
    f.drain().await;
    let version = train(&f).await;
    // As `etl model train` does: the records matched under the priors are
    // re-matched under the model.
    f.engine.rematch_all(&f.pool).await.unwrap();
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

/// A SNILS that fails its checksum links nothing, even when the record
/// (the message, or a hand edit of the stored row) says it is valid: two
/// different people sharing it and a birth date stay apart, under the
/// shipped priors and under a trained model.
#[tokio::test]
async fn a_bad_snils_claimed_valid_links_nothing() {
    let f = model_fixture().await;
    let claimed = |first: &str, middle: &str| {
        let mut r = adult();
        r.first_name = Some(first.into());
        r.middle_name = Some(middle.into());
        r.snils = Some(proto::Checked::valid("11223344596"));
        r
    };
    f.write(vec![
        ("qms", "a", Some(claimed("Иван", "Петрович"))),
        ("infoclinica", "b", Some(claimed("Олег", "Сидорович"))),
    ])
    .await;
    f.write(rows(&truth(53, 60))).await;
    // Whatever the loader made of the claim, the stored row says valid.
    sqlx::query("UPDATE source_records SET snils_valid = true WHERE source_id IN ('a', 'b')")
        .execute(&f.pool)
        .await
        .unwrap();
    f.drain().await;
    assert!(!f.same(("qms", "a"), ("infoclinica", "b")).await);
    train(&f).await;
    f.engine.rematch_all(&f.pool).await.unwrap();
    assert!(!f.same(("qms", "a"), ("infoclinica", "b")).await);
    let conflicts = f
        .count("SELECT count(*) FROM match_pairs WHERE rule = 'snils'")
        .await;
    assert_eq!(conflicts, 0, "the bad SNILS is no evidence at all");
}

/// Two trainings on the same records in PostgreSQL store the same model
/// (EM converges to one answer from the same data), and it makes sense:
/// an exact birth date is strong evidence, a different one against.
#[tokio::test]
async fn training_twice_on_the_same_records_stores_the_same_model() {
    let f = model_fixture().await;
    f.write(rows(&truth(59, 400))).await;
    f.drain().await;
    let (first, second) = (train(&f).await, train(&f).await);
    assert_ne!(first, second, "each training is a version of its own");
    let mut conn = f.pool.acquire().await.unwrap();
    let mut a = matcher::model::store::load(&mut conn, first).await.unwrap();
    let b = matcher::model::store::load(&mut conn, second)
        .await
        .unwrap();
    a.version = b.version;
    assert_eq!(a, b);
    let birth = &a.fields[matcher::model::Field::BirthDate.index()];
    assert!((birth.m[0] / birth.u[0]).log2() > 8.0);
    assert!((birth.m[3] / birth.u[3]).log2() < -3.0);
}
