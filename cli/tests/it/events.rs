//! `etl events replay`: a range of the matcher's person events published
//! again, by id or from a time, marked as a replay; events the relay has not
//! published yet are left to it.

use std::process::Command;

use crate::common::etl;

#[tokio::test]
async fn events_replay_publishes_a_range_again() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    etl(&db, &stream, &["migrate"]);
    let pool = testkit::pool(&db).await;
    sqlx::query(
        "INSERT INTO person_events (kind, person_id, records)
         SELECT 'created', p, '[{\"source\": \"qms\", \"source_id\": \"1\", \"from_person_id\": null}]'
         FROM generate_series(1, 5) p",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The relay published the first four.
    sqlx::query("UPDATE person_event_relay SET published_up_to = 4")
        .execute(&pool)
        .await
        .unwrap();
    let events_stream = format!("{}_PERSONS", stream.name);
    let prefix = format!("{}-persons", stream.subject_prefix);
    let replay = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_etl"))
            .args(["events", "replay"])
            .args(args)
            .envs(testkit::service_env(&db, &stream))
            .env("ETL__EVENTS__STREAM", &events_stream)
            .env("ETL__EVENTS__SUBJECT_PREFIX", &prefix)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = replay(&["--from-id", "2", "--to-id", "3"]);
    assert!(
        printed.contains("replayed 2 person events, ids 2..=3"),
        "{printed}"
    );
    let printed = replay(&["--from-time", "2000-01-01T00:00:00Z"]);
    assert!(
        printed.contains("replayed 4 person events, ids 1..=4"),
        "{printed}"
    );

    let messages = testkit::stream_messages(&js, &events_stream).await;
    let ids: Vec<i64> = messages
        .iter()
        .map(|m| {
            assert_eq!(m.subject.as_str(), format!("{prefix}.created"));
            assert!(m.headers.as_ref().unwrap().get("Etl-Replay").is_some());
            let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            event["event_id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        [2, 3, 1, 2, 3, 4],
        "the unpublished event 5 is the relay's"
    );
}
