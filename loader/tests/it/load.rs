//! The loader against the real NATS JetStream and PostgreSQL, in process.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use proto::{bus, Envelope, PatientRecord};

#[tokio::test]
async fn ten_thousand_records_through_one_loader() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let envelopes = generated(1, 10_000, 1);
    assert_eq!(
        testkit::publish_all(&js, &stream, envelopes.clone()).await,
        10_000
    );

    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(120)).await;
    let summary = loader.stop().await;

    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(summary.written.inserted, 10_000);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM record_changes WHERE op = 'insert'"
        )
        .await,
        10_000
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);

    // Fields land as normalized text: documents keep leading zeros and
    // letter series, identifiers their validity.
    let sample = &envelopes[42];
    let record = sample.record.as_ref().unwrap();
    let (last_name, birth_date, documents, snils_valid): (Option<String>, Option<chrono::NaiveDate>, serde_json::Value, Option<bool>) =
        sqlx::query_as("SELECT last_name, birth_date, documents, snils_valid FROM source_records WHERE source_id = $1")
            .bind(&sample.source_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_name, record.last_name);
    assert_eq!(birth_date, record.birth_date);
    assert_eq!(documents, serde_json::to_value(&record.documents).unwrap());
    assert_eq!(snils_valid, record.snils.as_ref().map(|s| s.is_valid()));
    let texts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM source_records, jsonb_array_elements(documents) d WHERE jsonb_typeof(d->'number') <> 'string'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(texts, 0, "document numbers are stored as text");
}

