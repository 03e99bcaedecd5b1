//! The matcher's operations endpoint: `/metrics`, `/healthz`, `/readyz`,
//! and readiness falling while PostgreSQL is down and coming back when it
//! returns (the matcher uses no NATS). PostgreSQL is a throwaway cluster of
//! this test (the shared server is never stopped). The test runs in a
//! process of its own: the readiness registry is process-wide.

use std::time::Duration;

use chrono::Utc;
use loader::store::Store;
use proto::{Envelope, PatientRecord};
use testkit::postgres::TempCluster;
use testkit::wait_ready;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Writes `records` as the loader does (source record and change feed).
async fn write(store: &Store, records: &[(&str, PatientRecord)]) {
    let envelopes: Vec<Envelope> = records
        .iter()
        .map(|(id, r)| Envelope::upsert("qms", *id, 1, Utc::now(), r.clone()))
        .collect();
    store.write_envelopes(&envelopes, 1).await.expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_and_readiness_follows_postgres() {
    if testkit::run_in_own_process("endpoints::endpoints_answer_and_readiness_follows_postgres") {
        return;
    }
    let cluster = TempCluster::start();
    let db = testkit::create_database(cluster.server()).await;
    let pool = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR
        .run(&pool)
        .await
        .expect("migrations");
    let store = Store::new(pool.clone(), "TEST");

    let mut settings = matcher::Settings {
        database: db.clone(),
        ..Default::default()
    };
    settings.matcher.poll_interval = Duration::from_millis(200);
    settings.http.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.http.check_timeout = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let addr = etl_runtime::observe::start(&settings.http, &shutdown)
        .await
        .unwrap()
        .expect("listening");
    let matcher = tokio::spawn(matcher::run(settings, shutdown.clone()));

    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    wait_ready(addr, 200, "database", true).await;

    // Records matched: the metrics show, the personal data does not.
    let person = PatientRecord {
        last_name: Some("Zvyagintseva".into()),
        first_name: Some("Evlampiya".into()),
        ..Default::default()
    };
    write(&store, &[("H1", person.clone()), ("H2", person)]).await;
    let page = testkit::wait_for_metric(addr, "matcher_changes_total", WAIT).await;
    assert!(page.contains("matcher_batch_seconds_bucket"), "{page}");
    assert!(!page.contains("Zvyagintseva") && !page.contains("Evlampiya"));

    // PostgreSQL down: not ready, the database check says why, still
    // alive; back: ready, and the matcher goes on matching.
    drop(pool);
    cluster.stop_server();
    wait_ready(addr, 503, "database", false).await;
    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    cluster.start_server();
    wait_ready(addr, 200, "database", true).await;

    let pool = testkit::pool(&db).await;
    let store = Store::new(pool.clone(), "TEST");
    write(
        &store,
        &[(
            "H3",
            PatientRecord {
                last_name: Some("Other".into()),
                ..Default::default()
            },
        )],
    )
    .await;
    testkit::wait_until(WAIT, "the change after the outage applied", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM record_changes")
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, matcher)
        .await
        .expect("the matcher stops")
        .unwrap()
        .expect("the matcher returns Ok");
}
