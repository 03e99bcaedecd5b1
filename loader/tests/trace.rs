//! Trace context across the bus: the `traceparent` a publisher sets is stored
//! with the change the loader makes, for the matcher to continue the trace.

mod common;

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