fn record(last_name: &str) -> PatientRecord {
    PatientRecord {
        last_name: Some(last_name.into()),
        ..Default::default()
    }
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

#[tokio::test]
async fn duplicates_redeliveries_and_out_of_order_versions_leave_the_newest_state() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));

    let newest = Envelope::upsert(SOURCE, "1/A01", 3, at(3), record("Петров"));
    let older = Envelope::upsert(SOURCE, "1/A01", 2, at(2), record("Петрова"));
    let oldest = Envelope::upsert(SOURCE, "1/A01", 1, at(1), record("Петровв"));
    // Newest first, then the older ones; the same content again is dropped
    // by the server's duplicate window.
    assert_eq!(
        testkit::publish_all(
            &js,
            &stream,
            [newest.clone(), older.clone(), oldest.clone()]
        )
        .await,
        3
    );
    assert_eq!(
        testkit::publish_all(&js, &stream, [newest.clone()]).await,
        0,
        "server drops the duplicate"
    );
    // A redelivery of the same message (a new message id defeats the duplicate window).
    let ack = bus::publish_with_id(&js, &stream, &newest, "redelivered".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!ack.duplicate);

    // Deleted, then an older upsert arrives late: stays deleted.
    let deleted = Envelope::delete(SOURCE, "2/B02", 5, at(5));
    let late = Envelope::upsert(SOURCE, "2/B02", 4, at(4), record("Сидоров"));
    // Deleted before it was ever seen: a tombstone, and the older upsert after it loses.
    let gone = Envelope::delete(SOURCE, "3/C03", 9, at(9));
    let before_gone = Envelope::upsert(SOURCE, "3/C03", 8, at(8), record("Козлов"));
    testkit::publish_all(
        &js,
        &stream,
        [deleted.clone(), late, gone.clone(), before_gone],
    )
    .await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;

    let mut expected = expected_of(&[newest.clone(), deleted.clone(), gone.clone()]);
    assert_state(&pool, &expected).await;
    let (last_name, version): (Option<String>, i64) = sqlx::query_as(
        "SELECT last_name, source_version FROM source_records WHERE source_id = '1/A01'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((last_name.as_deref(), version), (Some("Петров"), 3));
    let changes_before = count(&pool, "SELECT count(*) FROM record_changes").await;
    let updated_before: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT updated_at FROM source_records WHERE source_id = '1/A01'")
            .fetch_one(&pool)
            .await
            .unwrap();

    // Same content, newer version: the content and updated_at stay, nothing
    // goes to the change feed, but the version watermark moves so that an
    // older version delayed further cannot win.
    let same_newer = Envelope::upsert(SOURCE, "1/A01", 6, at(6), record("Петров"));
    bus::publish_with_id(&js, &stream, &same_newer, "same-content-newer".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let delayed = Envelope::upsert(SOURCE, "1/A01", 5, at(5), record("Петровский"));
    testkit::publish_all(&js, &stream, [delayed]).await;
    // A deleted record comes back with a newer upsert. Its content equals
    // the late upsert's, still inside the duplicate window: the server drops
    // it and says so, and the publisher, knowing this is a new change,
    // publishes it again under its revision id.
    let back = Envelope::upsert(SOURCE, "2/B02", 7, at(7), record("Сидоров"));
    assert_eq!(
        testkit::publish_all(&js, &stream, [back.clone()]).await,
        0,
        "A→B→A inside the window is dropped"
    );
    let ack = bus::publish_with_id(&js, &stream, &back, bus::revision_message_id(&back))
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!ack.duplicate);
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    expected.insert((SOURCE.into(), "2/B02".into()), (back.content_hash, false));
    assert_state(&pool, &expected).await;
    let (version, updated_after): (i64, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT source_version, updated_at FROM source_records WHERE source_id = '1/A01'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, 6);
    assert_eq!(
        updated_after, updated_before,
        "unchanged content does not move updated_at"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM record_changes").await,
        changes_before + 1,
        "only the resurrection is a change"
    );
    let ops: Vec<String> = sqlx::query_scalar(
        "SELECT op FROM record_changes WHERE source_id = '2/B02' ORDER BY change_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ops, ["delete", "update"]);
}

#[tokio::test]
async fn deletes_are_soft() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let alive = Envelope::upsert(SOURCE, "7/D07", 1, at(1), record("Орлов"));
    let deleted = Envelope::delete(SOURCE, "7/D07", 2, at(2));
    testkit::publish_all(&js, &stream, [alive]).await;
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    testkit::publish_all(&js, &stream, [deleted]).await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    let (last_name, deleted_at): (Option<String>, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
        "SELECT last_name, deleted_at FROM source_records WHERE source_id = '7/D07'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        last_name.as_deref(),
        Some("Орлов"),
        "the last known content is kept"
    );
    assert!(deleted_at.is_some());
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_while_their_neighbours_load() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;

    let good = generated(7, 100, 1);
    let (first, second) = good.split_at(50);
    testkit::publish_all(&js, &stream, first.to_vec()).await;

    let subject = stream.subject(SOURCE);
    let garbage = b"\x93\xa6\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\x01not msgpack".to_vec();
    testkit::publish_raw(&js, subject.clone(), garbage.clone()).await;
    let mut future = Envelope::upsert(SOURCE, "9/F09", 1, at(1), record("Будущев"));
    future.record.as_mut().unwrap().birth_date =
        Some(Utc::now().date_naive() + chrono::Days::new(30));
    testkit::publish_raw(&js, subject.clone(), future.encode()).await;
    let no_id = Envelope::upsert(SOURCE, " ", 1, at(1), record("Безымянный"));
    testkit::publish_raw(&js, subject.clone(), no_id.encode()).await;
    let wrong_subject = Envelope::upsert("infoclinica", "77", 1, at(1), record("Чужой"));
    testkit::publish_raw(&js, subject.clone(), wrong_subject.encode()).await;
    testkit::publish_all(&js, &stream, second.to_vec()).await;

    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    let summary = loader.stop().await;

    assert_state(&pool, &expected_of(&good)).await;
    assert_eq!(summary.written.dead_lettered, 4);
    type DeadLetterRow = (String, Option<String>, String, String, Vec<u8>, i64);
    let rows: Vec<DeadLetterRow> = sqlx::query_as(
        "SELECT reason_code, source_id, reason, subject, payload, stream_seq FROM dead_letters ORDER BY stream_seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let codes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        codes,
        [
            "undecodable",
            "birth_date_in_future",
            "missing_source_id",
            "subject_mismatch"
        ]
    );
    assert_eq!(rows[0].4, garbage, "raw bytes kept for retry");
    assert_eq!(rows[1].1.as_deref(), Some("9/F09"));
    assert_eq!(rows[1].2, "birth_date is in the future");
    assert!(rows.iter().all(|r| r.3 == subject && r.5 > 50));
    for r in &rows {
        for pii in ["Иван", "Будущев", "Безымянный", "Чужой"] {
            assert!(
                !r.2.contains(pii),
                "reason must not carry personal data: {}",
                r.2
            );
        }
    }
}

