//! The gauges every service and the matcher export for operators: build and
//! process figures (every service, from `etl_runtime::observe`), the
//! matcher's backlog, open review items and open dead letters (read from
//! PostgreSQL by `matcher::gauges`). The test runs in a process of
//! its own: the recorder is process-wide.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_matcher_exports_backlog_reviews_dead_letters_build_and_process() {
    if testkit::run_in_own_process(
        "gauges::the_matcher_exports_backlog_reviews_dead_letters_build_and_process",
    ) {
        return;
    }
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR
        .run(&pool)
        .await
        .expect("migrations");
    sqlx::query(
        "INSERT INTO dead_letters (stream, stream_seq, subject, reason_code, reason, payload, delivered)
         VALUES ('S', 1, 'etl.qms', 'decode', 'decode error at $.x', '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let mut settings = matcher::Settings {
        database: db.clone(),
        ..Default::default()
    };
    settings.http.listen = Some("127.0.0.1:0".parse().unwrap());
    let shutdown = CancellationToken::new();
    let addr = etl_runtime::observe::start(&settings.http, &shutdown)
        .await
        .unwrap()
        .expect("listening");
    let matcher = tokio::spawn(matcher::run(settings, shutdown.clone()));

    let page = testkit::wait_for_metric(addr, "etl_dead_letters_open{kind=\"decode\"}", WAIT).await;
    for line in [
        "matcher_backlog 0",
        "matcher_review_items_open 0",
        "etl_dead_letters_open{kind=\"all\"} 1",
        "etl_dead_letters_open{kind=\"decode\"} 1",
        "etl_build_info{service=\"it-",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(page.contains(line), "{line} missing: {page}");
    }

    shutdown.cancel();
    tokio::time::timeout(WAIT, matcher)
        .await
        .expect("the matcher stops")
        .unwrap()
        .expect("the matcher returns Ok");
}
