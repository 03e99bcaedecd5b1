//! The extractor against the simulator, real NATS and PostgreSQL (through
//! the in-process loader): snapshot semantics, faults, encodings, the
//! deletion brake and rejects.

use crate::common;

use common::*;
use qms_extractor::{RunOptions, SyncError};
use qms_sim::{Encoding, Fault};

const ROWS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_loads_everything_then_only_changes() {
    let f = Fixture::new(ROWS).await;
    let started = chrono::Utc::now();
    // The recorder that serves /metrics, installed before the sync.
    let metrics = etl_runtime::observe::prometheus();

    let first = f.sync_ok().await;
    assert_eq!(first.records, ROWS);
    // The last successful sync of this test's stream, for `etl status`.
    let last = etl_runtime::sync_status::of_stream(&f.js, &f.stream.name)
        .await
        .unwrap();
    let (_, qms) = last
        .iter()
        .find(|(k, _)| k == "qms")
        .expect("qms sync recorded");
    assert!(qms.finished_at >= started);
    assert_eq!(qms.kind, "sync");
    // And for Prometheus, with the same time.
    let page = metrics.render();
    let line = page
        .lines()
        .find(|l| l.starts_with("etl_last_sync_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("no sync time on /metrics: {page}"));
    assert!(
        line.contains("source=\"qms\"") && line.contains("database=\"\""),
        "{line}"
    );
    let at: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(at >= started.timestamp() as f64, "{line}");
    assert_eq!(first.upserts, ROWS);
    assert_eq!((first.deletes, first.rejects, first.attempts), (0, 0, 1));
    f.wait_for_state(&expected(&f.sim.clean_export(), &[]))
        .await;
    let after_first = f.stream_messages().await;
    assert_eq!(after_first, ROWS);

    // No change at the source: nothing is published.
    let second = f.sync_ok().await;
    assert_eq!((second.upserts, second.deletes), (0, 0));
    assert_eq!(second.unchanged, ROWS);
    assert_eq!(f.stream_messages().await, after_first);

    // 30 edits and 20 deletions (1%, under the brake): exactly those.
    f.sim.edit(100..130);
    let gone: Vec<String> = {
        let all = f.sim.his_numbers();
        f.sim.delete(500..520);
        all[500..520].to_vec()
    };
    let third = f.sync_ok().await;
    assert_eq!((third.upserts, third.deletes), (30, 20));
    assert_eq!(third.unchanged, ROWS - 50);
    assert_eq!(f.stream_messages().await, after_first + 50);
    f.wait_for_state(&expected(&f.sim.clean_export(), &gone))
        .await;

    // A → B → A inside the duplicate window: the change back is not lost.
    f.sim.restore(100..110);
    let fourth = f.sync_ok().await;
    assert_eq!((fourth.upserts, fourth.deletes, fourth.stored), (10, 0, 10));
    f.wait_for_state(&expected(&f.sim.clean_export(), &gone))
        .await;
    // Each content change was recorded once in the change feed.
    assert_eq!(
        count(&f.pool, "SELECT count(*) FROM record_changes").await,
        (ROWS + 30 + 20 + 10) as i64
    );

    // An operator's reset: everything is published again, nothing changes
    // in PostgreSQL.
    f.extractor().await.reset_state().await.unwrap();
    let again = f.sync_ok().await;
    assert_eq!(again.upserts, ROWS - 20);
    f.wait_for_state(&expected(&f.sim.clean_export(), &gone))
        .await;
    assert_eq!(
        count(&f.pool, "SELECT count(*) FROM record_changes").await,
        (ROWS + 30 + 20 + 10) as i64
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_changes_nothing_and_retries_then_recovers() {
    let f = Fixture::new(ROWS).await;
    f.sync_ok().await;
    let attempts = f.settings.qms.retries + 1;

    for &fault in Fault::FAILURES {
        // A pending change: a sync that wrongly took a broken export would
        // publish it (or, for a short export, deletions).
        f.sim.edit(0..40);
        let before = f.stream_messages().await;
        let requests = f.sim.requests();

        // Every attempt of the sync fails: nothing is published.
        f.sim.push_fault(fault, attempts as usize);
        match f.sync(RunOptions::default()).await {
            Err(SyncError::Download { attempts: n, .. }) => {
                assert_eq!(n, attempts, "{fault:?}: retried as configured")
            }
            other => panic!("{fault:?}: expected a failed sync, got {other:?}"),
        }
        assert_eq!(
            f.sim.requests() - requests,
            u64::from(attempts),
            "{fault:?}"
        );
        assert_eq!(
            f.stream_messages().await,
            before,
            "{fault:?} published something"
        );

        // The source recovers within the retries: the sync completes.
        f.sim.push_fault(fault, attempts as usize - 1);
        let report = f.sync(RunOptions::default()).await.expect("recovers");
        assert_eq!(report.attempts, attempts, "{fault:?}");
        assert_eq!((report.upserts, report.deletes), (40, 0), "{fault:?}");
        assert_eq!(f.stream_messages().await, before + 40, "{fault:?}");
        f.wait_for_state(&expected(&f.sim.clean_export(), &[]))
            .await;
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_lines_and_cp1251_give_the_same_records_as_clean_utf8() {
    let f = Fixture::new(ROWS).await;
    let clean = f.sim.clean_export();

    // The parser alone: CP1251 with 30% wrapped records.
    f.sim.set_encoding(Encoding::Cp1251);
    f.sim.set_wrap_per_mille(300);
    // A client of the crypto provider the services use (reqwest has none).
    let http = etl_runtime::tls::http_client(None)
        .unwrap()
        .build()
        .unwrap();
    let body = http
        .get(&f.sim_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let wrapped = parse_export(&body, "windows-1251", today);
    let physical_lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(physical_lines > ROWS + 400, "the export really wraps");
    assert_eq!(wrapped, parse_export(clean.as_bytes(), "utf-8", today));

    // Through the bus: a CP1251 wrapped sync loads the clean records ...
    let mut f = f;
    f.settings.qms.encoding = "windows-1251".into();
    let first = f.sync_ok().await;
    assert_eq!((first.records, first.rejects), (ROWS, 0));
    assert!(first.lines > ROWS + 400);
    f.wait_for_state(&expected(&clean, &[])).await;

    // ... and the clean UTF-8 export afterwards changes nothing in
    // PostgreSQL: the wrapped records' raw text differs, so they are
    // published again, with equal content (no new change recorded).
    f.sim.set_encoding(Encoding::Utf8);
    f.sim.set_wrap_per_mille(0);
    f.settings.qms.encoding = "utf-8".into();
    let second = f.sync_ok().await;
    assert_eq!(second.deletes, 0);
    assert_eq!(second.upserts + second.unchanged, ROWS);
    assert!(second.upserts < ROWS / 2, "only the wrapped ones");
    f.wait_for_state(&expected(&clean, &[])).await;
    testkit::wait_until(
        std::time::Duration::from_secs(30),
        "the loader to take the republished records",
        || async {
            common::count(&f.pool, "SELECT count(*) FROM source_records WHERE source_version > (SELECT min(source_version) FROM source_records)").await
                == second.upserts as i64
        },
    )
    .await;
    assert_eq!(
        count(&f.pool, "SELECT count(*) FROM record_changes").await,
        ROWS as i64
    );
    let third = f.sync_ok().await;
    assert_eq!((third.upserts, third.deletes), (0, 0));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_brake_holds_until_confirmed() {
    let f = Fixture::new(ROWS).await;
    f.sync_ok().await;
    f.wait_for_state(&expected(&f.sim.clean_export(), &[]))
        .await;
    let all = f.sim.his_numbers();
    let loaded = expected(&f.sim.clean_export(), &[]);

    // The export lost 30% of its rows (plausible by row count, but far more
    // deletions than the 5% brake allows), and 10 rows changed.
    f.sim.delete(1000..1600);
    f.sim.edit(0..10);
    for upserts in [10, 0] {
        let held = f.sync_ok().await;
        assert_eq!(held.deletes, 0, "no deletion goes out");
        assert_eq!(
            held.withheld_deletes, 600,
            "and the brake holds on the next sync"
        );
        assert_eq!(held.upserts, upserts, "changes still go out");
    }
    let mut with_edits = loaded.clone();
    with_edits.extend(expected(&f.sim.clean_export(), &[]));
    f.wait_for_state(&with_edits).await;

    // The operator confirms: the deletions go out, once.
    let confirmed = f
        .sync(RunOptions {
            confirm_deletions: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((confirmed.deletes, confirmed.withheld_deletes), (600, 0));
    f.wait_for_state(&expected(&f.sim.clean_export(), &all[1000..1600]))
        .await;
    let after = f.sync_ok().await;
    assert_eq!((after.upserts, after.deletes), (0, 0));

    // An export with most rows gone is not even plausible: nothing at all.
    f.sim.delete(0..1000);
    f.sim.edit(1700..1710);
    let before = f.stream_messages().await;
    assert!(matches!(
        f.sync(RunOptions::default()).await,
        Err(SyncError::Download { .. })
    ));
    assert_eq!(f.stream_messages().await, before);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_records_are_kept_with_their_reason_and_never_deleted() {
    let f = Fixture::new(200).await;
    f.sync_ok().await;
    let clean = f.sim.clean_export();
    let lines: Vec<&str> = clean.lines().collect();

    // A data file: the same export, but record 5 lost fields, a garbage line
    // sits in the middle and record 9 has too many fields.
    let mut broken = String::new();
    for (i, line) in lines.iter().enumerate() {
        match i {
            5 => broken.push_str(&line.split('|').take(4).collect::<Vec<_>>().join("|")),
            9 => {
                broken.push_str(line);
                broken.push_str("|extra|fields");
            }
            _ => broken.push_str(line),
        }
        broken.push('\n');
        if i == 50 {
            broken.push_str("<<< garbage | without a his number >>>\n");
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &broken).unwrap();
    let g = Fixture::with_sim(qms_sim::Config {
        data_file: Some(file.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    // Same state and stream as `f`, served from the file.
    let mut settings = f.settings.clone();
    settings.qms.url = g.sim_url.clone();
    let report = qms_extractor::Extractor::connect(settings)
        .await
        .unwrap()
        .sync(
            RunOptions::default(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!((report.records, report.rejects), (198, 3));
    assert_eq!(
        (report.upserts, report.deletes),
        (0, 0),
        "rejected records are neither changed nor deleted"
    );
    assert_eq!(f.reject_messages().await, 3);

    // The rejects carry their reason and line.
    let mut stream =
        f.js.get_stream(&f.settings.qms.rejects.stream)
            .await
            .unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    let headers = first.headers;
    assert_eq!(
        headers.get("Qms-Reject-Reason").map(|v| v.as_str()),
        Some("too_few_fields")
    );
    assert_eq!(headers.get("Qms-Line").map(|v| v.as_str()), Some("6"));
    let _ = stream.info().await;
    g.stop().await;
    f.stop().await;
}

/// HTTP 429 with `Retry-After`: the next attempt waits at least that long,
/// although the configured backoff is far shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let f = Fixture::with_sim(qms_sim::Config {
        count: 200,
        retry_after: std::time::Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    f.sim.push_fault(Fault::Busy429, 1);
    let started = std::time::Instant::now();
    let report = f.sync_ok().await;
    assert_eq!(report.attempts, 2);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "retried after {:?}, before the server's Retry-After",
        started.elapsed()
    );
    f.stop().await;
}

/// One line of 3 MiB (over NATS's payload limit, and over the line cap):
/// one `too_long` reject that carries no content, and the sync completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_cap_is_one_value_free_reject_and_the_sync_goes_on() {
    let f = Fixture::with_sim(qms_sim::Config {
        count: 300,
        rows_per_chunk: 64,
        ..Default::default()
    })
    .await;
    f.sim.push_fault(Fault::LongLine, 1);
    let report = f.sync_ok().await;
    assert_eq!((report.records, report.rejects), (300, 1));
    f.wait_for_state(&expected(&f.sim.clean_export(), &[]))
        .await;

    let stream =
        f.js.get_stream(&f.settings.qms.rejects.stream)
            .await
            .unwrap();
    let reject = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        reject.headers.get("Qms-Reject-Reason").map(|v| v.as_str()),
        Some("too_long")
    );
    assert_eq!(
        reject.headers.get("Qms-His-Number").map(|v| v.as_str()),
        Some("999999/LONG")
    );
    let text = String::from_utf8_lossy(&reject.payload);
    assert!(text.len() < 200 && !text.contains("xxxx"), "{text}");
    assert!(text.contains("3145728 bytes"), "{text}");
    f.stop().await;
}
