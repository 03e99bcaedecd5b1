//! The deletion brake on both delta paths, against real Firebird, NATS and
//! PostgreSQL: a third of the table deleted (a wrong database path or a
//! half-restored backup looks like this) publishes no delete, the hold shows
//! in the brake bucket and the metric, a one-shot run exits with status 3,
//! and after the operator's release the deletes go out.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use infoclinica_extractor::Mode;
use tokio_util::sync::CancellationToken;

const ROWS: u64 = 300;
/// PCODEs 1..=100: a third of the table.
const GONE: i64 = 100;

/// Runs the extractor binary once with `args`: its exit code.
async fn run_once(fx: &Fixture, dir: &Path, fb: &FbDatabase, args: &[&str]) -> i32 {
    let config = fx.config_file(dir, fb, 3050);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_infoclinica-extractor"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("ETL__EXTRACTOR__SNAPSHOT_BUCKET", &fx.snapshot_bucket)
        .output()
        .await
        .expect("run the extractor");
    let code = out.status.code().expect("exited");
    if code != 0 && code != 3 {
        panic!(
            "extractor {args:?} exited {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    code
}

async fn deleted_in_postgres(fx: &Fixture) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM source_records WHERE source = 'infoclinica' AND deleted_at IS NOT NULL",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap()
}

async fn holds(fx: &Fixture) -> Vec<etl_runtime::brake::Hold> {
    etl_runtime::brake::list(&fx.js, &fx.stream.name)
        .await
        .unwrap()
        .into_iter()
        .map(|(hold, _)| hold)
        .collect()
}

/// Deletes PCODE 1..=GONE and renames PCODE 200 (a change that must still
/// go out while the brake holds).
fn delete_a_third(fb: &FbDatabase) {
    fb.exec(&format!("DELETE FROM CLIENTS WHERE PCODE <= {GONE}"));
    fb.exec("UPDATE CLIENTS SET LASTNAME = 'Braked' WHERE PCODE = 200");
}

async fn wait_for_rename(fx: &Fixture) {
    testkit::wait_until(Duration::from_secs(60), "the rename loaded", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM source_records WHERE source_id = '200' AND last_name = 'Braked'",
        )
        .fetch_one(&fx.pool)
        .await
        .unwrap_or(0);
        n == 1
    })
    .await;
}

async fn release_and_check(fx: &Fixture, pass: &str) {
    let held = holds(fx).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let h = &held[0];
    assert_eq!(
        (
            h.source.as_str(),
            h.database.as_deref(),
            h.pass.as_str(),
            h.deletions
        ),
        ("infoclinica", Some("branch"), pass, GONE as u64)
    );
    assert_eq!(h.known, ROWS);
    assert_eq!(deleted_in_postgres(fx).await, 0, "no delete went out");
    etl_runtime::brake::release(
        &fx.js,
        &fx.stream.name,
        "infoclinica",
        Some("branch"),
        "test",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_of_a_third_deleted_is_held_until_released() {
    let fb = FbDatabase::create(ROWS, false);
    let fx = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_once(&fx, dir.path(), &fb, &["--reconcile"]).await, 0);
    wait_for_state(&fx.pool, &fb.expected(&[])).await;

    delete_a_third(&fb);
    for _ in 0..2 {
        assert_eq!(
            run_once(&fx, dir.path(), &fb, &["--reconcile"]).await,
            3,
            "held: a one-shot run exits 3, and again on the next pass"
        );
    }
    wait_for_rename(&fx).await;
    release_and_check(&fx, "reconcile").await;

    assert_eq!(run_once(&fx, dir.path(), &fb, &["--reconcile"]).await, 0);
    let gone: Vec<i64> = (1..=GONE).collect();
    wait_for_state(&fx.pool, &fb.expected(&gone)).await;
    assert!(holds(&fx).await.is_empty(), "the hold is over");
    assert_eq!(run_once(&fx, dir.path(), &fb, &["--reconcile"]).await, 0);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_mass_delete_is_held_until_released_and_shows_in_the_metric() {
    let fb = FbDatabase::create(ROWS, true);
    let fx = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    extract(fx.settings(&fb.settings), Mode::InitialLoad).await;
    // The sample's own inserts are in the change log too.
    extract(fx.settings(&fb.settings), Mode::DeltaOnce).await;
    wait_for_state(&fx.pool, &fb.expected(&[])).await;

    delete_a_third(&fb);
    assert_eq!(run_once(&fx, dir.path(), &fb, &["--delta-sync"]).await, 3);
    wait_for_rename(&fx).await;
    let mut unprocessed: Vec<i64> = fb
        .changelog()
        .into_iter()
        .filter(|(_, _, processed)| processed == "N")
        .map(|(_, pcode, _)| pcode)
        .collect();
    unprocessed.sort_unstable();
    assert_eq!(
        unprocessed,
        (1..=GONE).collect::<Vec<_>>(),
        "the held deletions stay in the change log, the rename is processed"
    );

    // The daemon holds them too, and says so in its metric.
    let mut settings = fx.settings(&fb.settings);
    settings.http.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.extractor.delta_interval = Duration::from_millis(200);
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
    let held_line = |page: &str| {
        page.lines()
            .find(|l| {
                l.starts_with("etl_deletion_brake_held{")
                    && l.contains("source=\"infoclinica\"")
                    && l.contains("database=\"branch\"")
            })
            .map(str::to_string)
    };
    let page = testkit::wait_for_metric(addr, "etl_deletion_brake_held", WAIT).await;
    assert!(held_line(&page).unwrap().ends_with(" 1"), "{page}");
    release_and_check(&fx, "changelog").await;

    // The daemon's next pass sends them; the metric falls back to 0.
    let gone: Vec<i64> = (1..=GONE).collect();
    wait_for_state(&fx.pool, &fb.expected(&gone)).await;
    testkit::wait_until(WAIT, "the metric back at 0", || async {
        let page = testkit::http_get(addr, "/metrics").await.unwrap().1;
        held_line(&page).is_some_and(|l| l.ends_with(" 0"))
    })
    .await;
    assert!(holds(&fx).await.is_empty());
    assert!(fb.changelog().iter().all(|(_, _, p)| p == "Y"));
    shutdown.cancel();
    tokio::time::timeout(WAIT, daemon)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    fx.finish().await;
}

const WAIT: Duration = Duration::from_secs(60);
