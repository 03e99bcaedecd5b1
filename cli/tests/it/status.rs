//! `etl status` as cron and monitoring use it, against real NATS and
//! PostgreSQL: the verdict's exit status (0 healthy, 1 degraded, 2 down),
//! an answer within 5 s naming the server that is down, `--json`, and two
//! pipelines on different streams that do not mix. `etl brake` lists and
//! releases a held pass.

use std::process::Output;
use std::time::{Duration, Instant};

use etl_runtime::brake::{Brake, BrakeSettings, Decision};
use etl_runtime::database::DatabaseSettings;
use etl_runtime::sync_status::Sync;
use proto::bus::StreamSettings;

use crate::common;
use common::etl;

/// `etl args…` on this test's database and stream, with `extra`
/// environment; the output and how long it took.
fn status(
    db: &DatabaseSettings,
    stream: &StreamSettings,
    extra: &[(&str, String)],
    args: &[&str],
) -> (Output, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(args)
        .envs(testkit::service_env(db, stream))
        .env(
            "ETL__QMS__REJECTS__STREAM",
            format!("{}_REJECTS", stream.name),
        )
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .expect("run etl");
    (out, started.elapsed())
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output does not parse ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn components(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["component"].as_str().unwrap().to_string())
        .collect()
}

async fn record_sync(js: &async_nats::jetstream::Context, stream: &str, source: &str) {
    let sync = Sync {
        kind: "sync",
        published: 3,
        deleted: 0,
    };
    etl_runtime::sync_status::record_in(js, 1, stream, source, None, sync).await;
}

/// A listener that accepts connections and never answers: a server that
/// hangs (worse than one that refuses).
fn black_hole() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_exit_status_and_pipelines_apart() {
    let a = testkit::unique_stream();
    let b = testkit::unique_stream();
    let js = testkit::jetstream(&a).await;
    proto::bus::ensure_stream(&js, &b).await.unwrap();
    let db = testkit::fresh_database().await;
    etl(&db, &a, &["migrate"]);

    // Healthy: a recent sync, nothing held, no lag.
    record_sync(&js, &a.name, "qms").await;
    let (out, _) = status(&db, &a, &[], &["status", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["verdict"], "healthy");
    assert_eq!(v["last_syncs"][0]["key"], "qms");

    // The other pipeline: its sync and its held brake stay its own.
    record_sync(&js, &b.name, "infoclinica").await;
    let brake = |stream: &StreamSettings| {
        let (js, name) = (js.clone(), stream.name.clone());
        async move {
            Brake::open(
                &js,
                1,
                &name,
                "infoclinica",
                Some("north"),
                BrakeSettings::default(),
            )
            .await
            .unwrap()
        }
    };
    let held = brake(&b).await.check("reconcile", 100, 300).await.unwrap();
    assert_eq!(held, Decision::Hold);
    let (out, _) = status(&db, &a, &[], &["status", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["last_syncs"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["brakes"].as_array().unwrap().is_empty(), "{v}");
    let (out, _) = status(&db, &b, &[], &["status", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "b is degraded: {v}");
    assert_eq!(components(&v), ["brake"]);
    assert_eq!(v["last_syncs"][0]["key"], "infoclinica");
    assert_eq!(v["brakes"][0]["database"], "north");

    // The table says so too, and `etl brake` lists and releases it.
    let (out, _) = status(&db, &b, &[], &["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("DEGRADED") && table.contains("infoclinica/north"));
    let list = etl(&db, &b, &["brake", "list"]);
    assert!(list.contains("100 deletion(s) of 300"), "{list}");
    etl(&db, &b, &["brake", "release", "infoclinica", "north"]);
    let holds: serde_json::Value =
        serde_json::from_str(&etl(&db, &b, &["brake", "list", "--json"])).unwrap();
    assert!(holds[0]["released"]["at"].is_string(), "{holds}");
    let released = brake(&b).await.check("reconcile", 100, 300).await.unwrap();
    assert_eq!(released, Decision::SendReleased);
    brake(&b).await.released_sent().await.unwrap();
    let (out, _) = status(&db, &b, &[], &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", json(&out));

    // Lag beyond the limit: degraded.
    js.create_consumer_on_stream(
        async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("lagging".into()),
            ..Default::default()
        },
        a.name.as_str(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        testkit::publish_raw(&js, a.subject("qms"), format!("m{i}").into_bytes()).await;
    }
    let (out, _) = status(&db, &a, &[], &["status", "--json", "--max-lag", "2"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(components(&v), ["consumer"]);

    // NATS hangs: down within 5 s, naming NATS; PostgreSQL still answers.
    let (_nats, port) = black_hole();
    let url = ("ETL__NATS__URL", format!("nats://127.0.0.1:{port}"));
    let (out, took) = status(&db, &a, &[url], &["status", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(2), "{v}");
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    assert_eq!(components(&v), ["nats"]);
    assert!(v["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("NATS"));
    assert!(v["matcher_backlog"].is_number(), "PostgreSQL answered: {v}");

    // PostgreSQL hangs: likewise.
    let (_pg, port) = black_hole();
    let pg_port = ("ETL__DATABASE__PORT", port.to_string());
    let (out, took) = status(&db, &a, &[pg_port], &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("DOWN") && table.contains("PostgreSQL at 127.0.0.1"),
        "{table}"
    );
    assert!(!table.contains("NATS at"), "NATS answered: {table}");

    let _ = js.delete_stream(&a.name).await;
    let _ = js.delete_stream(&b.name).await;
}
