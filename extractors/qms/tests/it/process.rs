//! The extractor binary: kill -9 in the middle of a sync, then a restart,
//! gives the exact final state; `--no-daemon` exits 0 after one sync, 3
//! while the deletion brake holds.

use crate::common;

use std::time::Duration;

use common::*;
use testkit::ChildProcess;

const ROWS: u64 = 5000;

fn env(f: &Fixture) -> Vec<(String, String)> {
    let q = &f.settings.qms;
    let mut env = testkit::service_env(&f.db, &f.stream);
    env.extend([
        ("ETL__QMS__URL".to_string(), q.url.clone()),
        ("ETL__QMS__READ_TIMEOUT".into(), "5s".into()),
        (
            "ETL__QMS__STATE__OBJECT_BUCKET".into(),
            q.state.object_bucket.clone(),
        ),
        ("ETL__QMS__REJECTS__STREAM".into(), q.rejects.stream.clone()),
        (
            "ETL__QMS__REJECTS__SUBJECT".into(),
            q.rejects.subject.clone(),
        ),
        // One ack in flight: publishing takes long enough to be killed in.
        ("ETL__QMS__PUBLISH_WINDOW".into(), "1".into()),
        ("RUST_LOG".into(), "info".into()),
    ]);
    env
}

fn extractor(env: &[(String, String)]) -> ChildProcess {
    ChildProcess::spawn(env!("CARGO_BIN_EXE_qms-extractor"), &["--no-daemon"], env)
}

