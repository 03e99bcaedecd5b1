//! The loader's operations endpoint: `/metrics`, `/healthz`, `/readyz`, and
//! readiness falling while NATS or PostgreSQL is down and coming back when
//! it returns. Both servers are throwaway ones of this test (the shared ones
//! are never stopped). The test runs in a process of its own: the
//! readiness registry is process-wide.

use std::time::Duration;

use chrono::Utc;
use proto::{Envelope, PatientRecord};
use testkit::nats::TempNats;
use testkit::postgres::TempCluster;
use testkit::wait_ready;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_and_readiness_follows_nats_and_postgres() {
    if testkit::run_in_own_process(
        "endpoints::endpoints_answer_and_readiness_follows_nats_and_postgres",
    ) {
        return;
    }
    let mut nats = TempNats::start();
    let cluster = TempCluster::start();
    let db = testkit::create_database(cluster.server()).await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream_at(&nats.url(), &stream).await;

    let mut settings = loader::testing::settings(&db, &nats.url(), &stream, "loader");
    settings.http.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.http.check_timeout = Duration::from_secs(1);
    let http_stop = CancellationToken::new();
    let addr = etl_runtime::observe::start(&settings.http, &http_stop)
        .await
        .unwrap()
        .expect("listening");
    let loader = loader::testing::RunningLoader::start(settings);

    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    wait_ready(addr, 200, "nats", true).await;

    // A record loaded: its metric shows, its personal data does not.
    let record = PatientRecord {
        last_name: Some("Zvyagintseva".into()),
        first_name: Some("Evlampiya".into()),
        ..Default::default()
    };
    let envelope = Envelope::upsert("qms", "H1", 1, Utc::now(), record);
    testkit::publish_all(&js, &stream, [envelope]).await;
    let page = testkit::wait_for_metric(addr, "loader_records_loaded_total", WAIT).await;
    assert!(!page.contains("Zvyagintseva") && !page.contains("Evlampiya"));

    // NATS down: not ready, the nats check says why; back: ready.
    nats.kill_server();
    wait_ready(addr, 503, "nats", false).await;
    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    nats.start_server();
    wait_ready(addr, 200, "nats", true).await;

    // PostgreSQL down: not ready, the database check says why; back: ready.
    cluster.stop_server();
    wait_ready(addr, 503, "database", false).await;
    cluster.start_server();
    wait_ready(addr, 200, "database", true).await;

    loader.stop().await;
    http_stop.cancel();
}
