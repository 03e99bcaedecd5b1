//! The extractor against the real local Firebird 3, NATS JetStream and
//! PostgreSQL (through the real loader, in process).

use crate::common;
mod check;
mod recovery;

use std::time::Duration;

use common::*;
use infoclinica_extractor::settings::SyncMode;
use infoclinica_extractor::Mode;

type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<chrono::NaiveDate>,
    Option<String>,
    Option<String>,
);

/// The whole table reaches PostgreSQL exactly, with the generated people's
/// names, dates and documents, and no trace of the portal passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_reaches_postgres_exactly() {
    let fb = FbDatabase::create(3000, true);
    let fx = Fixture::new().await;

    let summary = extract(fx.settings(&fb.settings), Mode::InitialLoad).await;
    assert_eq!(summary[0].initial.rows, 3000);
    assert_eq!(summary[0].initial.pages, 6);
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    assert_eq!(
        fx.stream_messages().await,
        6,
        "one batch message per page of 500 rows"
    );

    // What landed is the generated people, Cyrillic intact.
    let generator = synth::Generator::new(SEED);
    for i in [0u64, 1, 2, 777, 2999] {
        let p = generator.patient(i).record;
        let (last, first, middle, birth, unit, snils): Row = sqlx::query_as(
            "SELECT last_name, first_name, middle_name, birth_date, business_unit, snils \
             FROM source_records WHERE source = 'infoclinica' AND source_id = $1",
        )
        .bind((i + 1).to_string())
        .fetch_one(&fx.pool)
        .await
        .unwrap();
        assert_eq!(last, p.last_name, "record {i}");
        assert_eq!(first, p.first_name);
        assert_eq!(middle, p.middle_name);
        assert_eq!(birth, p.birth_date);
        assert_eq!(unit, p.business_unit);
        assert_eq!(snils, p.snils.map(|c| c.value));
    }
    let docs_ok: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM source_records WHERE jsonb_array_length(documents) > 0",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    assert!(docs_ok > 2500, "documents mapped: {docs_ok}");
    let passwords: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM source_records WHERE source_records::text LIKE '%pbkdf2$%'",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    assert_eq!(passwords, 0, "CLPASSWORD is never read");
    let issues: i64 =
        sqlx::query_scalar("SELECT count(*) FROM source_records WHERE issues <> '[]'::jsonb")
            .fetch_one(&fx.pool)
            .await
            .unwrap();
    assert_eq!(issues, 0, "generated rows are all valid");

    // Finished: the checkpoint says so, and a daemon start does not reload.
    let state = fx.checkpoint("branch").await.unwrap();
    let load = state.initial.unwrap();
    assert!(load.done);
    assert_eq!(load.after_pcode, 3000);
    fx.finish().await;
}