async fn wait_exit(child: &mut ChildProcess) {
    testkit::wait_until(Duration::from_secs(120), "the extractor to exit", || {
        let running = child.is_running();
        async move { !running }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_syncs_then_restart_gives_the_exact_state() {
    let f = Fixture::new(ROWS).await;
    let env = env(&f);

    // First sync, killed while it publishes.
    let mut child = extractor(&env);
    testkit::wait_until(Duration::from_secs(60), "publishing to start", || async {
        f.stream_messages().await > 0
    })
    .await;
    child.kill9();
    let published = f.stream_messages().await;
    assert!(
        published < ROWS,
        "killed before the sync finished ({published})"
    );

    // Restart: the sync runs again from the same (empty) state and completes.
    let mut child = extractor(&env);
    wait_exit(&mut child).await;
    assert!(child.logs().contains("sync complete"), "{}", child.logs());
    f.wait_for_state(&expected(&f.sim.clean_export(), &[]))
        .await;

    // Edits and deletions; the second sync is killed while it publishes.
    let all = f.sim.his_numbers();
    f.sim.edit(0..1000);
    f.sim.delete(4900..4950);
    let before = f.stream_messages().await;
    let mut child = extractor(&env);
    testkit::wait_until(Duration::from_secs(60), "publishing to start", || async {
        f.stream_messages().await > before
    })
    .await;
    child.kill9();
    let mut child = extractor(&env);
    wait_exit(&mut child).await;
    assert!(child.logs().contains("sync complete"), "{}", child.logs());
    let state = expected(&f.sim.clean_export(), &all[4900..4950]);
    f.wait_for_state(&state).await;

    // Nothing is left to do, and every content change was recorded once.
    let mut child = extractor(&env);
    wait_exit(&mut child).await;
    let logs = child.logs();
    assert!(logs.contains("upserts=0 deletes=0"), "{logs}");
    assert_eq!(
        count(&f.pool, "SELECT count(*) FROM record_changes").await,
        (ROWS + 1000 + 50) as i64
    );
    f.stop().await;
}

/// Starts the extractor and kills it with SIGKILL once it has published
/// more than `after` messages past `before`, well before the end.
async fn kill_mid_publish(f: &Fixture, env: &[(String, String)], before: u64, after: u64) {
    let mut child = extractor(env);
    testkit::wait_until(
        Duration::from_secs(60),
        "publishing to be under way",
        || async { f.stream_messages().await > before + after },
    )
    .await;
    child.kill9();
    let published = f.stream_messages().await - before;
    assert!(
        published < ROWS,
        "killed before the sync finished ({published})"
    );
}

async fn sync_to_the_end(env: &[(String, String)]) {
    let mut child = extractor(env);
    wait_exit(&mut child).await;
    assert!(child.logs().contains("sync complete"), "{}", child.logs());
}

/// The first sync is killed after publishing some records; those records
/// then leave the export. The later syncs must delete them although no sync
/// had completed when they were published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_published_by_a_killed_first_sync_are_deleted_when_they_leave_the_export() {
    let f = Fixture::new(ROWS).await;
    let env = env(&f);
    let all = f.sim.his_numbers();
    kill_mid_publish(&f, &env, 0, 200).await;

    // The first rows of the export were published; they disappear.
    f.sim.delete(0..100);
    sync_to_the_end(&env).await;
    sync_to_the_end(&env).await;
    f.wait_for_state(&expected(&f.sim.clean_export(), &all[0..100]))
        .await;
    f.stop().await;
}

/// A → B killed mid-publish → A again: the records B reached PostgreSQL
/// with must return to A, although A is what the last complete sync saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_published_by_a_killed_sync_is_reverted_when_the_export_reverts() {
    let f = Fixture::new(ROWS).await;
    let env = env(&f);
    sync_to_the_end(&env).await;
    let export_a = f.sim.clean_export();
    f.wait_for_state(&expected(&export_a, &[])).await;

    f.sim.edit(0..ROWS);
    let before = f.stream_messages().await;
    kill_mid_publish(&f, &env, before, 200).await;

    f.sim.restore(0..ROWS);
    assert_eq!(f.sim.clean_export(), export_a);
    sync_to_the_end(&env).await;
    f.wait_for_state(&expected(&export_a, &[])).await;
    // A complete sync leaves nothing to do.
    let mut child = extractor(&env);
    wait_exit(&mut child).await;
    assert!(
        child.logs().contains("upserts=0 deletes=0"),
        "{}",
        child.logs()
    );
    f.stop().await;
}

/// The daemon (no `--no-daemon`) with its operations endpoint on a free
/// local port.
fn daemon_with_endpoint(mut env: Vec<(String, String)>) -> (ChildProcess, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    env.push(("ETL__HTTP__LISTEN".into(), addr.to_string()));
    let child = ChildProcess::spawn(env!("CARGO_BIN_EXE_qms-extractor"), &[], &env);
    (child, addr)
}

/// The daemon's operations endpoint: `/healthz`, `/readyz` (NATS and the
/// stream) and `/metrics` with the sync's metrics and no personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_health_and_readiness() {
    let f = Fixture::new(200).await;
    let (mut child, addr) = daemon_with_endpoint(env(&f));

    let page = testkit::wait_for_metric(addr, "qms_state_records", Duration::from_secs(60)).await;
    let names = parse_export(
        f.sim.clean_export().as_bytes(),
        "utf-8",
        chrono::Utc::now().date_naive(),
    );
    for (his, record) in names.iter().take(20) {
        let name = record.last_name.as_deref().unwrap_or("");
        assert!(
            name.is_empty() || !page.contains(name),
            "a last name on /metrics"
        );
        assert!(
            !page.contains(&format!("\"{his}\"")),
            "a his number label on /metrics"
        );
    }
    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    let (code, body) = testkit::http_get(addr, "/readyz")
        .await
        .expect("/readyz answers");
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&body["checks"]["nats"], &body["checks"]["stream"]),
        (&"ok".into(), &"ok".into())
    );
    assert!(
        child
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        child.logs()
    );
    f.stop().await;
}

