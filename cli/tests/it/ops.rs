//! The operator commands against real NATS and PostgreSQL: the `etl` binary
//! run as an operator would, pointed at this test's database and stream.

use std::time::Duration;

use chrono::Utc;
use etl_runtime::database::DatabaseSettings;
use proto::{Envelope, PatientRecord};
use sqlx::PgPool;

use crate::common;
use common::etl;

fn record(id: usize, version: i64) -> Envelope {
    let record = PatientRecord {
        last_name: Some(format!("Name{id}v{version}")),
        ..Default::default()
    };
    Envelope::upsert("qms", format!("{id}"), version, Utc::now(), record)
}

/// Everything of source_records but load-time provenance (times, sequence).
async fn content(pool: &PgPool) -> Vec<(String, String, Option<String>, i64, Vec<u8>, bool)> {
    sqlx::query_as(
        "SELECT source, source_id, last_name, source_version, content_hash, deleted_at IS NULL
         FROM source_records ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn replay_rebuild_dead_letters_and_status() {
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let db = testkit::fresh_database().await;
    let consumer = testkit::unique("loader");
    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        &consumer,
    ));
    let envelopes = (0..50)
        .map(|i| record(i, 1))
        .chain((0..10).map(|i| record(i, 2)));
    testkit::publish_all(&js, &stream, envelopes).await;
    testkit::publish_raw(&js, stream.subject("qms"), b"not an envelope".to_vec()).await;
    let pool = testkit::pool(&db).await;
    // The loader applies the migrations when it starts.
    testkit::wait_until(Duration::from_secs(30), "migrated", || async {
        sqlx::query("SELECT 1 FROM dead_letters LIMIT 1")
            .fetch_optional(&pool)
            .await
            .is_ok()
    })
    .await;
    testkit::wait_until(Duration::from_secs(30), "loaded", || async {
        let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap();
        testkit::count_records(&pool).await == 50 && dead == 1
    })
    .await;
    let original = content(&pool).await;
    // An extractor's last successful sync on this test's stream.
    let sync_key = "infoclinica/north";
    let sync = etl_runtime::sync_status::Sync {
        kind: "delta",
        published: 7,
        deleted: 2,
    };
    etl_runtime::sync_status::record_in(&js, 1, &stream.name, "infoclinica", Some("north"), sync)
        .await;

    // Status: stream, the loader's consumer, the dead letter, the last sync.
    let status: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["status", "--json"])).unwrap();
    let last = status["last_syncs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == sync_key)
        .expect("last sync listed");
    assert_eq!(
        (&last["kind"], &last["published"], &last["deleted"]),
        (&"delta".into(), &7.into(), &2.into())
    );
    assert_eq!(status["stream"]["messages"], 61);
    let c = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == consumer.as_str())
        .expect("loader consumer listed");
    assert_eq!(c["pending"], 0);
    assert_eq!(status["dead_letters"][0]["reason"], "undecodable");
    assert_eq!(status["dead_letters"][0]["count"], 1);
    loader.stop().await;

    // A range replay into the loaded database changes nothing.
    etl(
        &db,
        &stream,
        &["replay", "--from-seq", "20", "--to-seq", "55"],
    );
    assert_eq!(content(&pool).await, original);

    // A rebuild into an empty database gives the same state; a second
    // rebuild is refused.
    let empty = testkit::fresh_database().await;
    etl(&empty, &stream, &["migrate"]);
    etl(&empty, &stream, &["replay", "--rebuild"]);
    let rebuilt = testkit::pool(&empty).await;
    assert_eq!(content(&rebuilt).await, original);
    let again = common::run(&empty, &stream, &["replay", "--rebuild"]);
    assert!(!again.status.success());

    // Dead letters: listed without payload, retried (re-published: here the
    // cause is not fixable, so the loader sets it aside again), dropped.
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    let id = list[0]["id"].as_i64().unwrap();
    assert_eq!(list[0]["reason_code"], "undecodable");
    let shown = etl(&db, &stream, &["dlq", "show", &id.to_string()]);
    assert!(!shown.contains("6e6f7420616e"), "payload hidden by default");
    etl(&db, &stream, &["dlq", "retry", &id.to_string()]);
    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        &consumer,
    ));
    testkit::wait_until(
        Duration::from_secs(30),
        "retried message dead-lettered again",
        || async {
            let open: i64 =
                sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE status = 'open'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            open == 1
        },
    )
    .await;
    loader.stop().await;
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM dead_letters ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["retried", "open"]);
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    let open_id = list[0]["id"].as_i64().unwrap();
    etl(&db, &stream, &["dlq", "drop", &open_id.to_string()]);
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
}