/// Inserts, updates and deletes reach PostgreSQL after one delta pass; only
/// what was published is marked processed; several changes of one PCODE
/// give one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_pass_carries_inserts_updates_and_deletes() {
    let fb = FbDatabase::create(1000, true);
    let fx = Fixture::new().await;
    extract(fx.settings(&fb.settings), Mode::InitialLoad).await;
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    assert_eq!(
        fx.stream_messages().await,
        2,
        "two pages, two batch messages"
    );
    // The sample's own inserts are in the change log too: mark them done.
    extract(fx.settings(&fb.settings), Mode::DeltaOnce).await;
    let base = fx.stream_messages().await;

    // 20 inserts, 30 updates (10 of them twice), 10 deletes, one updated
    // then deleted, one inserted then updated.
    {
        let mut conn = fb.writer();
        let generator = synth::Generator::new(99);
        for i in 0..20u64 {
            let sql = infoclinica_extractor::sample::insert_sql(
                5000 + i as i64,
                i,
                &generator.patient(i).record,
            );
            rsfbclient::prelude::Execute::execute(&mut conn, &sql, ()).unwrap();
        }
        use rsfbclient::prelude::*;
        conn.execute(
            "UPDATE CLIENTS SET LASTNAME = 'Изменённая' WHERE PCODE BETWEEN 101 AND 130",
            (),
        )
        .unwrap();
        conn.execute(
            "UPDATE CLIENTS SET FIRSTNAME = 'Ёжик' WHERE PCODE BETWEEN 101 AND 110",
            (),
        )
        .unwrap();
        conn.execute("DELETE FROM CLIENTS WHERE PCODE BETWEEN 201 AND 210", ())
            .unwrap();
        conn.execute(
            "UPDATE CLIENTS SET PHONE1 = '8 912 111 22 33' WHERE PCODE = 300",
            (),
        )
        .unwrap();
        conn.execute("DELETE FROM CLIENTS WHERE PCODE = 300", ())
            .unwrap();
        conn.execute("UPDATE CLIENTS SET MIDNAME = NULL WHERE PCODE = 5000", ())
            .unwrap();
        conn.close().unwrap();
    }
    let pending: Vec<_> = fb
        .changelog()
        .into_iter()
        .filter(|(_, _, p)| p == "N")
        .collect();
    assert_eq!(pending.len(), 20 + 30 + 10 + 10 + 2 + 1);

    // A pass whose publishes fail (no stream on the subject) marks nothing.
    let mut broken = fx.settings(&fb.settings);
    broken.stream.subject_prefix = testkit::unique("t");
    broken.stream.name = broken.stream.subject_prefix.to_uppercase();
    let broken_stream = broken.stream.name.clone();
    broken.nats.request_timeout = Duration::from_millis(500);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(infoclinica_extractor::run(
        without_stream_creation(broken, &fx).await,
        Mode::DeltaOnce,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    let stopped = run.await.unwrap().unwrap();
    assert!(stopped[0].failures > 0, "publishes failed and were retried");
    assert!(
        fb.changelog().iter().filter(|(_, _, p)| p == "N").count() == pending.len(),
        "nothing marked processed without acks"
    );
    let _ = fx.js.delete_stream(&broken_stream).await;

    let summary = extract(fx.settings(&fb.settings), Mode::DeltaOnce).await;
    let d = summary[0].delta;
    assert_eq!(d.changes, pending.len() as u64);
    assert_eq!(d.upserts, 20 + 30, "one message per PCODE");
    assert_eq!(d.deletes, 11);
    let deleted: Vec<i64> = (201..=210).chain([300]).collect();
    wait_for_state(&fx.pool, &fb.expected(&deleted)).await;
    assert_eq!(fx.stream_messages().await, base + 20 + 30 + 11);
    assert!(fb.changelog().iter().all(|(_, _, p)| p == "Y"));

    // A change after the pass stays unprocessed until the next one.
    fb.exec("UPDATE CLIENTS SET LASTNAME = 'Новая' WHERE PCODE = 400");
    let log = fb.changelog();
    assert_eq!(log.iter().filter(|(_, _, p)| p == "N").count(), 1);
    let state = fx.checkpoint("branch").await.unwrap();
    assert!(state.last_change_id.unwrap() < log.last().unwrap().0);
    fx.finish().await;
}

/// Settings whose stream does not exist (publishes get no responders): the
/// bucket lives on the real server, the stream is never created because
/// its subjects overlap nothing and `run` would create it — so create it
/// here, then delete it.
async fn without_stream_creation(
    settings: infoclinica_extractor::Settings,
    fx: &Fixture,
) -> infoclinica_extractor::Settings {
    // `run` ensures the stream; make it accept a different subject so
    // that our subject has no stream behind it.
    let mut stream_cfg = settings.stream.config();
    stream_cfg.subjects = vec![format!("{}.other", settings.stream.subject_prefix)];
    fx.js.get_or_create_stream(stream_cfg).await.unwrap();
    settings
}

/// Reconciliation without triggers: the second pass finds updates, inserts
/// and deletes by comparing row versions, also after a restart (snapshot in
/// the object store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_updates_and_deletes_without_triggers() {
    let fb = FbDatabase::create(1500, false);
    let fx = Fixture::new().await;
    let mut db = fb.settings.clone();
    db.sync = SyncMode::Reconcile;

    let first = extract(fx.settings(&db), Mode::ReconcileOnce).await;
    assert_eq!(
        first[0].delta.upserts, 1500,
        "the first pass publishes everything"
    );
    wait_for_state(&fx.pool, &fb.expected(&[])).await;

    // A pass with nothing changed publishes only the overlap window.
    let idle = extract(fx.settings(&db), Mode::DeltaOnce).await;
    assert_eq!(idle[0].delta.deletes, 0);
    assert!(
        idle[0].delta.upserts <= 200,
        "only the last-version overlap"
    );

    fb.exec("UPDATE CLIENTS SET LASTNAME = 'Сидорова-Изменённая' WHERE PCODE BETWEEN 11 AND 20");
    fb.exec("DELETE FROM CLIENTS WHERE PCODE BETWEEN 31 AND 35");
    {
        let mut conn = fb.writer();
        let generator = synth::Generator::new(5);
        for i in 0..3u64 {
            let sql = infoclinica_extractor::sample::insert_sql(
                9000 + i as i64,
                i,
                &generator.patient(i).record,
            );
            rsfbclient::prelude::Execute::execute(&mut conn, &sql, ()).unwrap();
        }
        conn.close().unwrap();
    }
    let second = extract(fx.settings(&db), Mode::ReconcileOnce).await;
    assert_eq!(second[0].delta.deletes, 5);
    assert!(second[0].delta.upserts >= 13);
    let deleted: Vec<i64> = (31..=35).collect();
    wait_for_state(&fx.pool, &fb.expected(&deleted)).await;
    fx.finish().await;
}