/// Readiness follows NATS: the daemon on a throwaway NATS server of this
/// test (the shared one is never stopped) is ready, falls to 503 with the
/// `nats` check failing while that server is down, and is ready again when
/// it is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_readiness_follows_nats() {
    let f = Fixture::new(50).await;
    let mut nats = testkit::nats::TempNats::start();
    let mut env = env(&f);
    env.push(("ETL__NATS__URL".into(), nats.url()));
    env.push(("ETL__HTTP__CHECK_TIMEOUT".into(), "1s".into()));
    let (mut child, addr) = daemon_with_endpoint(env);

    testkit::wait_ready(addr, 200, "nats", true).await;
    nats.kill_server();
    testkit::wait_ready(addr, 503, "nats", false).await;
    assert_eq!(
        testkit::http_get(addr, "/healthz").await.map(|r| r.0),
        Some(200),
        "alive while not ready"
    );
    nats.start_server();
    testkit::wait_ready(addr, 200, "nats", true).await;
    assert!(
        child
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        child.logs()
    );
    f.stop().await;
}

/// A slow download logs its progress (bytes, rate) while it lasts: without
/// a terminal, a line per `qms.progress_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_logs_its_progress() {
    let f = Fixture::with_sim(qms_sim::Config {
        count: 1000,
        rows_per_chunk: 50,
        fault: qms_sim::Fault::SlowDrip,
        drip_delay: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut env = env(&f);
    env.push(("ETL__QMS__PROGRESS_INTERVAL".into(), "500ms".into()));
    let mut child = extractor(&env);
    wait_exit(&mut child).await;
    let logs = child.logs();
    let progress = logs.matches("progress task=qMS export download").count();
    assert!(progress >= 2, "{logs}");
    assert!(
        logs.contains("unit=\"bytes\"") && logs.contains("per_second="),
        "{logs}"
    );
    f.stop().await;
}

/// `--no-daemon` exits with status 3 while the deletion brake holds (a cron
/// job notices), and 0 again once an operator released it and the
/// deletions went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_exits_3_while_the_brake_holds() {
    let f = Fixture::new(500).await;
    let env = env(&f);
    let run = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qms-extractor"))
            .arg("--no-daemon")
            .envs(env.iter().cloned())
            .env("ETL__QMS__PUBLISH_WINDOW", "256")
            .output()
            .await
            .expect("run the extractor");
        out.status.code().expect("exited")
    };
    let holds = || async {
        etl_runtime::brake::list(&f.js, &f.stream.name)
            .await
            .unwrap()
    };
    assert_eq!(run().await, 0);
    let gone = f.sim.his_numbers()[0..100].to_vec();
    f.sim.delete(0..100);
    assert_eq!(run().await, 3, "20% deleted: held");
    let held = holds().await;
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].0.source.as_str(),
            held[0].0.deletions,
            held[0].0.known
        ),
        ("qms", 100, 500)
    );
    assert_eq!(run().await, 3, "still held on the next run");

    etl_runtime::brake::release(&f.js, &f.stream.name, "qms", None, "test")
        .await
        .unwrap();
    assert_eq!(run().await, 0, "released: the deletions go out");
    assert!(holds().await.is_empty());
    f.wait_for_state(&expected(&f.sim.clean_export(), &gone))
        .await;
    f.stop().await;
}

/// `qms-extractor --check-config`: the settings, NATS and the export URL
/// (status and headers only), exit status 1 when one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reaches_nats_and_the_export() {
    let f = Fixture::new(100).await;
    let env = env(&f);
    let check = |env: Vec<(String, String)>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qms-extractor"))
            .arg("--check-config")
            .envs(env)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (status, out) = check(env.clone()).await;
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("ok    nats"), "{out}");
    assert!(
        out.contains("ok    qms export") && out.contains("HTTP 200"),
        "{out}"
    );
    let mut bad = env.clone();
    let url = f
        .settings
        .qms
        .url
        .replace("qms_export_pat", "no_such_export");
    bad.push(("ETL__QMS__URL".into(), url));
    let (status, out) = check(bad).await;
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.contains("FAIL  qms export") && out.contains("HTTP status 404"),
        "{out}"
    );
    f.stop().await;
}
