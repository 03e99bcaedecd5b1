//! `etl replay` as the loader writes: a batch PostgreSQL rejects is split
//! (the one record it refuses is dead-lettered, the rest land, the replay
//! goes on), and each change keeps its message's `traceparent`.

use crate::common;

use chrono::Utc;
use proto::bus::Publisher;
use proto::trace::TraceParent;
use proto::{Envelope, PatientRecord};

#[tokio::test]
async fn a_rejected_batch_is_split_and_traces_are_kept() {
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let etl = |args: &[&str]| common::etl_stderr(&db, &stream, args);

    let trace =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut publisher = Publisher::new(&js, &stream, 64).with_traceparent(trace);
    for id in 0..10 {
        let record = PatientRecord {
            last_name: Some(format!("Surname{id}")),
            ..Default::default()
        };
        publisher
            .send(&Envelope::upsert(
                "qms",
                id.to_string(),
                1,
                Utc::now(),
                record,
            ))
            .await
            .unwrap();
    }
    publisher.settle().await.unwrap();

    etl(&["migrate"]);
    sqlx::query(
        "ALTER TABLE source_records ADD CONSTRAINT test_refuses_3 CHECK (source_id <> '3')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Without a terminal the replay's progress comes as log lines.
    let config = std::env::temp_dir().join(format!("etl-replay-{}.toml", stream.name));
    std::fs::write(&config, "[log]\nprogress_interval = \"1ms\"\n").unwrap();
    let config = config.to_str().unwrap();
    let progress = etl(&["-c", config, "replay", "--from-seq", "1"]);
    assert!(progress.contains("one by one"), "{progress}");
    assert!(
        progress.contains("progress task=replay done=10 total=10"),
        "{progress}"
    );

    assert_eq!(testkit::count_records(&pool).await, 9);
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT source_id, reason_code FROM dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead, [("3".to_string(), "database_rejected".to_string())]);
    let traces: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT traceparent FROM record_changes")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(traces, [Some(trace.to_string())]);
}