#[tokio::test]
async fn a_slow_write_is_kept_in_progress_instead_of_being_redelivered() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let mut s = settings(&db, &stream, "loader");
    s.loader.ack_wait = Duration::from_secs(2);
    s.loader.writers = 1;
    let loader = RunningLoader::start(s);
    let first = generated(11, 1, 1);
    testkit::publish_all(&js, &stream, first.clone()).await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;

    // Hold the table for three ack_waits while a batch arrives.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE source_records IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let envelopes = generated(12, 100, 1);
    testkit::publish_all(&js, &stream, envelopes.clone()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // `num_redelivered` counts unacknowledged messages delivered more than once.
    let info = consumer_info(&js, &stream, "loader").await.unwrap();
    // The batch in work holds what had arrived when the loader fetched (all
    // 100, or fewer if the publish was still under way); with one writer
    // blocked, nothing else is fetched.
    assert!(
        (1..=100).contains(&info.num_ack_pending),
        "a batch is in work: {} unacked",
        info.num_ack_pending
    );
    assert_eq!(
        info.num_redelivered, 0,
        "nothing was redelivered while the write waited"
    );
    blocker.commit().await.unwrap();
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    // Same generator indexes, same source ids: the greater (version, hash) wins.
    assert_state(&pool, &expected_of(&[first, envelopes].concat())).await;
}

/// Batch messages (several envelopes in one NATS message) load every record
/// exactly; the same messages delivered again change nothing.
#[tokio::test]
async fn batch_messages_load_every_record_and_a_second_delivery_changes_nothing() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let envelopes = generated(11, 3_000, 1);
    let messages = batch_messages(&envelopes, 500);
    assert_eq!(messages.len(), 6);
    let mut publisher = bus::Publisher::new(&js, &stream, 64);
    for m in messages.iter().cloned() {
        publisher.send_encoded(SOURCE, m).await.unwrap();
    }
    let published = publisher.settle().await.unwrap();
    assert_eq!((published.stored, published.records), (6, 3_000));

    // Transactions of at most 700 records: one message each (a message's
    // records are never split).
    let mut settings = settings(&db, &stream, "loader");
    settings.loader.batch_size = 700;
    let loader = RunningLoader::start(settings);
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    assert_state(&pool, &expected_of(&envelopes)).await;
    let changes = "SELECT count(*) FROM record_changes";
    assert_eq!(count(&pool, changes).await, 3_000);

    // The same payloads again (not deduplicated: no message id), as after a
    // redelivery or a replay.
    let subject = stream.subject(SOURCE);
    for m in &messages[..3] {
        testkit::publish_raw(&js, subject.clone(), m.payload.to_vec()).await;
    }
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    let summary = loader.stop().await;
    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(count(&pool, changes).await, 3_000, "nothing changed twice");
    assert_eq!(summary.written.inserted, 3_000);
    assert_eq!(summary.written.unchanged, 1_500);
    assert_eq!(summary.batches, 9, "one transaction per message");
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
}

