//! Person events: the kinds written with each change (engine and operator),
//! the relay publishing them exactly once and in order (in process, and the
//! matcher binary killed with -9 while matching and while relaying), the
//! replay of a range, and no personal data in what reaches the bus.

use std::time::Duration;

use async_nats::jetstream;
use matcher::events::{self, Range};
use matcher::settings::EventsSettings;
use proto::bus::StreamSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use testkit::person_events::{self, BusEvent};

use crate::common::*;

/// The test's person-event stream, named after its record stream (so that
/// testkit removes it with the test's other streams).
fn events_settings(stream: &StreamSettings) -> EventsSettings {
    EventsSettings {
        enabled: true,
        stream: format!("{}_PERSONS", stream.name),
        subject_prefix: format!("{}-persons", stream.subject_prefix),
        max_age: Duration::from_secs(3600),
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

fn events_env(events: &EventsSettings) -> Vec<(String, String)> {
    [
        ("ETL__EVENTS__ENABLED", "true".to_string()),
        ("ETL__EVENTS__STREAM", events.stream.clone()),
        ("ETL__EVENTS__SUBJECT_PREFIX", events.subject_prefix.clone()),
        ("ETL__EVENTS__MAX_AGE", "1h".to_string()),
        ("ETL__EVENTS__POLL_INTERVAL", "200ms".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One outbox row: (event id, kind, person, other person, records).
type Row = (i64, String, i64, Option<i64>, Value);

async fn outbox(f: &Fixture, after: i64) -> Vec<Row> {
    sqlx::query_as(
        "SELECT event_id, kind, person_id, other_person_id, records FROM person_events
         WHERE event_id > $1 ORDER BY event_id",
    )
    .bind(after)
    .fetch_all(&f.pool)
    .await
    .unwrap()
}

async fn last_event(f: &Fixture) -> i64 {
    f.count("SELECT coalesce(max(event_id), 0) FROM person_events")
        .await
}

/// (kind, person, other person) of each row.
fn kinds(rows: &[Row]) -> Vec<(&str, i64, Option<i64>)> {
    rows.iter().map(|r| (r.1.as_str(), r.2, r.3)).collect()
}

#[tokio::test]
async fn events_of_joins_splits_merges_locks_and_deletes() {
    let f = Fixture::new().await;
    let a: (String, String) = ("qms".into(), "a".into());
    let a2: (String, String) = ("infoclinica".into(), "a2".into());
    let same = with_passport(adult(), "4510", "111111");
    f.write(vec![("qms", "a", Some(same.clone()))]).await;
    f.drain().await;
    let rows = outbox(&f, 0).await;
    let p = f.person("qms", "a").await.unwrap();
    assert_eq!(kinds(&rows), [("created", p, None)]);
    assert_eq!(
        rows[0].4,
        serde_json::json!([{"source": "qms", "source_id": "a", "from_person_id": null}])
    );

    // A second record of the same person joins it.
    let mut seen = last_event(&f).await;
    f.write(vec![("infoclinica", "a2", Some(same.clone()))])
        .await;
    f.drain().await;
    assert_eq!(
        kinds(&outbox(&f, seen).await),
        [("records_joined", p, None)]
    );

    // An operator keeps them apart: a new person split off.
    seen = last_event(&f).await;
    matcher::operator::decide(&f.engine, &f.pool, "keep_apart", &a, &a2, "tester", None)
        .await
        .unwrap();
    let (pa, pa2) = (
        f.person("qms", "a").await,
        f.person("infoclinica", "a2").await,
    );
    let q = if pa == Some(p) { pa2 } else { pa }.unwrap();
    assert_ne!(q, p);
    assert_eq!(
        kinds(&outbox(&f, seen).await),
        [("created", q, Some(p)), ("split", p, Some(q))]
    );

    // Revoked: the two are one again, the newer person merged into the older.
    seen = last_event(&f).await;
    matcher::operator::revoke(&f.engine, &f.pool, &a, &a2, "tester")
        .await
        .unwrap();
    assert_eq!(
        kinds(&outbox(&f, seen).await),
        [("records_joined", p, Some(q)), ("merged_into", q, Some(p))]
    );

    // Locks: an event when the lock changes, none when it does not.
    seen = last_event(&f).await;
    for locked in [true, true, false] {
        matcher::operator::set_lock(&f.engine, &f.pool, p, locked, "tester")
            .await
            .unwrap();
    }
    assert_eq!(
        kinds(&outbox(&f, seen).await),
        [("locked", p, None), ("unlocked", p, None)]
    );

    // A re-match that moves nothing writes nothing.
    seen = last_event(&f).await;
    f.assert_equals_a_rematch().await;
    f.write(vec![("qms", "a", Some(same.clone()))]).await;
    f.drain().await;
    assert_eq!(outbox(&f, seen).await, []);

    // Both records deleted: the person is retired.
    f.write(vec![("qms", "a", None), ("infoclinica", "a2", None)])
        .await;
    f.drain().await;
    let rows = outbox(&f, seen).await;
    assert_eq!(kinds(&rows), [("retired", p, None)]);
    assert_eq!(rows[0].4.as_array().unwrap().len(), 2);
}

async fn received(js: &jetstream::Context, events: &EventsSettings) -> Vec<BusEvent> {
    person_events::on_stream(js, &events.stream).await
}

/// Every outbox row reached the bus once, in id order, on its kind's
/// subject with its id as message id; and the events, applied in order,
/// give the persons the database holds (no change was left out).
async fn assert_published_exactly_once(f: &Fixture, bus: &[BusEvent], settings: &EventsSettings) {
    let problems = person_events::problems(&f.pool, bus, &settings.subject_prefix)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

async fn published_up_to(f: &Fixture) -> i64 {
    f.count("SELECT published_up_to FROM person_event_relay")
        .await
}

async fn wait_published(f: &Fixture, what: &str) {
    testkit::wait_until(Duration::from_secs(120), what, || async {
        f.count("SELECT count(*) FROM record_changes").await == 0
            && published_up_to(f).await == last_event(f).await
    })
    .await;
}

fn no_personal_data(values: &[testkit::chaos::privacy::Personal], bus: &[BusEvent]) {
    let text: Vec<&str> = bus.iter().map(|m| m.payload.as_str()).collect();
    let leaks = testkit::chaos::privacy::find(values, &text.join("\n"), "person events");
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[tokio::test]
async fn the_relay_publishes_every_change_once_in_order_and_replays_a_range() {
    let f = Fixture::new().await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let mut settings = f.settings();
    settings.events = events_settings(&stream);
    settings.nats.url = testkit::nats_url();
    let stop = CancellationToken::new();
    let task = tokio::spawn(matcher::run(settings.clone(), stop.clone()));

    let records = truth(31, 600);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    wait_published(&f, "the load to be published").await;
    // Deletes (records leave, persons retire) and records that become
    // someone else (moves, merges, splits).
    f.write(
        records[..60]
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), None))
            .collect(),
    )
    .await;
    f.write(
        records[60..90]
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(other_adult())))
            .collect(),
    )
    .await;
    wait_published(&f, "the changes to be published").await;

    let bus = received(&js, &settings.events).await;
    assert_published_exactly_once(&f, &bus, &settings.events).await;
    let values = testkit::chaos::privacy::personal_values(&f.pool)
        .await
        .unwrap();
    assert!(!values.is_empty());
    no_personal_data(&values, &bus);

    // A range again, for a consumer that lost its state: the same payloads,
    // marked as a replay.
    let replayed = events::replay(
        &f.pool,
        &js,
        &settings.events,
        Range::Ids {
            from: 5,
            to: Some(24),
        },
        "run-1",
    )
    .await
    .unwrap();
    assert_eq!(
        (replayed.events, replayed.first, replayed.last),
        (20, Some(5), Some(24))
    );
    let again = received(&js, &settings.events).await;
    let replays: Vec<&BusEvent> = again.iter().filter(|m| m.replay.is_some()).collect();
    assert_eq!(
        replays.iter().map(|m| m.id()).collect::<Vec<_>>(),
        (5..=24).collect::<Vec<_>>()
    );
    for m in &replays {
        let original = bus.iter().find(|o| o.id() == m.id()).unwrap();
        assert_eq!(m.payload, original.payload);
        assert_eq!(m.subject, original.subject);
        assert_eq!(m.replay.as_deref(), Some("run-1"));
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The matcher binary killed with -9 while it matches and publishes, then
/// again while its relay works through a backlog of events one small batch
/// at a time: every event reaches the bus once, in order.
#[tokio::test]
async fn events_exactly_once_across_kill_9_of_the_matcher_and_of_the_relay() {
    let f = Fixture::new().await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let settings = events_settings(&stream);
    let records = truth(9, 3000);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    let total = f.count("SELECT count(*) FROM record_changes").await;
    let mut env = testkit::service_env(&f.db, &stream);
    env.extend(events_env(&settings));
    env.push(("ETL__MATCHER__BATCH_SIZE".into(), "100".into()));
    env.push(("ETL__MATCHER__MAX_BATCH_SIZE".into(), "400".into()));
    env.push(("ETL__EVENTS__BATCH_SIZE".into(), "50".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let bin = env!("CARGO_BIN_EXE_matcher");

    // 1. Killed while matching and relaying.
    let mut first = testkit::ChildProcess::spawn(bin, &[], &env);
    testkit::wait_until(
        Duration::from_secs(60),
        "some batches committed and published",
        || async {
            f.count("SELECT count(*) FROM record_changes").await < total - 1000
                && published_up_to(&f).await > 0
        },
    )
    .await;
    first.kill9();
    assert!(f.count("SELECT count(*) FROM record_changes").await > 0);
    let mut second = testkit::ChildProcess::spawn(bin, &[], &env);
    wait_published(&f, "the load to be matched and published").await;
    assert!(second
        .terminate(Duration::from_secs(20))
        .expect("exits")
        .success());

    // 2. A backlog of events (matched with the relay off), then the relay
    //    killed half-way through it.
    let mut quiet = env.clone();
    quiet.push(("ETL__EVENTS__ENABLED".into(), "false".into()));
    let mut third = testkit::ChildProcess::spawn(bin, &[], &quiet);
    f.write(
        records[..1500]
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), None))
            .collect(),
    )
    .await;
    testkit::wait_until(
        Duration::from_secs(60),
        "the deletes to be matched",
        || async { f.count("SELECT count(*) FROM record_changes").await == 0 },
    )
    .await;
    assert!(third
        .terminate(Duration::from_secs(20))
        .expect("exits")
        .success());
    let (from, to) = (published_up_to(&f).await, last_event(&f).await);
    assert!(to - from > 500, "a backlog of events: {from}..{to}");
    let mut slow = env.clone();
    slow.push(("ETL__EVENTS__BATCH_SIZE".into(), "2".into()));
    let mut fourth = testkit::ChildProcess::spawn(bin, &[], &slow);
    testkit::wait_until(Duration::from_secs(60), "the relay half-way", || async {
        published_up_to(&f).await > from + (to - from) / 3
    })
    .await;
    fourth.kill9();
    assert!(published_up_to(&f).await < to, "killed before the end");
    let mut fifth = testkit::ChildProcess::spawn(bin, &[], &env);
    wait_published(&f, "the rest to be published").await;
    assert!(fifth
        .terminate(Duration::from_secs(20))
        .expect("exits")
        .success());

    let bus = received(&js, &settings).await;
    assert_published_exactly_once(&f, &bus, &settings).await;
    for p in [&first, &second, &third, &fourth, &fifth] {
        assert!(!p.logs().contains("Иван"), "no personal data in logs");
    }
}
