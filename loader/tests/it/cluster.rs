//! The loader on a three-node NATS JetStream cluster (an R3 stream, servers
//! of the test's own on loopback): an initial load with two loaders sharing
//! the consumer, the stream's leader killed with -9 in the middle and
//! restarted; every record lands exactly once.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use etl_runtime::checkpoint::Checkpoints;
use proto::bus::StreamSettings;

const RECORDS: u64 = 6000;
const PAGE: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_loses_and_doubles_nothing_when_its_leader_is_killed() {
    testkit::abort_if_still_running("cluster", Duration::from_secs(240));
    let mut cluster = testkit::nats::TempNatsCluster::start(3);
    let urls = cluster.urls();
    let mut stream = testkit::unique_stream();
    stream.replicas = 3;
    let js = cluster_jetstream(&urls, &stream).await;
    // Buckets take their replicas from the settings (stream.replicas).
    let bucket = testkit::unique("ck");
    Checkpoints::open(&js, &bucket, stream.replicas)
        .await
        .unwrap();
    let mut kv = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    assert_eq!(kv.info().await.unwrap().config.num_replicas, 3);

    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let envelopes = generated(31, RECORDS, 1);
    let pages: Vec<Vec<proto::batch::Encoded>> = envelopes
        .chunks(PAGE)
        .map(|page| batch_messages(page, 100))
        .collect();
    let messages: usize = pages.iter().map(Vec::len).sum();
    let loaders: Vec<RunningLoader> = (0..2)
        .map(|_| RunningLoader::start(loader::testing::settings(&db, &urls, &stream, "loader")))
        .collect();

    let published = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(initial_load(
        js.clone(),
        stream.clone(),
        pages,
        published.clone(),
    ));
    testkit::wait_until(Duration::from_secs(60), "a third of the load", || async {
        published.load(Ordering::Relaxed) >= messages / 3 && testkit::count_records(&pool).await > 0
    })
    .await;
    let leader = stream_leader(&js, &stream).await;
    cluster.node(&leader).kill_server();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node(&leader).start_server();
    tokio::time::timeout(Duration::from_secs(90), load)
        .await
        .expect("the load finishes")
        .unwrap();

    testkit::wait_until(Duration::from_secs(90), "every record loaded", || async {
        testkit::count_records(&pool).await == RECORDS as i64
    })
    .await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    let mut inserted = 0;
    for loader in loaders {
        inserted += loader.stop().await.written.inserted;
    }
    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(inserted, RECORDS, "every record inserted once");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM record_changes").await,
        RECORDS as i64,
        "one change per record: no effect applied twice"
    );
    let mut info = js.get_stream(&stream.name).await.unwrap();
    let state = info.info().await.unwrap().state.clone();
    assert_eq!(
        state.messages, messages as u64,
        "re-published pages dropped as duplicates"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
}

/// A JetStream context on the cluster, once it has elected a meta leader
/// and created the test's stream.
async fn cluster_jetstream(urls: &str, stream: &StreamSettings) -> jetstream::Context {
    let nats = etl_runtime::nats::NatsSettings {
        url: urls.into(),
        ..Default::default()
    };
    let js = jetstream::new(nats.connect("cluster-test").await.unwrap());
    testkit::wait_until(Duration::from_secs(30), "the R3 stream", || async {
        proto::bus::ensure_stream(&js, stream).await.is_ok()
    })
    .await;
    js
}

/// The server name (`n1`…) of the stream's leader.
async fn stream_leader(js: &jetstream::Context, stream: &StreamSettings) -> String {
    let mut s = js.get_stream(&stream.name).await.unwrap();
    let info = s.info().await.unwrap();
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader")
}

/// Publishes page after page as an extractor's initial load does: a page
/// that fails (the leader died under it) is published again, whole, with
/// the same message ids, until the stream acknowledges it.
async fn initial_load(
    js: jetstream::Context,
    stream: StreamSettings,
    pages: Vec<Vec<proto::batch::Encoded>>,
    published: Arc<AtomicUsize>,
) {
    for page in pages {
        loop {
            let mut publisher = proto::bus::Publisher::new(&js, &stream, 64);
            let sent = async {
                for message in &page {
                    publisher.send_encoded(SOURCE, message.clone()).await?;
                }
                publisher.settle().await
            };
            match sent.await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        published.fetch_add(page.len(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