/// A bad record inside a batch message is dead-lettered alone, with its own
/// bytes and its index in the message; the rest of the message loads and
/// the message is acknowledged.
#[tokio::test]
async fn a_poison_record_of_a_batch_message_is_dead_lettered_alone() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let good = generated(12, 4, 1);
    let mut future = Envelope::upsert(SOURCE, "9/F09", 1, at(1), record("Будущев"));
    future.record.as_mut().unwrap().birth_date =
        Some(Utc::now().date_naive() + chrono::Days::new(30));
    let wrong_source = Envelope::upsert("infoclinica", "77", 1, at(1), record("Чужой"));
    let not_an_envelope = b"\xa4\xd0\x98\xd0\xb2".to_vec(); // a string, "Ив"
    let elements: Vec<Vec<u8>> = vec![
        good[0].encode(),
        future.encode(),
        good[1].encode(),
        wrong_source.encode(),
        good[2].encode(),
        not_an_envelope.clone(),
        good[3].encode(),
    ];
    let mut payload = vec![0x90 | elements.len() as u8];
    for e in &elements {
        payload.extend_from_slice(e);
    }
    assert_eq!(proto::batch::shape(&payload), proto::batch::Shape::Batch);
    testkit::publish_raw(&js, stream.subject(SOURCE), payload).await;

    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    let summary = loader.stop().await;

    assert_state(&pool, &expected_of(&good)).await;
    assert_eq!(summary.written.inserted, 4);
    assert_eq!(summary.written.dead_lettered, 3);
    type Row = (i64, i32, String, Option<String>, Vec<u8>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT stream_seq, item, reason_code, source_id, payload FROM dead_letters ORDER BY item",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(i64, i32, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.0, r.1, r.2.as_str(), r.3.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1, "birth_date_in_future", Some("9/F09")),
            (1, 3, "subject_mismatch", Some("77")),
            (1, 5, "undecodable", None),
        ]
    );
    assert_eq!(rows[0].4, elements[1], "its own bytes, retriable alone");
    assert_eq!(rows[1].4, elements[3]);
    assert_eq!(rows[2].4, not_an_envelope);
    let info = consumer_info(&js, &stream, "loader").await.unwrap();
    assert_eq!(
        info.ack_floor.stream_sequence, 1,
        "the message is acknowledged"
    );
}

/// Dead letters of the test's database: (reason code, source, source id, reason).
async fn dead_letters(
    pool: &sqlx::PgPool,
) -> Vec<(String, Option<String>, Option<String>, String)> {
    sqlx::query_as(
        "SELECT reason_code, source, source_id, reason FROM dead_letters ORDER BY stream_seq, item",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_value_longer_than_its_limit_is_dead_lettered_naming_the_field() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let long_name = "Длинноимённый".repeat(20_000); // 260,000 characters
    let mut long_document = record("Документов");
    long_document.documents.push(proto::IdentityDocument {
        doc_type: proto::DocumentType::PASSPORT,
        source_type_code: None,
        series: Some("4506".into()),
        number: "0".repeat(65),
        problem: Some(proto::Problem::BadFormat),
    });
    let envelopes = vec![
        Envelope::upsert(SOURCE, "1", 1, at(1), record(&long_name)),
        Envelope::upsert(SOURCE, "2", 1, at(1), long_document),
        Envelope::upsert(SOURCE, "3", 1, at(1), record("Обычный")),
    ];
    testkit::publish_all(&js, &stream, envelopes).await;
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    assert_eq!(testkit::count_records(&pool).await, 1, "the others load");
    let rows = dead_letters(&pool).await;
    let got: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.2.as_deref(), r.3.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "field_too_long",
                Some("1"),
                "record.last_name is longer than 200 characters"
            ),
            (
                "field_too_long",
                Some("2"),
                "record.documents[0].number is longer than 64 characters"
            ),
        ]
    );
}

#[tokio::test]
async fn a_source_not_registered_is_dead_lettered_until_it_is_registered() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    let evil = Envelope::upsert("evil", "1", 1, at(1), record("Злов"));
    testkit::publish_all(&js, &stream, vec![evil]).await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;

    assert_eq!(testkit::count_records(&pool).await, 0);
    let rows = dead_letters(&pool).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "unknown_source");
    assert_eq!(
        (rows[0].1.as_deref(), rows[0].2.as_deref()),
        (Some("evil"), Some("1"))
    );
    let sources: Vec<String> = sqlx::query_scalar("SELECT name FROM sources ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(sources, ["infoclinica", "qms"], "no source is created");

    // Registered (as `etl sources register` does): accepted without a restart.
    sqlx::query("INSERT INTO sources (name) VALUES ('evil')")
        .execute(&pool)
        .await
        .unwrap();
    let again = Envelope::upsert("evil", "2", 1, at(1), record("Добров"));
    testkit::publish_all(&js, &stream, vec![again]).await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;
    assert_eq!(testkit::count_records(&pool).await, 1);
    assert_eq!(dead_letters(&pool).await.len(), 1);
}

