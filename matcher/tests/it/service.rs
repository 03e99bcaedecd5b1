//! The matcher service end to end: NATS → in-process loader → PostgreSQL →
//! matcher (woken by NOTIFY), and the matcher binary killed with -9 in the
//! middle of a batch, then restarted.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn end_to_end_through_the_bus_and_the_loader() {
    let f = Fixture::new().await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let ls = loader::testing::settings(
        &f.db,
        &testkit::nats_url(),
        &stream,
        &testkit::unique("loader"),
    );
    let loader_stop = CancellationToken::new();
    let loader_task = tokio::spawn(loader::run(ls, loader_stop.clone()));
    let matcher_stop = CancellationToken::new();
    let matcher_task = tokio::spawn(matcher::run(f.settings(), matcher_stop.clone()));

    let records = truth(5, 600);
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let envelopes: Vec<proto::Envelope> = records
        .iter()
        .map(|t| proto::Envelope::upsert(t.source, t.source_id.clone(), 1, at, t.record.clone()))
        .collect();
    testkit::publish_all(&js, &stream, envelopes).await;
    let n = records.len() as i64;
    testkit::wait_until(
        Duration::from_secs(90),
        "every record to have a person",
        || async {
            f.count("SELECT count(*) FROM person_memberships WHERE valid_to IS NULL")
                .await
                == n
                && f.count("SELECT count(*) FROM record_changes").await == 0
        },
    )
    .await;
    let report = matcher::evaluate::evaluate(&f.pool, &truth_rows(&records))
        .await
        .unwrap();
    assert_eq!(report.false_merges, 0, "{report:?}");

    // A delete through the bus closes the membership.
    let gone = &records[0];
    testkit::publish_all(
        &js,
        &stream,
        [proto::Envelope::delete(
            gone.source,
            gone.source_id.clone(),
            2,
            at,
        )],
    )
    .await;
    testkit::wait_until(
        Duration::from_secs(30),
        "the delete to be matched",
        || async { f.person(gone.source, &gone.source_id).await.is_none() },
    )
    .await;

    matcher_stop.cancel();
    let applied = tokio::time::timeout(Duration::from_secs(30), matcher_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(applied.changes >= n as u64);
    loader_stop.cancel();
    loader_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_batch_then_restart() {
    let mut f = Fixture::new().await;
    // The binary's default scoring (the model, shipped priors), compared
    // with a re-match by the same.
    f.engine = matcher::service::engine(&matcher::Settings::default());
    let records = truth(9, 3000);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    let total = f.count("SELECT count(*) FROM record_changes").await;
    let mut env = testkit::service_env(&f.db, &testkit::unique_stream());
    // Batches of 100, 400, 1,600, then the rest (the backlog path), each
    // full one reading the next one's records ahead: the kill comes while
    // a read-ahead is in flight or waiting to be used.
    env.push(("ETL__MATCHER__BATCH_SIZE".into(), "100".into()));
    env.push(("ETL__MATCHER__MAX_BATCH_SIZE".into(), "100000".into()));
    env.push(("ETL__MATCHER__READ_AHEAD_FROM".into(), "100".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let bin = env!("CARGO_BIN_EXE_matcher");
    let mut first = testkit::ChildProcess::spawn(bin, &[], &env);
    // Kill it once the first two batches committed: in the middle of the
    // 1,600-change batch (or of the next, larger one).
    testkit::wait_until(
        Duration::from_secs(60),
        "some batches to commit",
        || async { f.count("SELECT count(*) FROM record_changes").await < total - 400 },
    )
    .await;
    first.kill9();
    let left = f.count("SELECT count(*) FROM record_changes").await;
    assert!(left > 0, "killed before the end");
    // Nothing half-written: every claimed change that left the feed has its record placed.
    let mut second = testkit::ChildProcess::spawn(bin, &[], &env);
    testkit::wait_until(
        Duration::from_secs(90),
        "the feed to drain after restart",
        || async { f.count("SELECT count(*) FROM record_changes").await == 0 },
    )
    .await;
    let status = second
        .terminate(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{}", second.logs());
    assert!(!second.logs().contains("Иван"), "no personal data in logs");

    // Same persons as a full re-match, and no record placed twice.
    assert_eq!(
        f.count("SELECT count(*) FROM (SELECT source, source_id FROM person_memberships WHERE valid_to IS NULL GROUP BY 1, 2 HAVING count(*) > 1) x").await,
        0
    );
    f.assert_equals_a_rematch().await;
}

#[tokio::test]
async fn a_second_instance_stands_by() {
    let f = Fixture::new().await;
    let records = truth(3, 500);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    let stops = [CancellationToken::new(), CancellationToken::new()];
    let tasks: Vec<_> = stops
        .iter()
        .map(|s| tokio::spawn(matcher::run(f.settings(), s.clone())))
        .collect();
    testkit::wait_until(Duration::from_secs(60), "the feed to drain", || async {
        f.count("SELECT count(*) FROM record_changes").await == 0
    })
    .await;
    let mut total = 0;
    for (s, t) in stops.iter().zip(tasks) {
        s.cancel();
        total += t.await.unwrap().unwrap().changes;
    }
    assert_eq!(
        total,
        records.len() as u64,
        "every change applied exactly once"
    );
    let live = f
        .count("SELECT count(*) FROM person_memberships WHERE valid_to IS NULL")
        .await;
    assert_eq!(live, records.len() as i64);
}

/// The running service's in-memory index stays equal to the database when
/// another process re-matches meanwhile (consuming a change the service has
/// not seen), and a standby that takes over builds its own.
#[tokio::test]
async fn a_rematch_alongside_the_service_then_a_standby_takes_over() {
    let f = Fixture::new().await;
    f.write_b_and_others(19).await;
    let first_stop = CancellationToken::new();
    let first = tokio::spawn(matcher::run(f.settings(), first_stop.clone()));
    let drained = || async { f.count("SELECT count(*) FROM record_changes").await == 0 };
    testkit::wait_until(Duration::from_secs(60), "the feed to drain", drained).await;
    assert!(f.same(("qms", "b"), ("infoclinica", "b2")).await);

    // b becomes another person while the test holds the matcher lock, and
    // a re-match queued behind the test takes the lock first and consumes
    // b's change: the service never sees it.
    let mut hold = f.pool.begin().await.unwrap();
    matcher::Engine::lock(&mut hold).await.unwrap();
    f.write(vec![("qms", "b", Some(other_adult()))]).await;
    let rematch = {
        let (engine, pool) = (matcher::service::engine(&rules_settings()), f.pool.clone());
        tokio::spawn(async move { engine.rematch_all(&pool).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    hold.commit().await.unwrap();
    rematch.await.unwrap().unwrap();
    f.write(vec![("infoclinica", "a", Some(other_adult()))])
        .await;
    testkit::wait_until(Duration::from_secs(30), "a to be matched", || async {
        f.person("infoclinica", "a").await.is_some() && drained().await
    })
    .await;
    assert!(f.same(("qms", "b"), ("infoclinica", "a")).await);

    // The active instance stops; a standby (started meanwhile) takes over.
    let second_stop = CancellationToken::new();
    let second = tokio::spawn(matcher::run(f.settings(), second_stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    first_stop.cancel();
    first.await.unwrap().unwrap();
    f.write(vec![("infoclinica", "c", Some(other_adult()))])
        .await;
    testkit::wait_until(Duration::from_secs(30), "c to be matched", || async {
        f.person("infoclinica", "c").await.is_some() && drained().await
    })
    .await;
    assert!(f.same(("infoclinica", "a"), ("infoclinica", "c")).await);
    second_stop.cancel();
    let applied = second.await.unwrap().unwrap();
    assert_eq!(applied.changes, 1, "the standby applied c's change");
    f.assert_equals_a_rematch().await;
}

/// A mass delete (two thirds of the records, as a wrong database path
/// would look) retires the persons left without records, batch by batch,
/// and SIGTERM in the middle of it ends the matcher binary within its
/// shutdown deadline through the normal path (exit status 0; the
/// deadline's forced exit is status 1). The records are matched by the
/// service (no re-match, which analyses the tables) and autovacuum is off
/// for the two tables: a site where nothing has analysed the freshly
/// written memberships yet. The service's connections use generic plans
/// from the start, as PostgreSQL may choose after a prepared statement's
/// fifth run. With both, retiring by a `NOT EXISTS` per person intersected
/// every current membership for each person.
#[tokio::test]
async fn a_mass_delete_retires_persons_and_sigterm_ends_it_promptly() {
    let f = Fixture::new().await;
    for setting in [
        "ALTER TABLE person_memberships SET (autovacuum_enabled = false)",
        "ALTER TABLE persons SET (autovacuum_enabled = false)",
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_generic_plan', current_database()); END $$",
    ] {
        sqlx::query(setting).execute(&f.pool).await.unwrap();
    }
    let records = truth(22, 12_000);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    let deadline = Duration::from_secs(10);
    let mut env = testkit::service_env(&f.db, &testkit::unique_stream());
    env.push(("ETL__SHUTDOWN__DEADLINE".into(), "10s".into()));
    // Batches of at most 2,000 changes: the delete of some 12,000 records
    // takes several, so SIGTERM after the first retirements finds it
    // unfinished however fast the machine (with batches growing to 20,000
    // it could end before the signal arrived).
    env.push(("ETL__MATCHER__MAX_BATCH_SIZE".into(), "2000".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let bin = env!("CARGO_BIN_EXE_matcher");
    let pending = "SELECT count(*) FROM record_changes";
    let mut first = testkit::ChildProcess::spawn(bin, &[], &env);
    testkit::wait_until(
        Duration::from_secs(180),
        "the records to be matched",
        || async { f.count(pending).await == 0 },
    )
    .await;
    let gone = &records[..records.len() * 2 / 3];
    f.write(
        gone.iter()
            .map(|t| (t.source, t.source_id.as_str(), None))
            .collect(),
    )
    .await;
    let retired = "SELECT count(*) FROM persons WHERE retired_at IS NOT NULL";
    testkit::wait_until(
        Duration::from_secs(60),
        "a first batch of retirements",
        || async { f.count(retired).await > 0 },
    )
    .await;
    let asked = std::time::Instant::now();
    let status = first
        .terminate(deadline + Duration::from_secs(10))
        .expect("exits on SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "ended by the deadline: {}", first.logs());
    assert!(took < deadline, "SIGTERM took {took:?}");
    assert!(
        f.count(pending).await > 0,
        "stopped in the middle of the mass delete"
    );

    let mut second = testkit::ChildProcess::spawn(bin, &[], &env);
    testkit::wait_until(
        Duration::from_secs(60),
        "the mass delete to drain",
        || async { f.count(pending).await == 0 },
    )
    .await;
    assert!(second.terminate(deadline).expect("exits").success());
    let live = f
        .count("SELECT count(*) FROM person_memberships WHERE valid_to IS NULL")
        .await;
    assert_eq!(live, (records.len() - gone.len()) as i64);
    let orphans = f
        .count(
            "SELECT count(*) FROM persons p WHERE retired_at IS NULL AND NOT EXISTS
             (SELECT 1 FROM person_memberships m WHERE m.person_id = p.person_id AND m.valid_to IS NULL)",
        )
        .await;
    assert_eq!(orphans, 0, "every person without records is retired");
    let wrongly = f
        .count(
            "SELECT count(*) FROM persons p WHERE retired_at IS NOT NULL AND EXISTS
             (SELECT 1 FROM person_memberships m WHERE m.person_id = p.person_id AND m.valid_to IS NULL)",
        )
        .await;
    assert_eq!(wrongly, 0, "no person with records is retired");
}
