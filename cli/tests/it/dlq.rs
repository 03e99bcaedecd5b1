//! `etl dlq` with a cause an operator can fix: PostgreSQL rejects one
//! record (a CHECK constraint of the test's), the loader sets only that one
//! aside (`database_rejected`) while its batch loads; the constraint is
//! dropped, `etl dlq retry` re-submits it through the normal path and it
//! lands in `source_records`. Personal data only with
//! `--show-personal-data`; `drop` closes a dead letter without retrying.

use std::time::Duration;

use chrono::Utc;
use proto::{Envelope, PatientRecord};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);

use crate::common;
use common::{etl, run};

fn record(id: usize) -> Envelope {
    let record = PatientRecord {
        last_name: Some(format!("Surname{id}")),
        ..Default::default()
    };
    Envelope::upsert("qms", format!("{id}"), 1, Utc::now(), record)
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn dead_letter_retried_after_its_cause_is_fixed_and_dropped() {
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl(&db, &stream, &["migrate"]);
    // The "bug": PostgreSQL refuses record 7 (as a too-strict constraint or
    // a wrong mapping table would).
    sqlx::query(
        "ALTER TABLE source_records ADD CONSTRAINT test_refuses_7 CHECK (source_id <> '7')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let consumer = testkit::unique("loader");
    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        &consumer,
    ));
    testkit::publish_all(&js, &stream, (0..20).map(record)).await;
    testkit::wait_until(WAIT, "19 loaded, 1 dead letter", || async {
        testkit::count_records(&pool).await == 19
            && count(&pool, "SELECT count(*) FROM dead_letters").await == 1
    })
    .await;

    // Listed with its reason and identifiers, no personal data.
    let listed = etl(&db, &stream, &["dlq", "list"]);
    assert!(listed.contains("database_rejected"), "{listed}");
    assert!(
        listed.contains("test_refuses_7"),
        "the reason names the constraint: {listed}"
    );
    assert!(!listed.contains("Surname7"), "{listed}");
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["reason_code"], "database_rejected");
    assert_eq!(list[0]["source"], "qms");
    assert_eq!(list[0]["source_id"], "7");
    let id = list[0]["id"].as_i64().unwrap().to_string();
    // The message's traceparent is kept, so that the retry joins its trace.
    let traceparent = list[0]["traceparent"]
        .as_str()
        .expect("the dead letter keeps the message's traceparent")
        .to_string();
    assert!(
        proto::trace::TraceParent::parse(&traceparent).is_some(),
        "{traceparent}"
    );

    // `show`: identifiers and reason; the record only when asked.
    let shown = etl(&db, &stream, &["dlq", "show", &id]);
    assert!(shown.contains("database_rejected"), "{shown}");
    assert!(!shown.contains("Surname7"), "personal data hidden: {shown}");
    assert!(shown.contains("--show-personal-data"), "{shown}");
    let views = "SELECT count(*) FROM personal_data_access WHERE command = 'dlq show'";
    assert_eq!(
        count(&pool, views).await,
        0,
        "nothing shown, nothing logged"
    );
    let shown = etl(&db, &stream, &["dlq", "show", &id, "--show-personal-data"]);
    assert!(shown.contains("Surname7"), "{shown}");
    // The view is in the access log, by identifiers only.
    assert_eq!(count(&pool, views).await, 1);
    let logged: (String, Vec<String>) =
        sqlx::query_as("SELECT subject, records FROM personal_data_access")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(logged.0, format!("dead letter {id}"));
    assert!(!format!("{logged:?}").contains("Surname7"), "{logged:?}");

    // The cause fixed, the retry goes through the normal path and lands.
    sqlx::query("ALTER TABLE source_records DROP CONSTRAINT test_refuses_7")
        .execute(&pool)
        .await
        .unwrap();
    let retried = etl(&db, &stream, &["dlq", "retry", &id]);
    assert!(retried.contains("1 dead letters re-submitted"), "{retried}");
    testkit::wait_until(WAIT, "the retried record loaded", || async {
        testkit::count_records(&pool).await == 20
    })
    .await;
    let last_name: Option<String> =
        sqlx::query_scalar("SELECT last_name FROM source_records WHERE source_id = '7'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_name.as_deref(), Some("Surname7"));
    let change_trace: Option<String> = sqlx::query_scalar(
        "SELECT traceparent FROM record_changes WHERE source_id = '7' ORDER BY change_id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        change_trace.as_deref(),
        Some(traceparent.as_str()),
        "the retried record's change is in the original message's trace"
    );
    let open = etl(&db, &stream, &["dlq", "list"]);
    assert!(open.contains("0 dead letters"), "no longer open: {open}");
    let retried = etl(&db, &stream, &["dlq", "list", "--status", "retried"]);
    assert!(retried.contains("database_rejected"), "{retried}");
    assert!(
        !run(&db, &stream, &["dlq", "retry", &id]).status.success(),
        "a retried dead letter is not retried twice"
    );

    // Known garbage: dropped (kept for the audit, never retried).
    testkit::publish_raw(&js, stream.subject("qms"), b"garbage".to_vec()).await;
    testkit::wait_until(WAIT, "the garbage dead-lettered", || async {
        count(
            &pool,
            "SELECT count(*) FROM dead_letters WHERE status = 'open'",
        )
        .await
            == 1
    })
    .await;
    loader.stop().await;
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    assert_eq!(list[0]["reason_code"], "undecodable");
    let garbage = list[0]["id"].as_i64().unwrap().to_string();
    etl(&db, &stream, &["dlq", "drop", &garbage]);
    assert!(etl(&db, &stream, &["dlq", "list"]).contains("0 dead letters"));
    let dropped: serde_json::Value = serde_json::from_str(&etl(
        &db,
        &stream,
        &["dlq", "list", "--status", "dropped", "--json"],
    ))
    .unwrap();
    assert_eq!(dropped[0]["id"].as_i64().unwrap().to_string(), garbage);
    assert!(
        !run(&db, &stream, &["dlq", "retry", &garbage])
            .status
            .success(),
        "a dropped dead letter cannot be retried"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 2);
}

/// `etl dlq list` escapes what it prints: a dead letter whose identifiers
/// and reason hold ESC sequences and newlines (as rows written before the
/// loader escaped them could) prints as one line, without a control byte.
#[tokio::test]
async fn dlq_list_escapes_control_characters() {
    let stream = testkit::unique_stream();
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl(&db, &stream, &["migrate"]);
    sqlx::query(
        "INSERT INTO dead_letters (stream, stream_seq, subject, source, source_id, reason_code,
                                   reason, payload, delivered)
         VALUES ($1, 1, 'patients.qms', 'qms', $2, 'source_id_control_character', $3, '\\x00', 1)",
    )
    .bind(&stream.name)
    .bind("7\u{1b}[2J\n     2         1     0 qms        fake")
    .bind("reason\r\u{1b}[31m")
    .execute(&pool)
    .await
    .unwrap();
    let listed = etl(&db, &stream, &["dlq", "list"]);
    assert!(
        !listed.contains('\u{1b}') && !listed.contains('\r'),
        "{listed:?}"
    );
    assert_eq!(
        listed.lines().count(),
        3,
        "header, one row, count: {listed:?}"
    );
    assert!(listed.contains("7\\u{1b}[2J\\n"), "{listed:?}");
    assert!(listed.contains("reason\\r\\u{1b}[31m"), "{listed:?}");
}