#[tokio::test]
async fn decode_and_source_id_reasons_never_carry_a_value() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let subject = stream.subject(SOURCE);
    testkit::publish_raw(&js, subject.clone(), integer_source_id()).await;
    for id in ["7\u{1b}[2J", "8\nfake row", "9\r"] {
        let envelope = Envelope::upsert(SOURCE, id, 1, at(1), record("Управляющий"));
        testkit::publish_raw(&js, subject.clone(), envelope.encode()).await;
    }
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    assert_eq!(testkit::count_records(&pool).await, 0);
    let rows = dead_letters(&pool).await;
    let got: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.2.as_deref(), r.3.as_str()))
        .collect();
    let control = "source_id contains a control character (ESC, newline, NUL…)";
    assert_eq!(
        got,
        [
            (
                "undecodable",
                None,
                "undecodable message: wrong_type at source_id"
            ),
            ("source_id_control_character", Some("7\\u{1b}[2J"), control),
            ("source_id_control_character", Some("8\\nfake row"), control),
            ("source_id_control_character", Some("9\\r"), control),
        ],
        "stored escaped, with a fixed reason"
    );
}

#[tokio::test]
async fn validity_is_computed_from_the_values_not_taken_from_the_message() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    // Each identifier claims to be valid (no problem) and is not.
    let mut claims = record("Тестов");
    claims.snils = Some(proto::Checked::valid("11223344596")); // checksum 95
    claims.oms_policy = Some(proto::Checked::valid("1234567890123451")); // check digit 2
    claims.phones.push(proto::Phone {
        number: proto::Checked::valid("22-33-44"),
        preferred: true,
    });
    claims.emails.push(proto::Email {
        address: proto::Checked::valid("ivanov@mail"),
        kind: proto::EmailKind::Contact,
    });
    claims.documents.push(proto::IdentityDocument {
        doc_type: proto::DocumentType::PASSPORT,
        source_type_code: None,
        series: Some("45".into()),
        number: "12".into(),
        problem: None,
    });
    let mut honest = record("Честнов");
    honest.snils = proto::normalize::snils("112-233-445 95");
    let envelopes = vec![
        Envelope::upsert(SOURCE, "1", 1, at(1), claims),
        Envelope::upsert(SOURCE, "2", 1, at(1), honest),
    ];
    testkit::publish_all(&js, &stream, envelopes).await;
    let loader = RunningLoader::start(settings(&db, &stream, "loader"));
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    loader.stop().await;

    type Stored = (
        String,
        Option<String>,
        Option<bool>,
        Option<bool>,
        String,
        String,
        String,
    );
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT source_id, snils, snils_valid, oms_policy_valid,
                documents->0->>'problem', phones->0->'number'->>'problem',
                emails->0->'address'->>'problem'
         FROM source_records WHERE source_id = '1'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(
            "1".to_string(),
            Some("11223344596".to_string()),
            Some(false),
            Some(false),
            "bad_format".to_string(),
            "bad_format".to_string(),
            "bad_format".to_string()
        )]
    );
    let honest: (Option<String>, Option<bool>) =
        sqlx::query_as("SELECT snils, snils_valid FROM source_records WHERE source_id = '2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(honest, (Some("11223344595".into()), Some(true)));
}

/// Two dead letters of messages without a stream position (their JetStream
/// metadata unreadable: stream sequence 0) are both kept, each under a key
/// of its own that is no real stream sequence.
#[tokio::test]
async fn dead_letters_without_a_stream_position_never_collide() {
    let Fixture { db, pool, .. } = Fixture::new().await;
    let store = loader::store::Store::new(testkit::pool(&db).await, "PATIENTS");
    store.migrate().await.unwrap();
    let payload = bytes::Bytes::from_static(b"\xc1");
    for _ in 0..2 {
        let verdict = Err(loader::batch::Rejection {
            code: "undecodable",
            reason: "not an envelope".into(),
            source: None,
            source_id: None,
        });
        let examined = loader::store::Examined {
            stream_seq: 0,
            item: 0,
            subject: "patients.qms",
            delivered: 1,
            payload: &payload,
            verdict: &verdict,
            traceparent: None,
        };
        let written = store.write_examined(&[examined]).await.unwrap();
        assert_eq!(written.dead_lettered, 1);
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT stream_seq FROM dead_letters ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs.len(), 2, "both kept: {seqs:?}");
    assert_ne!(seqs[0], seqs[1]);
    assert!(
        seqs.iter().all(|&s| s < 0),
        "never a real stream sequence: {seqs:?}"
    );
}
