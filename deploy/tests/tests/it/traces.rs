//! OpenTelemetry across the bus: a trace set by an extractor is seen by the
//! loader and the matcher. An OTLP/HTTP receiver of the test's own
//! (`testkit::otlp`) takes the spans; the real qMS extractor (against the
//! simulator), loader and matcher run in this process with export on.
//! (The test runs in a process of its own: the subscriber is process-wide.)

use std::time::Duration;

use etl_runtime::telemetry::{LogSettings, TelemetrySettings};
use testkit::otlp::{Collector, ReceivedSpan};
use tokio_util::sync::CancellationToken;

const RECORDS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_set_by_the_extractor_is_seen_by_the_loader_and_the_matcher() {
    if testkit::run_in_own_process(
        "traces::a_trace_set_by_the_extractor_is_seen_by_the_loader_and_the_matcher",
    ) {
        return;
    }
    let collector = Collector::start().await;
    let telemetry = etl_runtime::telemetry::init_with_traces(
        &LogSettings::default(),
        &TelemetrySettings {
            otlp_endpoint: Some(collector.endpoint()),
            ..Default::default()
        },
        "deploy-tests",
    )
    .expect("exporter set up");
    assert!(etl_runtime::telemetry::enabled());

    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let stream = testkit::unique_stream();
    let _js = testkit::jetstream(&stream).await;

    let sim = qms_sim::Simulator::new(qms_sim::Config {
        seed: 3,
        count: RECORDS,
        ..Default::default()
    });
    let sim_stop = CancellationToken::new();
    let stop = sim_stop.clone();
    let (addr, _sim_task) = sim
        .serve("127.0.0.1:0".parse().unwrap(), async move {
            stop.cancelled().await
        })
        .await
        .unwrap();

    let loader = loader::testing::RunningLoader::start(loader::testing::settings(
        &db,
        &testkit::nats_url(),
        &stream,
        "loader",
    ));
    let matcher_stop = CancellationToken::new();
    let matcher = tokio::spawn(matcher::run(
        matcher::Settings {
            database: db.clone(),
            ..Default::default()
        },
        matcher_stop.clone(),
    ));

    let mut settings = qms_extractor::Settings::default();
    settings.nats.url = testkit::nats_url();
    settings.stream = stream.clone();
    settings.qms.url = format!("http://{addr}{}", qms_sim::EXPORT_PATH);
    let id = testkit::unique("qms");
    settings.qms.state.object_bucket = format!("{id}_state");
    settings.qms.rejects.stream = format!("{}_REJECTS", stream.name);
    settings.qms.rejects.subject = format!("{}_rejects.qms", stream.subject_prefix);
    let report = qms_extractor::Extractor::connect(settings)
        .await
        .expect("qms extractor connects")
        .sync(Default::default(), &CancellationToken::new())
        .await
        .expect("qms sync");
    assert_eq!(report.upserts, RECORDS);

    testkit::wait_until(
        Duration::from_secs(60),
        "records loaded and the change feed drained by the matcher",
        || async {
            // (An error until the loader has applied the migrations.)
            let feed: i64 = sqlx::query_scalar("SELECT count(*) FROM record_changes")
                .fetch_one(&pool)
                .await
                .unwrap_or(-1);
            testkit::count_records(&pool).await == RECORDS as i64 && feed == 0
        },
    )
    .await;
    loader.stop().await;
    matcher_stop.cancel();
    matcher.await.unwrap().unwrap();
    sim_stop.cancel();
    telemetry.flush().await;

    let named = |spans: &[ReceivedSpan], name: &str| -> Vec<ReceivedSpan> {
        spans.iter().filter(|s| s.name == name).cloned().collect()
    };
    let mut spans = Vec::new();
    testkit::wait_until(
        Duration::from_secs(30),
        "spans of the extractor, loader and matcher",
        || {
            spans = collector.spans();
            let ok = ["qms.publish", "loader.write", "matcher.apply"]
                .iter()
                .all(|n| !named(&spans, n).is_empty());
            async move { ok }
        },
    )
    .await;

    let publish = named(&spans, "qms.publish");
    assert_eq!(publish.len(), 1, "one publish span per sync: {publish:?}");
    let publish = &publish[0];
    assert_eq!(publish.parent_span_id, "", "the extractor starts the trace");
    assert_eq!(publish.attribute("source"), Some("qms"));
    assert_eq!(
        publish.attribute("upserts"),
        Some(RECORDS.to_string().as_str())
    );

    for name in ["loader.write", "matcher.apply"] {
        let continued = named(&spans, name);
        assert!(
            continued
                .iter()
                .all(|s| s.trace_id == publish.trace_id && s.parent_span_id == publish.span_id),
            "every {name} span is a child of the extractor's publish: {continued:?}"
        );
        assert_eq!(continued[0].attribute("source"), Some("qms"));
    }
    let loaded: u64 = named(&spans, "loader.write")
        .iter()
        .map(|s| s.attribute("messages").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(loaded, RECORDS, "every message's write is in the trace");
    let matched: u64 = named(&spans, "matcher.apply")
        .iter()
        .map(|s| s.attribute("changes").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(matched, RECORDS, "every change's match is in the trace");

    // No personal data: besides the instrumentation's own (code location,
    // thread, timings), every attribute is a source name or a number.
    for span in &spans {
        for (key, value) in &span.attributes {
            let instrumentation = key.starts_with("code.")
                || key.starts_with("thread.")
                || matches!(key.as_str(), "busy_ns" | "idle_ns" | "target" | "level");
            assert!(
                instrumentation || value == "qms" || value.parse::<f64>().is_ok(),
                "span {} attribute {key} = {value:?}",
                span.name
            );
        }
    }
    assert!(
        spans.iter().all(|s| s.service == "deploy-tests"),
        "service.name from the settings"
    );
}
