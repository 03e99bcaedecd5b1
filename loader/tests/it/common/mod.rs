//! Helpers of the loader's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use proto::Envelope;
use sqlx::PgPool;

pub const SOURCE: &str = "qms";

/// What most tests start from: a fresh database, a stream of their own, a
/// JetStream context and a pool on the database.
pub struct Fixture {
    pub db: DatabaseSettings,
    pub stream: StreamSettings,
    pub js: jetstream::Context,
    pub pool: PgPool,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = testkit::fresh_database().await;
        let stream = testkit::unique_stream();
        let js = testkit::jetstream(&stream).await;
        let pool = testkit::pool(&db).await;
        Fixture {
            db,
            stream,
            js,
            pool,
        }
    }
}

#[allow(unused_imports)] // not every test binary starts one
pub use loader::testing::RunningLoader;

/// Settings of an in-process loader on the test's database and stream.
pub fn settings(
    db: &DatabaseSettings,
    stream: &StreamSettings,
    consumer: &str,
) -> loader::Settings {
    loader::testing::settings(db, &testkit::nats_url(), stream, consumer)
}

/// `n` generated qMS records, version 1.
pub fn generated(seed: u64, n: u64, version: i64) -> Vec<Envelope> {
    let generator = synth::Generator::new(seed);
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    (0..n)
        .map(|i| generator.patient(i).into_envelope(SOURCE, version, at))
        .collect()
}

/// The state the table must hold: per (source, source id), the content hash
/// and whether the record is deleted.
pub type Expected = HashMap<(String, String), ([u8; 32], bool)>;

pub fn expected_of(envelopes: &[Envelope]) -> Expected {
    let mut newest: HashMap<(String, String), &Envelope> = HashMap::new();
    for e in envelopes {
        let key = (e.source.clone(), e.source_id.clone());
        let keep = newest
            .get(&key)
            .is_some_and(|k| (k.version, k.content_hash) >= (e.version, e.content_hash));
        if !keep {
            newest.insert(key, e);
        }
    }
    newest
        .into_iter()
        .map(|(k, e)| (k, (e.content_hash, e.op == proto::Operation::Delete)))
        .collect()
}

pub async fn actual_state(pool: &PgPool) -> Expected {
    let rows: Vec<(String, String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT source, source_id, content_hash, deleted_at IS NOT NULL FROM source_records",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(s, id, hash, deleted)| ((s, id), (hash.try_into().unwrap(), deleted)))
        .collect()
}

/// Asserts the table holds exactly `expected` (no row missing, extra, or stale).
pub async fn assert_state(pool: &PgPool, expected: &Expected) {
    let actual = actual_state(pool).await;
    assert_eq!(actual.len(), expected.len(), "row count");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .map(|(k, _)| k)
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "rows with a wrong state, e.g. {wrong:?}");
}

/// The consumer's current state, if it exists.
pub async fn consumer_info(
    js: &jetstream::Context,
    stream: &StreamSettings,
    consumer: &str,
) -> Option<jetstream::consumer::Info> {
    let stream = js.get_stream(&stream.name).await.ok()?;
    let mut consumer = stream
        .get_consumer::<jetstream::consumer::pull::Config>(consumer)
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Waits until the consumer has nothing pending or unacknowledged.
pub async fn wait_drained(
    js: &jetstream::Context,
    stream: &StreamSettings,
    consumer: &str,
    timeout: Duration,
) {
    testkit::wait_until(timeout, "the consumer to be drained", || async {
        consumer_info(js, stream, consumer)
            .await
            .is_some_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
    })
    .await;
}

pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// MessagePack `{schema_version: 1, source: "qms", source_id: 4509123456}`:
/// an envelope whose source id is an integer.
pub fn integer_source_id() -> Vec<u8> {
    let mut m = vec![0x83];
    for (key, value) in [("schema_version", &[0x01][..]), ("source", b"\xa3qms")] {
        m.push(0xa0 | key.len() as u8);
        m.extend_from_slice(key.as_bytes());
        m.extend_from_slice(value);
    }
    m.push(0xa9);
    m.extend_from_slice(b"source_id");
    m.push(0xcf);
    m.extend_from_slice(&4509123456u64.to_be_bytes());
    m
}

/// Cuts `envelopes` (upserts of one source) into batch messages as an
/// extractor does.
pub fn batch_messages(envelopes: &[Envelope], max_records: usize) -> Vec<proto::batch::Encoded> {
    let mut builder = proto::batch::BatchBuilder::new(
        SOURCE,
        proto::batch::BatchLimits {
            max_records,
            max_bytes: 256 * 1024,
        },
    );
    let mut out = Vec::new();
    for e in envelopes {
        let record = e.record.as_ref().expect("upserts");
        out.extend(builder.push_upsert(&e.source_id, e.version, e.observed_at, record));
    }
    out.extend(builder.finish());
    out
}