/// `etl migrate`: the schema owner's step before new service versions start
/// (compose's one-shot `migrate` service runs it).
#[tokio::test]
async fn migrate_applies_the_schema_once_and_is_idempotent() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let first = etl(&db, &stream, &["migrate"]);
    assert!(first.contains("the schema is up to date"), "{first}");
    assert!(first.contains("source records"), "{first}");
    let pool = testkit::pool(&db).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_name IN ('source_records', 'persons', 'dead_letters')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
    assert_eq!(
        etl(&db, &stream, &["migrate"]),
        first,
        "a second run changes nothing"
    );
}

/// `etl dlq qms-rejects`: what the qMS extractor could not parse, listed
/// with reasons (never the text unless asked), shown, dropped.
#[tokio::test]
async fn qms_rejects_are_listed_shown_and_dropped() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    // The access log of `show --show-personal-data` lives in PostgreSQL.
    etl(&db, &stream, &["migrate"]);
    let js = testkit::jetstream(&stream).await;
    let rejects = format!("{}_REJECTS", stream.name);
    let subject = format!("{}_rejects.qms", stream.subject_prefix);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: rejects.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    for (line, reason) in [(3, "bad_line"), (7, "no_his_number"), (9, "bad_line")] {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(format!("Иванов|line {line}").into_bytes().into())
            .header("Qms-Reject-Reason", reason)
            .header("Qms-Line", line.to_string().as_str());
        js.send_publish(subject.clone(), message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let list = |db, stream| -> Vec<serde_json::Value> {
        let out = etl(
            db,
            stream,
            &["dlq", "qms-rejects", "list", "--stream", &rejects, "--json"],
        );
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let listed = list(&db, &stream);
    let reasons: Vec<&str> = listed
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["bad_line", "no_his_number", "bad_line"]);
    let text = etl(
        &db,
        &stream,
        &["dlq", "qms-rejects", "list", "--stream", &rejects],
    );
    assert!(
        text.contains("3 rejects") && !text.contains("Иванов"),
        "{text}"
    );

    let seq = listed[1]["seq"].to_string();
    let shown = etl(
        &db,
        &stream,
        &["dlq", "qms-rejects", "show", &seq, "--stream", &rejects],
    );
    assert!(
        shown.contains("no_his_number") && !shown.contains("Иванов"),
        "{shown}"
    );
    let asked = etl(
        &db,
        &stream,
        &[
            "dlq",
            "qms-rejects",
            "show",
            &seq,
            "--stream",
            &rejects,
            "--show-personal-data",
        ],
    );
    assert!(asked.contains("Иванов|line 7"), "{asked}");
    let pool = testkit::pool(&db).await;
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT subject FROM personal_data_access WHERE command = 'dlq qms-rejects show'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        logged,
        [format!("reject {seq} of {rejects}")],
        "the view is logged"
    );

    etl(
        &db,
        &stream,
        &["dlq", "qms-rejects", "drop", &seq, "--stream", &rejects],
    );
    let left: Vec<u64> = list(&db, &stream)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&listed[1]["seq"].as_u64().unwrap()));
    js.delete_stream(&rejects).await.unwrap();
}