/// Rows with 0001-01-01 or future birth dates, NULL names, a NUL byte, bytes
/// invalid in the charset are published with the field flagged, counted,
/// and never stop the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_published_with_their_fields_flagged() {
    let fb = FbDatabase::create(1200, true);
    fb.exec("UPDATE CLIENTS SET BDATE = '0001-01-01' WHERE PCODE = 10");
    fb.exec("UPDATE CLIENTS SET BDATE = DATEADD(400 DAY TO CURRENT_DATE) WHERE PCODE = 11");
    fb.exec("UPDATE CLIENTS SET LASTNAME = NULL, FIRSTNAME = '   ' WHERE PCODE = 12");
    fb.exec("UPDATE CLIENTS SET LASTNAME = 'Ив' || ASCII_CHAR(0) || 'нов' WHERE PCODE = 13");
    fb.exec("UPDATE CLIENTS SET MIDNAME = 'Петр' || ASCII_CHAR(152) || 'вич' WHERE PCODE = 14");
    fb.exec("UPDATE CLIENTS SET FILIAL = 42 WHERE PCODE = 15");
    let fx = Fixture::new().await;
    extract(fx.settings(&fb.settings), Mode::InitialLoad).await;
    wait_for_state(&fx.pool, &fb.expected(&[])).await;

    let issues = |pcode: i64| {
        let pool = fx.pool.clone();
        async move {
            let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT i->>'field', i->>'problem', i->>'raw' FROM source_records, \
                 jsonb_array_elements(issues) i WHERE source_id = $1",
            )
            .bind(pcode.to_string())
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter()
                .map(|(f, p, _)| format!("{f}:{p}"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(issues(10).await, ["birth_date:out_of_range"]);
    assert_eq!(issues(11).await, ["birth_date:out_of_range"]);
    assert_eq!(
        issues(12).await,
        ["last_name:missing", "first_name:missing"]
    );
    assert_eq!(issues(13).await, ["last_name:bad_characters"]);
    assert_eq!(issues(14).await, ["middle_name:bad_characters"]);
    assert_eq!(issues(15).await, ["business_unit:missing"]);
    assert!(issues(16).await.is_empty());
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&fx.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "bad fields are flagged, not dead-lettered");
    let birth: Option<chrono::NaiveDate> =
        sqlx::query_scalar("SELECT birth_date FROM source_records WHERE source_id = '10'")
            .fetch_one(&fx.pool)
            .await
            .unwrap();
    assert_eq!(birth, None);
    fx.finish().await;
}

/// Firebird going away in the middle of an initial load (the test cuts a
/// TCP proxy in front of the shared server, which others are using) and a
/// refused login: backoff and retry, no crash, exact state once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firebird_cut_during_a_pass_then_back() {
    let fb = FbDatabase::create(3000, true);
    let fx = Fixture::new().await;
    let proxy = Proxy::start(3050).await;
    let mut db = fb.settings.clone();
    db.port = proxy.port;
    let mut settings = fx.settings(&db);
    settings.extractor.page_size = 100;
    settings.extractor.query_timeout = Duration::from_secs(3);

    // Let some pages through, then stall the server's answers.
    proxy.stall_after(150_000);
    let run = tokio::spawn(infoclinica_extractor::run(
        settings,
        Mode::InitialLoad,
        tokio_util::sync::CancellationToken::new(),
    ));
    testkit::wait_until(Duration::from_secs(60), "a first checkpoint", || async {
        fx.checkpoint("branch")
            .await
            .and_then(|s| s.initial)
            .is_some_and(|l| l.after_pcode > 0)
    })
    .await;
    // Slow (stalled, then timing out), then down: connections cut.
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = fx.checkpoint("branch").await.unwrap().initial.unwrap();
    assert!(
        !during.done,
        "the load cannot finish while Firebird is away"
    );
    proxy.restore();
    let summary = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("finishes once Firebird is back")
        .unwrap()
        .unwrap();
    assert!(
        summary[0].failures >= 2,
        "timeouts and refused connections retried"
    );
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    assert!(fx.checkpoint("branch").await.unwrap().initial.unwrap().done);

    // A refused login: the daemon retries it with backoff until shutdown,
    // no crash (a one-shot run stops: tests/check).
    let mut wrong = fb.settings.clone();
    wrong.password = secrecy::SecretString::from("wrong-password");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(infoclinica_extractor::run(
        fx.settings(&wrong),
        Mode::Daemon,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    let stopped = run.await.unwrap().unwrap();
    assert!(stopped[0].failures >= 1);
    fx.finish().await;
}

/// kill -9 of the extractor binary in the middle of an initial load, then a
/// restart: the exact final state, every record inserted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_initial_load_then_restart() {
    let fb = FbDatabase::create(4000, true);
    let fx = Fixture::new().await;
    let proxy = Proxy::start(3050).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |port: u16| fx.config_file(dir.path(), &fb, port);
    let bin = env!("CARGO_BIN_EXE_infoclinica-extractor");

    // Through a proxy that stalls after some pages: the process is surely
    // in the middle of the load when it is killed.
    proxy.stall_after(300_000);
    let first_config = config(proxy.port);
    let mut child = testkit::ChildProcess::spawn(
        bin,
        &["--config", first_config.to_str().unwrap(), "--initial-load"],
        &[],
    );
    let started = std::time::Instant::now();
    while fx
        .checkpoint("branch")
        .await
        .and_then(|s| s.initial)
        .is_none_or(|l| l.after_pcode < 300)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60) && child.is_running(),
            "no checkpoint after 60 s; logs:\n{}",
            child.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill9();
    let at_kill = fx.checkpoint("branch").await.unwrap().initial.unwrap();
    assert!(!at_kill.done && at_kill.after_pcode < 4000, "{at_kill:?}");
    drop(proxy);

    let second_config = config(3050);
    // Without a terminal, progress comes as log lines (one per page here).
    let mut child = testkit::ChildProcess::spawn(
        bin,
        &[
            "--config",
            second_config.to_str().unwrap(),
            "--initial-load",
        ],
        &[("ETL__LOG__PROGRESS_INTERVAL".into(), "1ms".into())],
    );
    testkit::wait_until(Duration::from_secs(90), "the restarted load to end", || {
        let running = child.is_running();
        async move { !running }
    })
    .await;
    let logs = child.logs();
    assert!(logs.contains("initial load finished"), "{logs}");
    assert!(logs.contains("resume=true"), "it resumed: {logs}");
    assert!(
        logs.contains("progress task=initial load of branch") && logs.contains("total=4000"),
        "progress lines: {logs}"
    );
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    let inserts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_changes WHERE source = 'infoclinica' AND op = 'insert'",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    assert_eq!(inserts, 4000, "every record inserted exactly once");
    let updates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_changes WHERE source = 'infoclinica' AND op <> 'insert'",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    assert_eq!(updates, 0, "re-published pages changed nothing");
    fx.finish().await;
}

