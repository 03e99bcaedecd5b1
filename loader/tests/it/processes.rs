//! Loader processes: several sharing one durable consumer, kill -9 in the
//! middle of a batch, and a PostgreSQL outage during a load.

use crate::common;

use std::time::Duration;

use common::*;
use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use testkit::ChildProcess;

fn spawn_loader(
    db: &DatabaseSettings,
    stream: &StreamSettings,
    extra: &[(&str, &str)],
) -> ChildProcess {
    let mut env = testkit::service_env(db, stream);
    env.push(("ETL__LOG__FORMAT".into(), "json".into()));
    env.push(("ETL__LOADER__BATCH_SIZE".into(), "500".into()));
    env.push(("ETL__LOADER__RETRY__INITIAL".into(), "100ms".into()));
    env.push(("ETL__LOADER__RETRY__MAX".into(), "2s".into()));
    // What a killed loader held comes back after ack_wait.
    env.push(("ETL__LOADER__ACK_WAIT".into(), "5s".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    ChildProcess::spawn(env!("CARGO_BIN_EXE_loader"), &[], &env)
}

/// The `inserted` count of the loader's exit line.
fn inserted_at_exit(logs: &str) -> u64 {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "loader stopped")
        .and_then(|v| v["inserted"].as_u64())
        .unwrap_or_else(|| panic!("no exit line in the loader's logs:\n{logs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_loader_processes_share_the_work_without_duplicates_or_losses() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;

    let mut loaders: Vec<_> = (0..3).map(|_| spawn_loader(&db, &stream, &[])).collect();
    let envelopes = generated(3, 10_000, 1);
    assert_eq!(
        testkit::publish_all(&js, &stream, envelopes.clone()).await,
        10_000
    );
    wait_drained(&js, &stream, "loader", Duration::from_secs(120)).await;

    let mut shares = Vec::new();
    for loader in &mut loaders {
        let status = loader
            .terminate(Duration::from_secs(30))
            .expect("loader exits after SIGTERM");
        assert!(
            status.success(),
            "graceful shutdown exits 0: {status:?}\n{}",
            loader.logs()
        );
        shares.push(inserted_at_exit(&loader.logs()));
    }
    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(
        shares.iter().sum::<u64>(),
        10_000,
        "each record inserted exactly once: {shares:?}"
    );
    assert!(
        shares.iter().filter(|&&n| n > 0).count() >= 2,
        "the work is shared: {shares:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM record_changes").await,
        10_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_load_then_restart_gives_the_exact_state() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;

    let envelopes = generated(4, 30_000, 1);
    assert_eq!(
        testkit::publish_all(&js, &stream, envelopes.clone()).await,
        30_000
    );
    // Small batches and one writer: many commits, so the kill lands between
    // a commit and its acks or inside a transaction.
    let mut loader = spawn_loader(
        &db,
        &stream,
        &[
            ("ETL__LOADER__BATCH_SIZE", "200"),
            ("ETL__LOADER__WRITERS", "1"),
        ],
    );
    testkit::wait_until(Duration::from_secs(60), "the load to start", || async {
        testkit::count_records(&pool).await >= 2_000
    })
    .await;
    loader.kill9();
    let at_kill = testkit::count_records(&pool).await;
    assert!(at_kill < 30_000, "killed in the middle ({at_kill} rows)");

    let mut restarted = spawn_loader(&db, &stream, &[]);
    wait_drained(&js, &stream, "loader", Duration::from_secs(120)).await;
    assert!(restarted
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));

    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM record_changes").await,
        30_000,
        "no change recorded twice"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_during_a_load_then_started_the_loader_recovers_by_itself() {
    // A PostgreSQL cluster of this test's own: stopping the shared server
    // would break the other tests.
    let cluster = testkit::postgres::TempCluster::start();
    let db = testkit::create_database(cluster.server()).await;
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;

    let envelopes = generated(5, 20_000, 1);
    let (first, second) = envelopes.split_at(5_000);
    testkit::publish_all(&js, &stream, first.to_vec()).await;
    let mut loader = spawn_loader(&db, &stream, &[("ETL__DATABASE__ACQUIRE_TIMEOUT", "1s")]);
    {
        let pool = testkit::pool(&db).await;
        testkit::wait_until(Duration::from_secs(60), "the first records", || async {
            testkit::count_records(&pool).await > 0
        })
        .await;
        pool.close().await;
    }

    cluster.stop_server();
    // The stream keeps filling while the database is down.
    testkit::publish_all(&js, &stream, second.to_vec()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.start_server();

    wait_drained(&js, &stream, "loader", Duration::from_secs(180)).await;
    let status = loader
        .terminate(Duration::from_secs(30))
        .expect("loader exits after SIGTERM");
    assert!(status.success(), "{}", loader.logs());
    let logs = loader.logs();
    assert!(
        logs.contains("transient failure writing a batch")
            || logs.contains("PostgreSQL not available"),
        "the outage was seen and retried:\n{logs}"
    );

    let pool = testkit::pool(&db).await;
    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM dead_letters").await,
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_start_and_killed_during_a_load_the_loader_waits_and_recovers() {
    // A NATS server of this test's own, not running yet when the loader starts.
    let mut nats = testkit::nats::TempNats::start();
    let url = nats.url();
    nats.kill_server();
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let mut loader = spawn_loader(&db, &stream, &[("ETL__NATS__URL", url.as_str())]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        loader.is_running(),
        "the loader waits for NATS instead of exiting:\n{}",
        loader.logs()
    );

    nats.start_server();
    let js = testkit::jetstream_at(&url, &stream).await;
    let envelopes = generated(6, 20_000, 1);
    let (first, second) = envelopes.split_at(10_000);
    testkit::publish_all(&js, &stream, first.to_vec()).await;
    let pool = testkit::pool(&db).await;
    testkit::wait_until(Duration::from_secs(60), "the first records", || async {
        testkit::count_records(&pool).await > 0
    })
    .await;

    // kill -9 of the server in the middle of the load; its file store keeps
    // the stream and the consumer's state.
    nats.kill_server();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_server();
    let js = testkit::jetstream_at(&url, &stream).await;
    testkit::publish_all(&js, &stream, second.to_vec()).await;
    wait_drained(&js, &stream, "loader", Duration::from_secs(120)).await;
    let status = loader
        .terminate(Duration::from_secs(30))
        .expect("loader exits after SIGTERM");
    assert!(status.success(), "{}", loader.logs());

    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_load_finishes_the_batches_in_hand_and_leaves_nothing_unacknowledged(
) {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let envelopes = generated(8, 30_000, 1);
    testkit::publish_all(&js, &stream, envelopes.clone()).await;

    // A long ack_wait: anything left unacknowledged would stay stuck for a minute.
    let long_ack_wait = [
        ("ETL__LOADER__ACK_WAIT", "60s"),
        ("ETL__LOADER__BATCH_SIZE", "200"),
    ];
    let mut loader = spawn_loader(&db, &stream, &long_ack_wait);
    testkit::wait_until(Duration::from_secs(60), "the load to start", || async {
        testkit::count_records(&pool).await >= 2_000
    })
    .await;
    let status = loader
        .terminate(Duration::from_secs(30))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit 0: {status:?}\n{}", loader.logs());
    let stopped_at = testkit::count_records(&pool).await;

    // Nothing is left in limbo: every message delivered to the stopped loader
    // was written and acked after its commit.
    assert_eq!(
        consumer_info(&js, &stream, "loader")
            .await
            .unwrap()
            .num_ack_pending,
        0,
        "nothing unacknowledged after a graceful stop:\n{}",
        loader.logs()
    );
    assert!(
        stopped_at < 30_000,
        "stopped in the middle ({stopped_at} rows)"
    );

    let mut next = spawn_loader(&db, &stream, &long_ack_wait);
    wait_drained(&js, &stream, "loader", Duration::from_secs(120)).await;
    assert!(next
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    assert_state(&pool, &expected_of(&envelopes)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM record_changes").await,
        30_000
    );
}

fn logs_contain(logs: &str, message: &str) -> bool {
    !lines_with_message(logs, message).is_empty()
}

/// The loader's JSON log lines with this message.
fn lines_with_message(logs: &str, message: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dead_letter_is_logged_once_with_identifiers_and_reason_only() {
    let Fixture {
        db,
        stream,
        js,
        pool,
    } = Fixture::new().await;
    let at = chrono::Utc::now();
    let name = |last: &str| proto::PatientRecord {
        last_name: Some(last.into()),
        ..Default::default()
    };
    // PostgreSQL refuses one record with a message that quotes its value
    // (as a site's own trigger might).
    etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.last_name = 'Триггеров' THEN
                 RAISE EXCEPTION 'refused %', NEW.last_name USING ERRCODE = '23514';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER test_refuse BEFORE INSERT ON source_records
             FOR EACH ROW EXECUTE FUNCTION test_refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let secret = "Секретов".repeat(100);
    let envelopes = vec![
        proto::Envelope::upsert(SOURCE, "100/A1", 1, at, name(&secret)),
        proto::Envelope::upsert("evil", "200/B2", 1, at, name("Злоумышленников")),
        proto::Envelope::upsert(SOURCE, "300/C3", 1, at, name("Обычнов")),
        proto::Envelope::upsert(SOURCE, "400/D4", 1, at, name("Триггеров")),
    ];
    testkit::publish_all(&js, &stream, envelopes).await;
    // Published raw: a newline cannot be in the message-id header.
    let control = proto::Envelope::upsert(SOURCE, "500\u{1b}[2J\nE5", 1, at, name("Управляющий"));
    testkit::publish_raw(&js, stream.subject(SOURCE), control.encode()).await;
    // A type error whose value serde would print in backticks.
    testkit::publish_raw(&js, stream.subject(SOURCE), integer_source_id()).await;
    let mut loader = spawn_loader(
        &db,
        &stream,
        &[
            ("ETL__LOADER__LIMITS__NAME", "50"),
            ("ETL__DATABASE__MIGRATE", "true"),
        ],
    );
    wait_drained(&js, &stream, "loader", Duration::from_secs(60)).await;
    assert!(loader.terminate(Duration::from_secs(30)).is_some());
    assert_eq!(testkit::count_records(&pool).await, 1);
    assert!(
        logs_contain(
            &loader.logs(),
            "batch rejected by PostgreSQL; isolating the bad records"
        ),
        "the trigger's refusal was met: {}",
        loader.logs()
    );

    let logs = loader.logs();
    let lines = lines_with_message(&logs, "record set aside as a dead letter");
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap_or("?"),
                v["source_id"].as_str().unwrap_or("?"),
                v["reason_code"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(
        got_sorted,
        [
            ("-", "-", "undecodable"),
            ("evil", "200/B2", "unknown_source"),
            ("qms", "100/A1", "field_too_long"),
            ("qms", "400/D4", "database_rejected"),
            ("qms", "500\\u{1b}[2J\\nE5", "source_id_control_character"),
        ],
        "{logs}"
    );
    let reason = |code: &str| {
        lines
            .iter()
            .find(|v| v["reason_code"] == code)
            .map(|v| v["reason"].as_str().unwrap_or("?").to_string())
            .unwrap()
    };
    assert_eq!(
        reason("field_too_long"),
        "record.last_name is longer than 50 characters"
    );
    assert_eq!(
        reason("undecodable"),
        "undecodable message: wrong_type at source_id"
    );
    for value in [
        "Секретов",
        "Злоумышленников",
        "Обычнов",
        "Триггеров",
        "Управляющий",
        "4509123456",
        "\u{1b}",
    ] {
        assert!(!logs.contains(value), "{value:?} in the logs: {logs}");
    }
}

/// The loader binary run to its end with `env` and `args`: exit status,
/// stdout, stderr.
fn run_loader(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .expect("run the loader");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A misspelled variable stops the loader at start with a message naming
/// the setting and the variable, never a value; a variable of another
/// service's section (a shared environment) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_setting_stops_the_loader_naming_it() {
    let db = testkit::local_postgres();
    let stream = testkit::unique_stream();
    let mut env = testkit::service_env(&db, &stream);
    env.push(("ETL__DATABASE__DATABSE_NAME".into(), "elsewhere".into()));
    env.push(("ETL__DATABASE__PASWORD".into(), "s3cret-value".into()));
    env.push(("ETL__QMS__URL".into(), "http://qms.example".into()));
    let (status, _, stderr) = run_loader(&env, &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("`database.databse_name` (environment: ETL__DATABASE__DATABSE_NAME)"),
        "{stderr}"
    );
    assert!(stderr.contains("`database.pasword`"), "{stderr}");
    assert!(
        !stderr.contains("qms"),
        "another service's section: {stderr}"
    );
    for value in ["s3cret-value", "elsewhere"] {
        assert!(!stderr.contains(value), "{value} in {stderr}");
    }
}

/// `loader --check-config`: the settings, NATS and PostgreSQL, one line
/// each, exit status 0 when all pass and 1 when one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reaches_nats_and_postgresql() {
    let Fixture { db, stream, .. } = Fixture::new().await;
    let env = testkit::service_env(&db, &stream);
    let (status, out, err) = run_loader(&env, &["--check-config"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("ok    settings"), "{out}");
    assert!(out.contains("ok    nats"), "{out}");
    assert!(
        out.contains(&format!(
            "ok    postgresql               database {}",
            db.database_name
        )),
        "{out}"
    );
    assert!(out.contains("configuration OK: 3 checks passed"), "{out}");

    // A database that does not exist, a NATS server that is not there.
    let mut bad = env.clone();
    bad.push((
        "ETL__DATABASE__DATABASE_NAME".into(),
        "no_such_db_check".into(),
    ));
    bad.push(("ETL__NATS__URL".into(), "nats://127.0.0.1:1".into()));
    let (status, out, _) = run_loader(&bad, &["--check-config"]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("FAIL  nats"), "{out}");
    assert!(
        out.contains("FAIL  postgresql") && out.contains("no_such_db_check"),
        "{out}"
    );
    assert!(
        out.contains("configuration NOT OK: 2 of 3 checks failed"),
        "{out}"
    );

    // An unknown key: nothing else can be checked.
    let mut typo = env;
    typo.push(("ETL__LOADER__BATCH_SISE".into(), "10".into()));
    let (status, out, _) = run_loader(&typo, &["--check-config"]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("FAIL  settings") && out.contains("`loader.batch_sise`"),
        "{out}"
    );
}