/// A record dead-lettered out of a batch message is retried alone, as a
/// single-envelope message; a whole batch message an older loader set aside
/// (as undecodable) loads once retried into a loader that reads batches.
/// `etl replay` of batch messages applies each record as the loader does.
#[tokio::test]
async fn dlq_retry_and_replay_of_batch_messages() {
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let db = testkit::fresh_database().await;
    let consumer = testkit::unique("loader");
    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        &consumer,
    ));
    // [good 0, future birth date, good 2] in one message.
    let mut future = record(1, 1);
    future.record.as_mut().unwrap().birth_date =
        Some(Utc::now().date_naive() + chrono::Days::new(30));
    let future = Envelope::upsert("qms", "1", 1, future.observed_at, future.record.unwrap());
    let elements = [
        record(0, 1).encode(),
        future.encode(),
        record(2, 1).encode(),
    ];
    let mut payload = vec![0x93];
    for e in &elements {
        payload.extend_from_slice(e);
    }
    testkit::publish_raw(&js, stream.subject("qms"), payload).await;
    let pool = testkit::pool(&db).await;
    let open = "SELECT count(*) FROM dead_letters WHERE status = 'open'";
    testkit::wait_until(Duration::from_secs(30), "loaded", || async {
        let dead: Option<i64> = sqlx::query_scalar(open).fetch_one(&pool).await.ok();
        testkit::count_records(&pool).await == 2 && dead == Some(1)
    })
    .await;
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["dlq", "list", "--json"])).unwrap();
    assert_eq!(
        (
            &list[0]["item"],
            &list[0]["reason_code"],
            &list[0]["source_id"]
        ),
        (&1.into(), &"birth_date_in_future".into(), &"1".into())
    );
    let id = list[0]["id"].as_i64().unwrap();
    let shown = etl(
        &db,
        &stream,
        &["dlq", "show", &id.to_string(), "--show-personal-data"],
    );
    assert!(shown.contains("\"source_id\": \"1\""), "{shown}");

    // Retried: the record alone, as a single-envelope message (the cause is
    // not fixed here, so the loader sets it aside again, now as item 0 of a
    // message of its own).
    etl(&db, &stream, &["dlq", "retry", &id.to_string()]);
    let mut s = js.get_stream(&stream.name).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let republished = s.get_raw_message(last).await.unwrap();
    assert_eq!(republished.payload.as_ref(), elements[1].as_slice());
    testkit::wait_until(Duration::from_secs(30), "dead-lettered again", || async {
        let rows: Vec<(i64, i32, String)> =
            sqlx::query_as("SELECT stream_seq, item, status FROM dead_letters ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows == [(1, 1, "retried".into()), (last as i64, 0, "open".into())]
    })
    .await;

    // A whole batch message an older loader dead-lettered as undecodable:
    // retried, it loads.
    let batch = [record(10, 1), record(11, 1), record(12, 1)];
    let mut whole = vec![0x93];
    for e in &batch {
        whole.extend_from_slice(&e.encode());
    }
    let old_id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (stream, stream_seq, subject, reason_code, reason, payload, delivered)
         VALUES ($1, 999999, $2, 'undecodable', 'undecodable message', $3, 1) RETURNING id",
    )
    .bind(&stream.name)
    .bind(stream.subject("qms"))
    .bind(&whole)
    .fetch_one(&pool)
    .await
    .unwrap();
    etl(&db, &stream, &["dlq", "retry", &old_id.to_string()]);
    testkit::wait_until(Duration::from_secs(30), "the old batch loaded", || async {
        testkit::count_records(&pool).await == 5
    })
    .await;
    loader.stop().await;
    let original = content(&pool).await;

    // A replay of everything into an empty database: the same records and
    // the same dead letter (item 1 of the first message, item 0 of the
    // retried one).
    let empty = testkit::fresh_database().await;
    etl(&empty, &stream, &["migrate"]);
    etl(&empty, &stream, &["replay", "--rebuild"]);
    let rebuilt = testkit::pool(&empty).await;
    assert_eq!(content(&rebuilt).await, original);
    let dead: Vec<(i64, i32)> =
        sqlx::query_as("SELECT stream_seq, item FROM dead_letters ORDER BY stream_seq")
            .fetch_all(&rebuilt)
            .await
            .unwrap();
    assert_eq!(dead, [(1, 1), (last as i64, 0)]);
}