/// The daemon on two branch databases: each loaded with its own checkpoint
/// and source-id prefix, then a change in one reaches PostgreSQL through a
/// delta pass; shutdown stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_on_two_databases() {
    let started = chrono::Utc::now();
    let mut north = FbDatabase::create(800, true);
    north.settings.name = "north".into();
    north.settings.source_id_prefix = "north:".into();
    let mut south = FbDatabase::create(600, true);
    south.settings.name = "south".into();
    south.settings.source_id_prefix = "south:".into();
    let fx = Fixture::new().await;
    let mut settings = fx.settings(&north.settings);
    settings.databases.push(south.settings.clone());
    settings.extractor.delta_interval = Duration::from_millis(200);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(infoclinica_extractor::run(
        settings,
        Mode::Daemon,
        shutdown.clone(),
    ));
    let mut expected = north.expected(&[]);
    expected.extend(south.expected(&[]));
    assert_eq!(expected.len(), 1400, "prefixed ids do not collide");
    wait_for_state(&fx.pool, &expected).await;

    south.exec("UPDATE CLIENTS SET LASTNAME = 'Южная' WHERE PCODE = 5");
    north.exec("DELETE FROM CLIENTS WHERE PCODE = 7");
    let mut expected = north.expected(&[7]);
    expected.extend(south.expected(&[]));
    wait_for_state(&fx.pool, &expected).await;
    for name in ["north", "south"] {
        let state = fx.checkpoint(name).await.unwrap();
        assert!(state.initial.unwrap().done, "{name}");
        assert!(state.passes >= 1, "{name}");
    }
    // The last successful pass of each database, for `etl status`.
    let last = etl_runtime::sync_status::of_stream(&fx.js, &fx.stream.name)
        .await
        .unwrap();
    for name in ["north", "south"] {
        let key = format!("infoclinica/{name}");
        let (_, status) = last
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} recorded"));
        assert!(status.finished_at >= started, "{key}");
        assert!(
            ["initial", "delta"].contains(&status.kind.as_str()),
            "{key}"
        );
    }
    shutdown.cancel();
    let summaries = tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].initial.rows, 800);
    assert_eq!(summaries[1].initial.rows, 600);
    fx.finish().await;
}

