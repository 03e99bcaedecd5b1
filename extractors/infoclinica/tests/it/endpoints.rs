//! The daemon's operations endpoint: `/metrics`, `/healthz`, `/readyz`, and
//! readiness falling while Firebird or NATS is away and coming back with
//! it. Firebird is cut through the test's TCP proxy (the shared server is
//! never stopped); NATS is a throwaway server of this test. The test runs in a
//! process of its own: the readiness registry is process-wide.

use crate::common;

use std::time::Duration;

use common::*;
use infoclinica_extractor::Mode;
use testkit::nats::TempNats;
use testkit::wait_ready;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_and_readiness_follows_firebird_and_nats() {
    if testkit::run_in_own_process(
        "endpoints::endpoints_answer_and_readiness_follows_firebird_and_nats",
    ) {
        return;
    }
    testkit::abort_if_still_running("endpoints", Duration::from_secs(300));
    let fb = FbDatabase::create(300, true);
    let proxy = Proxy::start(3050).await;
    let mut nats = TempNats::start();
    let mut db = fb.settings.clone();
    db.port = proxy.port;

    let mut settings = infoclinica_extractor::Settings::default();
    settings.nats.url = nats.url();
    settings.stream = testkit::unique_stream();
    settings.extractor.checkpoint_bucket = testkit::unique("ck");
    settings.extractor.snapshot_bucket = testkit::unique("snap");
    settings.extractor.page_size = 100;
    settings.extractor.delta_interval = Duration::from_millis(300);
    settings.extractor.retry.initial = Duration::from_millis(100);
    settings.extractor.retry.max = Duration::from_millis(500);
    settings.extractor.connect_timeout = Duration::from_secs(2);
    settings.extractor.query_timeout = Duration::from_secs(5);
    settings.databases = vec![db];
    settings.http.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.http.check_timeout = Duration::from_secs(1);

    let shutdown = CancellationToken::new();
    let addr = etl_runtime::observe::start(&settings.http, &shutdown)
        .await
        .unwrap()
        .expect("listening");
    let daemon = tokio::spawn(infoclinica_extractor::run(
        settings,
        Mode::Daemon,
        shutdown.clone(),
    ));

    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    let body = wait_ready(addr, 200, "firebird", true).await;
    assert_eq!(body["checks"]["nats"], "ok", "{body}");
    assert_eq!(body["checks"]["stream"], "ok", "{body}");

    // The initial load published: its metrics show, with the database's
    // name as the only label value (no personal data).
    let page = testkit::wait_for_metric(addr, "infoclinica_rows_published_total", WAIT).await;
    let line = page
        .lines()
        .find(|l| l.starts_with("infoclinica_rows_published_total{"))
        .unwrap();
    assert!(
        line.contains("database=\"branch\"") && line.contains("mode=\"initial\""),
        "{line}"
    );

    // Firebird away (every connection cut, new ones refused): not ready,
    // the check names the database; still alive. Back: ready again.
    proxy.cut();
    let body = wait_ready(addr, 503, "firebird", false).await;
    let reason = body["checks"]["firebird"].as_str().unwrap().to_string();
    assert!(reason.contains("branch"), "{reason}");
    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    proxy.restore();
    wait_ready(addr, 200, "firebird", true).await;

    // NATS away: not ready, the nats check says why; back: ready.
    nats.kill_server();
    wait_ready(addr, 503, "nats", false).await;
    nats.start_server();
    wait_ready(addr, 200, "nats", true).await;

    shutdown.cancel();
    let summaries = tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .expect("the daemon stops")
        .unwrap()
        .expect("the daemon returns Ok");
    assert!(summaries[0].failures > 0, "the outages were retried");
}