/// `etl sources`: registered sources listed, a new one registered once;
/// `etl import` refuses a source that is not registered and says how.
#[tokio::test]
async fn sources_are_registered_and_import_refuses_an_unregistered_one() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    etl(&db, &stream, &["migrate"]);
    let listed = etl(&db, &stream, &["sources", "list"]);
    assert!(
        listed.contains("qms") && listed.contains("infoclinica") && listed.contains("2 sources"),
        "the shipped sources are registered by the schema: {listed}"
    );

    let file = std::env::temp_dir().join(format!("{}.ndjson", testkit::unique("import")));
    std::fs::write(
        &file,
        "{\"source_id\": \"1\", \"record\": {\"last_name\": \"Импортов\"}}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let refused = common::run(&db, &stream, &["import", "--source", "lab", path]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not registered") && stderr.contains("etl sources register lab"),
        "{stderr}"
    );

    let registered = etl(
        &db,
        &stream,
        &[
            "sources",
            "register",
            "lab",
            "--description",
            "the lab's system",
        ],
    );
    assert!(registered.contains("source lab registered"), "{registered}");
    let again = etl(&db, &stream, &["sources", "register", "lab"]);
    assert!(again.contains("registered already"), "{again}");
    let listed = etl(&db, &stream, &["sources", "list"]);
    assert!(
        listed.contains("lab") && listed.contains("the lab's system"),
        "{listed}"
    );
    let imported = etl(&db, &stream, &["import", "--source", "lab", path]);
    assert!(imported.contains("imported 1 records"), "{imported}");
    let bad = common::run(&db, &stream, &["sources", "register", "Bad.Name"]);
    assert!(!bad.status.success());
    std::fs::remove_file(&file).ok();
}

/// Validity is computed by the loader from the values: an imported SNILS
/// that fails its checksum but is marked valid is stored invalid, and the
/// two different people who share it (and a birth date) are not linked —
/// on the message's word they were.
#[tokio::test]
async fn a_bad_snils_claimed_valid_links_nothing() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    testkit::jetstream(&stream).await;
    etl(&db, &stream, &["migrate"]);
    let pool = testkit::pool(&db).await;
    let file = std::env::temp_dir().join(format!("{}.ndjson", testkit::unique("claims")));
    let line = |id: &str, first: &str, middle: &str, birth: &str| {
        format!(
            "{{\"source_id\": \"{id}\", \"record\": {{\"last_name\": \"Тестов\", \"first_name\": \"{first}\", \
             \"middle_name\": \"{middle}\", \"birth_date\": \"{birth}\", \"sex\": \"M\", \
             \"snils\": {{\"value\": \"11223344596\"}}}}}}\n"
        )
    };
    std::fs::write(
        &file,
        line("1", "Иван", "Петрович", "1980-01-01") + &line("2", "Олег", "Сидорович", "1980-01-01"),
    )
    .unwrap();
    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        &testkit::unique("loader"),
    ));
    etl(
        &db,
        &stream,
        &["import", "--source", "qms", file.to_str().unwrap()],
    );
    testkit::wait_until(Duration::from_secs(30), "2 records loaded", || async {
        testkit::count_records(&pool).await == 2
    })
    .await;
    loader.stop().await;
    std::fs::remove_file(&file).ok();

    let valid: Vec<Option<bool>> =
        sqlx::query_scalar("SELECT snils_valid FROM source_records ORDER BY source_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(valid, [Some(false), Some(false)]);
    etl(&db, &stream, &["rematch"]);
    let persons: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT person_id) FROM person_memberships WHERE valid_to IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(persons, 2, "the two people are not linked");
}

/// `etl` with a host list connects to the first server that answers and
/// accepts writes, as the services do: here the first host refuses
/// connections (nothing listens on its port).
#[tokio::test]
async fn etl_connects_to_the_first_host_that_answers() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let listed = DatabaseSettings {
        host: format!("127.0.0.1:1,{}:{}", db.host, db.port),
        ..db.clone()
    };
    let migrated = etl(&listed, &stream, &["migrate"]);
    assert!(migrated.contains("the schema is up to date"), "{migrated}");
    // A command that checks the schema first, on the same server.
    etl(&listed, &stream, &["sources", "list"]);
}