/// Reads never wait for a hospital user's uncommitted change (read-only,
/// record-version, no-wait), and a change that commits late with a lower
/// change-log ID than one already processed is still published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_writers_neither_block_nor_get_lost() {
    use rsfbclient::prelude::*;
    let fb = FbDatabase::create(500, true);
    let fx = Fixture::new().await;
    let mut settings = fx.settings(&fb.settings);
    settings.extractor.query_timeout = Duration::from_secs(10);
    extract(settings.clone(), Mode::InitialLoad).await;
    extract(settings.clone(), Mode::DeltaOnce).await;

    // A user's transaction holds an update of PCODE 5 (its change-log ID is
    // drawn now) while another change of PCODE 6 commits after it.
    let mut user = fb.writer();
    user.begin_transaction().unwrap();
    user.execute(
        "UPDATE CLIENTS SET LASTNAME = 'Поздняя' WHERE PCODE = 5",
        (),
    )
    .unwrap();
    fb.exec("UPDATE CLIENTS SET LASTNAME = 'Ранняя' WHERE PCODE = 6");

    // Neither the initial load nor the delta pass waits for that lock.
    let load = extract(settings.clone(), Mode::InitialLoad).await;
    assert_eq!(load[0].initial.rows, 500, "read the committed versions");
    let pass = extract(settings.clone(), Mode::DeltaOnce).await;
    assert_eq!(pass[0].delta.changes, 1, "only the committed change");
    let name = |pcode: &'static str| {
        let pool = fx.pool.clone();
        async move {
            // Not there yet while the loader still works through the load
            // (or still migrates: no table yet).
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT last_name FROM source_records WHERE source_id = $1",
            )
            .bind(pcode)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
            .flatten()
        }
    };
    testkit::wait_until(Duration::from_secs(30), "PCODE 6 updated", || async {
        name("6").await.as_deref() == Some("Ранняя")
    })
    .await;
    assert_ne!(name("5").await.as_deref(), Some("Поздняя"));

    // It commits late, with a lower ID than the change already processed.
    user.commit().unwrap();
    user.close().unwrap();
    let log = fb.changelog();
    let late = log.iter().rev().find(|(_, p, _)| *p == 5).unwrap();
    let early = log.iter().rev().find(|(_, p, _)| *p == 6).unwrap();
    assert!(late.0 < early.0 && late.2 == "N" && early.2 == "Y");
    let pass = extract(settings, Mode::DeltaOnce).await;
    assert_eq!(pass[0].delta.changes, 1);
    testkit::wait_until(Duration::from_secs(30), "PCODE 5 updated", || async {
        name("5").await.as_deref() == Some("Поздняя")
    })
    .await;
    wait_for_state(&fx.pool, &fb.expected(&[])).await;
    fx.finish().await;
}

