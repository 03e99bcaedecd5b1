//! Person events of a load: every event on the bus exactly once (against
//! the outbox), in commit order, and the time from the matcher's commit
//! (the event's `at`, written just before it) to the event stored by the
//! stream. In a fresh database of its own (`BENCH_EVENTS=N`).

use std::time::{Duration, Instant};

use crate::support::{database, load, pending, Bench};

/// N new records written by the loader's write path while the matcher binary
/// runs with its person-event relay.
pub async fn run(bench: &Bench, n: usize) {
    let (db, pool, store) = database().await;
    let records = synth::truth::TruthGenerator::new(43).records(n as u64 * 2 / 3 + 1);
    let records = &records[..n.min(records.len())];
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let events_stream = format!("{}_PERSONS", stream.name);
    let mut env = bench.binary_env(&db);
    for (key, value) in [
        ("ETL__EVENTS__ENABLED", "true".to_string()),
        ("ETL__EVENTS__STREAM", events_stream.clone()),
        (
            "ETL__EVENTS__SUBJECT_PREFIX",
            format!("{}-persons", stream.subject_prefix),
        ),
    ] {
        env.push((key.into(), value));
    }
    let mut matcher = testkit::ChildProcess::spawn(env!("CARGO_BIN_EXE_matcher"), &[], &env);
    let started = Instant::now();
    load(&store, records, 1).await;
    let written = started.elapsed();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    loop {
        let published = count("SELECT published_up_to FROM person_event_relay").await;
        let last = count("SELECT coalesce(max(event_id), 0) FROM person_events").await;
        if pending(&pool).await == 0 && published == last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = started.elapsed();
    let status = matcher.terminate(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "{}", matcher.logs());

    let outbox: Vec<(i64, i64)> =
        sqlx::query_as("SELECT event_id, person_id FROM person_events ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let messages = testkit::stream_messages(&js, &events_stream).await;
    let mut latencies_ms = Vec::with_capacity(messages.len());
    let mut ids = Vec::with_capacity(messages.len());
    for m in &messages {
        let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        ids.push(event["event_id"].as_i64().unwrap());
        let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
        let stored = m.info().unwrap().published.unix_timestamp_nanos() as i64;
        let at = at.timestamp_nanos_opt().unwrap();
        latencies_ms.push((stored - at) as f64 / 1e6);
    }
    let once = ids.len() == outbox.len() && ids.iter().zip(&outbox).all(|(id, row)| *id == row.0);
    latencies_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * q) as usize];
    println!(
        "person events of a {}-record load (written in {:.1} s, matched and published {:.1} s after the start): \
         {} events in the outbox, {} on the bus, exactly once in commit order: {once}; \
         matcher commit -> event on the bus p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        records.len(),
        written.as_secs_f64(),
        done.as_secs_f64(),
        outbox.len(),
        messages.len(),
        pct(0.5),
        pct(0.99),
        latencies_ms.last().copied().unwrap_or_default()
    );
    for name in [&events_stream, &stream.name] {
        if let Err(error) = js.delete_stream(name).await {
            eprintln!("events: deleting stream {name}: {error}");
        }
    }
}
