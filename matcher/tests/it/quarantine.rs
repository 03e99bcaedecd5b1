//! A poisoned change does not stop matching (promise 3): a change that
//! PostgreSQL refuses for a reason of its data is isolated, set aside as a
//! dead letter and the rest of its batch matched; the operator's retry
//! matches it once the cause is gone. Transient and systemic errors are
//! retried instead (nothing set aside).

use crate::common;

use common::*;
use matcher::engine::quarantine::{self, Fault};

/// 20 persons, each one record in qMS and one in Infoclinica linked by a
/// shared SNILS, and one more record `qms:poison` (a person of its own), in
/// the middle of the change feed.
async fn people(f: &Fixture) {
    let person = |i: u32| {
        with_snils(
            proto::PatientRecord {
                birth_date: chrono::NaiveDate::from_ymd_opt(1950 + i as i32, 3, 4),
                ..adult()
            },
            &snils(100_000_000 + i),
        )
    };
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let mut records = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i == 10 {
            let poison = proto::PatientRecord {
                last_name: Some("Отравленный".into()),
                birth_date: chrono::NaiveDate::from_ymd_opt(1940, 1, 1),
                ..adult()
            };
            records.push(("qms", "poison", Some(poison)));
        }
        records.push(("qms", id.as_str(), Some(person(i as u32))));
        records.push(("infoclinica", id.as_str(), Some(person(i as u32))));
    }
    f.write(records).await;
}

async fn all_pairs_matched(f: &Fixture) {
    for i in 0..20 {
        let id = i.to_string();
        assert!(f.same(("qms", &id), ("infoclinica", &id)).await, "pair {i}");
    }
}

type DeadLetter = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

async fn dead_letters(f: &Fixture) -> Vec<DeadLetter> {
    sqlx::query_as(
        "SELECT id, stream, subject, source, source_id, reason_code, reason, status FROM dead_letters ORDER BY id",
    )
    .fetch_all(&f.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_refused_change_is_set_aside_alone_and_retried_by_the_operator() {
    let f = Fixture::new().await;
    // A test-only cause: this record's membership is refused.
    sqlx::query(
        "ALTER TABLE person_memberships ADD CONSTRAINT refuse_poison CHECK (source_id <> 'poison') NOT VALID",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    people(&f).await;
    // The trace the loader stored with the poison's change.
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sqlx::query("UPDATE record_changes SET traceparent = $1 WHERE source_id = 'poison'")
        .bind(TRACE)
        .execute(&f.pool)
        .await
        .unwrap();

    // One batch: 41 changes, one of them refused.
    let applied = f
        .engine
        .process_batch(&f.pool, 500)
        .await
        .expect("the batch is applied")
        .expect("lock free");
    assert_eq!(applied.changes, 41);
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 0);
    all_pairs_matched(&f).await;
    assert_eq!(f.person("qms", "poison").await, None);
    let dead = dead_letters(&f).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (id, stream, subject, source, source_id, code, reason, status) = dead[0].clone();
    assert_eq!(
        (
            stream.as_str(),
            subject.as_str(),
            code.as_str(),
            status.as_str()
        ),
        (
            quarantine::STREAM,
            quarantine::STREAM,
            quarantine::REASON_CODE,
            "open"
        )
    );
    assert_eq!(
        (source.as_deref(), source_id.as_deref()),
        (Some("qms"), Some("poison"))
    );
    // The reason names the SQLSTATE, constraint and table; no values.
    assert!(reason.contains("23514"), "{reason}");
    assert!(reason.contains("refuse_poison"), "{reason}");
    assert!(reason.contains("person_memberships"), "{reason}");
    assert!(!reason.contains("Отравленный"), "{reason}");
    let kept: Option<String> =
        sqlx::query_scalar("SELECT traceparent FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(kept.as_deref(), Some(TRACE));

    // The cause is fixed; the operator retries.
    sqlx::query("ALTER TABLE person_memberships DROP CONSTRAINT refuse_poison")
        .execute(&f.pool)
        .await
        .unwrap();
    quarantine::retry(&f.pool, id).await.expect("retry");
    assert!(matches!(
        quarantine::retry(&f.pool, id).await,
        Err(quarantine::RetryError::NotOpen(..))
    ));
    let (op, status, traceparent): (String, String, Option<String>) = sqlx::query_as(
        "SELECT c.op, d.status, c.traceparent FROM record_changes c, dead_letters d WHERE d.id = $1",
    )
    .bind(id)
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!((op.as_str(), status.as_str()), ("insert", "retried"));
    assert_eq!(
        traceparent.as_deref(),
        Some(TRACE),
        "the retry stays in the trace"
    );
    f.drain().await;
    assert!(f.person("qms", "poison").await.is_some());
    all_pairs_matched(&f).await;
    assert_eq!(dead_letters(&f).await.len(), 1);
    // The same persons as a full re-match.
    assert_eq!(f.engine.rematch_all(&f.pool).await.unwrap().moved, 0);
}

#[tokio::test]
async fn a_stored_record_that_does_not_decode_is_set_aside() {
    let f = Fixture::new().await;
    people(&f).await;
    // Content the loader never writes (documents must be an array).
    sqlx::query(
        "UPDATE source_records SET documents = '{\"not\": \"an array\"}' WHERE source_id = 'poison'",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    f.drain().await;
    all_pairs_matched(&f).await;
    assert_eq!(f.person("qms", "poison").await, None);
    let dead = dead_letters(&f).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].4.as_deref(), Some("poison"));
    assert!(dead[0].6.contains("does not decode"), "{}", dead[0].6);
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 0);
}

#[tokio::test]
async fn transient_and_systemic_errors_are_retried_not_set_aside() {
    let f = Fixture::new().await;
    people(&f).await;
    // 40001: serialization failure (transient); XX000: an internal error
    // that no change can be blamed for (systemic).
    for (code, fault) in [("40001", Fault::Transient), ("XX000", Fault::Systemic)] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{code}'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON person_memberships FOR EACH ROW
                 WHEN (NEW.source_id = 'poison') EXECUTE FUNCTION refuse();"
        )))
        .execute(&f.pool)
        .await
        .unwrap();
        let error = f
            .engine
            .process_batch(&f.pool, 500)
            .await
            .expect_err("the batch fails");
        assert_eq!(Fault::of(&error), fault, "{code}");
        // Nothing applied, nothing set aside: the whole batch waits.
        assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 41);
        assert_eq!(f.count("SELECT count(*) FROM person_memberships").await, 0);
        assert!(dead_letters(&f).await.is_empty());
        sqlx::raw_sql("DROP TRIGGER refuse ON person_memberships; DROP FUNCTION refuse()")
            .execute(&f.pool)
            .await
            .unwrap();
    }
    f.drain().await;
    all_pairs_matched(&f).await;
    assert!(f.person("qms", "poison").await.is_some());
    assert!(dead_letters(&f).await.is_empty());
}