/// SIGTERM while Firebird has gone silent (the proxy holds its answers:
/// the extractor's blocking calls never return): the daemon still exits,
/// by its shutdown deadline at the latest, instead of waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_firebird_is_silent_exits_in_time() {
    let fb = FbDatabase::create(300, true);
    let fx = Fixture::new().await;
    let proxy = Proxy::start(3050).await;
    let dir = tempfile::tempdir().unwrap();
    let config = fx.config_file(dir.path(), &fb, proxy.port);
    let env: Vec<(String, String)> = [
        ("ETL__EXTRACTOR__DELTA_INTERVAL", "200ms"),
        ("ETL__EXTRACTOR__QUERY_TIMEOUT", "1s"),
        ("ETL__EXTRACTOR__CONNECT_TIMEOUT", "1s"),
        ("ETL__SHUTDOWN__DEADLINE", "5s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut child = testkit::ChildProcess::spawn(
        env!("CARGO_BIN_EXE_infoclinica-extractor"),
        &["--config", config.to_str().unwrap()],
        &env,
    );
    testkit::wait_until(Duration::from_secs(60), "the initial load", || async {
        fx.checkpoint("branch")
            .await
            .and_then(|s| s.initial)
            .is_some_and(|l| l.done)
    })
    .await;
    // Silent: every answer held from now on. Delta passes start, time out
    // and are retried; their blocking calls stay stuck.
    proxy.stall_after(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.is_running(), "{}", child.logs());
    let started = std::time::Instant::now();
    let status = child.terminate(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(
        status.is_some() && took < Duration::from_secs(15),
        "did not exit in time after SIGTERM ({took:?}); logs:\n{}",
        child.logs()
    );
    drop(proxy);
}
