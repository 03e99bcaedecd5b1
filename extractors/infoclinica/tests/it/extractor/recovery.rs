//! The daemon never exits and never leaves a database stopped for a
//! transient failure; a permanent one (the configuration names a column the
//! database lacks) stops it with a clear message.

use std::time::Duration;

use infoclinica_extractor::{DatabaseSummary, Mode};
use testkit::nats::TempNats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;

type Daemon = JoinHandle<anyhow::Result<Vec<DatabaseSummary>>>;

/// Passes of database `name` so far, per its checkpoint.
async fn passes(fx: &Fixture, name: &str) -> u64 {
    fx.checkpoint(name).await.map_or(0, |s| s.passes)
}

/// Waits until database `name` has done `more` passes beyond `from`,
/// failing at once if the daemon ended.
async fn wait_for_passes(fx: &Fixture, daemon: &mut Daemon, name: &str, from: u64, more: u64) {
    let started = std::time::Instant::now();
    while passes(fx, name).await < from + more {
        if daemon.is_finished() {
            let result = daemon.await.unwrap();
            panic!("the daemon ended: {result:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: no pass for 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shuts the daemon down; its summaries, one per database.
async fn stop(shutdown: &CancellationToken, daemon: Daemon) -> Vec<DatabaseSummary> {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .expect("the daemon returns Ok")
}

/// NATS killed and restarted under the daemon, down longer than a request
/// waits: checkpoint writes sent while it was down reach the restarted
/// server, their replies long lost, and the retry then finds the key moved
/// on to its own value. The daemon keeps running, and a change made after
/// each restart reaches PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_nats_restarts() {
    let fb = FbDatabase::create(300, true);
    let mut nats = TempNats::start();
    let fx = Fixture::on_nats(&nats.url()).await;
    let mut settings = fx.settings(&fb.settings);
    settings.extractor.delta_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let mut daemon: Daemon = tokio::spawn(infoclinica_extractor::run(
        settings,
        Mode::Daemon,
        shutdown.clone(),
    ));
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    for round in 1..=3 {
        let before = passes(&fx, "branch").await;
        nats.kill_server();
        tokio::time::sleep(Duration::from_secs(7)).await;
        nats.start_server();
        wait_for_passes(&fx, &mut daemon, "branch", before, 3).await;
        fb.exec(&format!(
            "UPDATE CLIENTS SET LASTNAME = 'Рестартов{round}' WHERE PCODE = {round}"
        ));
        wait_for_state(&fx.pool, &fb.expected(&[])).await;
    }
    let summaries = stop(&shutdown, daemon).await;
    assert!(summaries[0].failures >= 1, "NATS outages retried");
    fx.finish().await;
}

/// One database's sync fails (its checkpoint is deleted under it — an
/// operator's "start over" — so its next write conflicts) while another
/// runs: the failed one is started again from the stored checkpoint after
/// a backoff, the other goes on, the process stays up, and changes in both
/// reach PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_database_is_started_again_while_the_other_runs() {
    let mut north = FbDatabase::create(400, true);
    north.settings.name = "north".into();
    north.settings.source_id_prefix = "north:".into();
    let mut south = FbDatabase::create(300, true);
    south.settings.name = "south".into();
    south.settings.source_id_prefix = "south:".into();
    let fx = Fixture::new().await;
    let mut settings = fx.settings(&north.settings);
    settings.databases.push(south.settings.clone());
    settings.extractor.delta_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let mut daemon: Daemon = tokio::spawn(infoclinica_extractor::run(
        settings,
        Mode::Daemon,
        shutdown.clone(),
    ));
    let expected = |n: &FbDatabase, s: &FbDatabase| {
        let mut all = n.expected(&[]);
        all.extend(s.expected(&[]));
        all
    };
    wait_for_state(&fx.pool, &expected(&north, &south)).await;
    let first_load = fx.checkpoint("south").await.unwrap().initial.unwrap();

    let kv = fx.js.get_key_value(&fx.checkpoint_bucket).await.unwrap();
    kv.delete("south").await.unwrap();
    // South starts over (a new initial load), north keeps passing.
    let north_passes = passes(&fx, "north").await;
    testkit::wait_until(Duration::from_secs(60), "south's new load", || async {
        fx.checkpoint("south")
            .await
            .and_then(|s| s.initial)
            .is_some_and(|l| l.done && l.started_at > first_load.started_at)
    })
    .await;
    wait_for_passes(&fx, &mut daemon, "north", north_passes, 2).await;
    wait_for_passes(&fx, &mut daemon, "south", 0, 2).await;

    south.exec("UPDATE CLIENTS SET LASTNAME = 'Южная' WHERE PCODE = 5");
    north.exec("UPDATE CLIENTS SET LASTNAME = 'Северная' WHERE PCODE = 6");
    wait_for_state(&fx.pool, &expected(&north, &south)).await;
    assert!(!daemon.is_finished(), "the process stays up");
    let summaries = stop(&shutdown, daemon).await;
    assert!(summaries[1].failures >= 1, "south's failure counted");
    fx.finish().await;
}

/// A configured column the table does not have is no outage: the daemon
/// stops at once with a message naming it, instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column_stops_the_daemon_with_a_clear_message() {
    let fb = FbDatabase::create(50, true);
    let fx = Fixture::new().await;
    let mut db = fb.settings.clone();
    db.table.snils = Some("NO_SUCH_COLUMN".into());
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        infoclinica_extractor::run(fx.settings(&db), Mode::Daemon, CancellationToken::new()),
    )
    .await
    .expect("stops instead of retrying");
    let message = format!("{:#}", result.expect_err("a permanent error"));
    assert!(
        message.contains("NO_SUCH_COLUMN") && message.contains("does not exist"),
        "{message}"
    );
    fx.finish().await;
}
