//! Trace context across the bus: the `traceparent` a publisher sets is stored
//! with the change the loader makes, for the matcher to continue the trace.

use crate::common;

use std::time::Duration;

use common::*;
use proto::bus::{self, Publisher};
use proto::trace::TraceParent;

#[tokio::test]
async fn the_publishers_traceparent_is_stored_with_the_change() {
    let fixture = Fixture::new().await;
    let (js, stream, pool) = (&fixture.js, &fixture.stream, &fixture.pool);
    let mut envelopes = generated(7, 4, 1);
    let bare = envelopes.pop().unwrap();
    let known =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();

    // Two through a Publisher in a known trace, one in a fresh trace, one
    // published without the header at all (an older extractor).
    let mut publisher = Publisher::new(js, stream, 16).with_traceparent(known);
    for e in &envelopes[..2] {
        publisher.send(e).await.unwrap();
    }
    publisher.settle().await.unwrap();
    bus::publish(js, stream, &envelopes[2])
        .await
        .unwrap()
        .await
        .unwrap();
    js.send_publish(
        stream.subject(&bare.source),
        async_nats::jetstream::message::PublishMessage::build()
            .payload(bare.encode().into())
            .message_id(bare.message_id()),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let loader = RunningLoader::start(settings(&fixture.db, stream, "loader"));
    wait_drained(js, stream, "loader", Duration::from_secs(30)).await;
    loader.stop().await;

    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT source_id, traceparent FROM record_changes")
            .fetch_all(pool)
            .await
            .unwrap();
    let of = |source_id: &str| {
        stored
            .iter()
            .find(|(id, _)| id == source_id)
            .unwrap_or_else(|| panic!("a change for {source_id}"))
            .1
            .clone()
    };
    assert_eq!(stored.len(), 4);
    for e in &envelopes[..2] {
        assert_eq!(of(&e.source_id), Some(known.to_string()));
    }
    let fresh = of(&envelopes[2].source_id).expect("a fresh traceparent");
    let fresh = TraceParent::parse(&fresh).expect("well formed");
    assert_ne!(fresh.trace_id, known.trace_id);
    assert_eq!(of(&bare.source_id), None);
}

/// The loader binary with `[telemetry] otlp_endpoint` set (by environment,
/// as an operator would): its span continuing the publisher's trace reaches
/// the collector, flushed at the graceful shutdown after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_binary_exports_its_span_in_the_publishers_trace() {
    let fixture = Fixture::new().await;
    let (js, stream, pool) = (&fixture.js, &fixture.stream, &fixture.pool);
    let collector = testkit::otlp::Collector::start().await;
    let known =
        TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    let mut publisher = Publisher::new(js, stream, 16).with_traceparent(known);
    for e in &generated(8, 5, 1) {
        publisher.send(e).await.unwrap();
    }
    publisher.settle().await.unwrap();

    let mut env = testkit::service_env(&fixture.db, stream);
    env.push(("ETL__LOADER__CONSUMER".into(), "loader".into()));
    env.push(("ETL__TELEMETRY__OTLP_ENDPOINT".into(), collector.endpoint()));
    // A long scheduled export: only the shutdown's flush sends the span.
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()));
    let mut loader = testkit::ChildProcess::spawn(env!("CARGO_BIN_EXE_loader"), &[], &env);
    assert!(loader.is_running());
    testkit::wait_until(Duration::from_secs(30), "5 records loaded", || async {
        testkit::count_records(pool).await == 5
    })
    .await;
    // Waited for off the runtime: the collector answers meanwhile.
    let (loader, status) = tokio::task::spawn_blocking(move || {
        let status = loader.terminate(Duration::from_secs(30));
        (loader, status)
    })
    .await
    .unwrap();
    let status = status.expect("the loader exits after SIGTERM");
    assert!(status.success(), "exit status {status}: {}", loader.logs());

    let spans = collector.spans();
    let writes: Vec<_> = spans.iter().filter(|s| s.name == "loader.write").collect();
    assert!(
        !writes.is_empty(),
        "spans received: {spans:?}\n{}",
        loader.logs()
    );
    for span in &writes {
        assert_eq!(span.service, "loader");
        assert_eq!(span.trace_id, known.trace_id_hex());
        assert_eq!(span.parent_span_id, format!("{:016x}", known.parent_id));
        assert_eq!(span.attribute("source"), Some("qms"));
    }
    let messages: u64 = writes
        .iter()
        .map(|s| s.attribute("messages").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(messages, 5);
}
