//! PostgreSQL failing over under load: a primary and a synchronous
//! streaming standby (pg_basebackup) of the test's own, two loaders and the
//! matcher configured with both hosts (`database.host = "primary,standby"`).
//! The primary is stopped at once and the standby promoted in the middle of
//! the load; the services move to it and nothing is lost.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaders_and_matcher_carry_on_against_a_promoted_standby() {
    testkit::abort_if_still_running("failover", Duration::from_secs(240));
    let primary = testkit::postgres::TempCluster::start();
    let mut db = testkit::create_database(primary.server()).await;
    let setup = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR
        .run(&setup)
        .await
        .expect("migrations");
    setup.close().await;
    let standby = primary.start_standby();
    primary.wait_synchronous_standby().await;
    db.host = format!("127.0.0.1:{},127.0.0.1:{}", primary.port(), standby.port());
    // The test's own view follows the failover too.
    let pool = db.pool();

    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let consumer = testkit::unique("loader");
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let settings = loader::testing::settings(&db, &testkit::nats_url(), &stream, &consumer);
            loader::testing::RunningLoader::start(settings)
        })
        .collect();
    let mut matcher_settings = matcher::Settings {
        database: db.clone(),
        ..Default::default()
    };
    matcher_settings.matcher.poll_interval = Duration::from_millis(200);
    let matcher_stop = CancellationToken::new();
    let matcher_task = tokio::spawn(matcher::run(matcher_settings, matcher_stop.clone()));

    let records = truth(11, 1000);
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let envelopes: Vec<proto::Envelope> = records
        .iter()
        .map(|t| proto::Envelope::upsert(t.source, t.source_id.clone(), 1, at, t.record.clone()))
        .collect();
    let n = envelopes.len() as i64;
    let publish = {
        let (js, stream) = (js.clone(), stream.clone());
        tokio::spawn(async move {
            for chunk in envelopes.chunks(100) {
                testkit::publish_all(&js, &stream, chunk.to_vec()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    testkit::wait_until(
        Duration::from_secs(60),
        "a part loaded and matched",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM person_memberships WHERE valid_to IS NULL",
            )
            .await
                > 0
                && testkit::count_records(&pool).await >= n / 4
        },
    )
    .await;
    let loaded_before = testkit::count_records(&pool).await;
    primary.stop_server();
    standby.promote();
    publish.await.unwrap();

    testkit::wait_until(
        Duration::from_secs(120),
        "every record loaded and matched on the promoted standby",
        || async {
            testkit::count_records(&pool).await == n
                && count(
                    &pool,
                    "SELECT count(*) FROM person_memberships WHERE valid_to IS NULL",
                )
                .await
                    == n
                && count(&pool, "SELECT count(*) FROM record_changes").await == 0
        },
    )
    .await;
    assert!(
        loaded_before < n,
        "the primary stopped in the middle of the load"
    );
    let on_standby: bool = sqlx::query_scalar("SELECT inet_server_port() = $1")
        .bind(standby.port() as i32)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        on_standby,
        "the services' pools are on the promoted standby"
    );
    let sources: i64 = count(
        &pool,
        "SELECT count(DISTINCT (source, source_id)) FROM source_records",
    )
    .await;
    assert_eq!(sources, n, "every record once");
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);

    matcher_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), matcher_task)
        .await
        .expect("the matcher stops")
        .unwrap()
        .unwrap();
    for loader in loaders {
        loader.stop().await;
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}
