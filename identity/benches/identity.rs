//! The identity service's benchmark (release build, real PostgreSQL):
//!
//! 1. `BENCH_PERSONS` (default 1,000,000) truth-generator persons (about
//!    1.5 records each) loaded through the loader's store into a fresh
//!    database and matched by one full re-match (the matcher's engine;
//!    testkit::index, shared with the steward console's benchmark);
//! 2. the `identity` binary started as a process of its own (its settings:
//!    the defaults, an API client added);
//! 3. lookups at `BENCH_LOOKUP_RATE` (default 500) requests/s for
//!    `BENCH_SECONDS` (default 30), open loop (requests are sent on schedule
//!    whatever the answers' delay): by record (`/v1/records`) and by SNILS
//!    (`/v1/identifiers`) alternately, of random loaded records;
//! 4. `$match` (`/v1/match`) at `BENCH_MATCH_RATE` (default 100)
//!    requests/s for as long, with the demographics of random records;
//! 5. each phase's latency (p50, p99, max) and errors, and the service's
//!    resident memory (current and peak) after each.
//!
//! `cargo bench -p identity --bench identity`
//! (a quick check: `BENCH_PERSONS=2000 BENCH_SECONDS=3`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synth::truth::TruthRecord;
use tokio::sync::Mutex;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS and VmHWM of a process, MiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sends `request(i)` at `rate` per second for `seconds`, open loop;
/// latencies of the successful ones (ms) and the failures.
async fn run_at<F>(rate: u64, seconds: u64, request: F) -> (Vec<f64>, u64)
where
    F: Fn(u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tick.tick().await;
        let (request, latencies, failures) = (request.clone(), latencies.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            match request(i).send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    latencies
                        .lock()
                        .await
                        .push(started.elapsed().as_secs_f64() * 1000.0);
                }
                _ => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().await.clone();
    l.sort_by(f64::total_cmp);
    (l, failures.load(std::sync::atomic::Ordering::Relaxed))
}

fn report(what: &str, rate: u64, latencies: &[f64], failures: u64, pid: u32) {
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (now, peak) = rss(pid);
    println!(
        "{what} at {rate}/s: {} ok, {failures} failed; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; service RSS {now} MiB (peak {peak} MiB)",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
}

fn demographics(t: &TruthRecord) -> Value {
    let r = &t.record;
    json!({
        "last_name": r.last_name, "first_name": r.first_name, "middle_name": r.middle_name,
        "birth_date": r.birth_date, "sex": r.sex.map(|s| s.code()),
        "snils": r.snils.as_ref().filter(|c| c.is_valid()).map(|c| c.value.clone()),
    })
}

#[tokio::main]
async fn main() {
    // Measured on the deployment's recommended PostgreSQL settings.
    let _postgres = testkit::postgres::benchmark_server();
    let persons = env("BENCH_PERSONS", 1_000_000);
    let seconds = env("BENCH_SECONDS", 30);
    let lookup_rate = env("BENCH_LOOKUP_RATE", 500);
    let match_rate = env("BENCH_MATCH_RATE", 100);
    let (db, pool, records) = testkit::index::matched(persons, 2026).await;
    let records = Arc::new(records);

    let key = identity::clients::add(&pool, "bench", &["ids:read".to_string()])
        .await
        .expect("client");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env_vars = vec![
        ("ETL__API__LISTEN".to_string(), format!("127.0.0.1:{port}")),
        // The benchmark's own load: no rate limit in the way.
        ("ETL__AUTH__RATE_PER_SECOND".to_string(), "100000".into()),
        ("ETL__AUTH__BURST".to_string(), "100000".into()),
        ("ETL__LOG__LEVEL".to_string(), "warn".into()),
    ];
    env_vars.extend([
        ("ETL__DATABASE__HOST".to_string(), db.host.clone()),
        ("ETL__DATABASE__PORT".to_string(), db.port.to_string()),
        ("ETL__DATABASE__USERNAME".to_string(), db.username.clone()),
        (
            "ETL__DATABASE__DATABASE_NAME".to_string(),
            db.database_name.clone(),
        ),
        ("ETL__DATABASE__MAX_CONNECTIONS".to_string(), "16".into()),
    ]);
    let mut child = testkit::ChildProcess::spawn(env!("CARGO_BIN_EXE_identity"), &[], &env_vars);
    let base = format!("http://127.0.0.1:{port}");
    let http = etl_runtime::tls::http_client(None)
        .unwrap()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let ready = Instant::now();
    while http
        .get(format!("{base}/v1/review-items"))
        .bearer_auth(&key)
        .send()
        .await
        .is_err()
    {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "identity did not start:\n{}",
            child.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.pid() as u32;
    println!("identity started; RSS {} MiB", rss(pid).0);

    let n = records.len() as u64;
    let pick = move |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % n;
    let (h, k, r, b) = (http.clone(), key.clone(), records.clone(), base.clone());
    let (lat, failed) = run_at(lookup_rate, seconds, move |i| {
        let t = &r[pick(i) as usize];
        let snils = t
            .record
            .snils
            .as_ref()
            .filter(|c| c.is_valid() && i % 2 == 1);
        let url = match snils {
            Some(s) => format!("{b}/v1/identifiers?snils={}", s.value),
            None => format!(
                "{b}/v1/records?source={}&source_id={}",
                t.source,
                t.source_id.replace('/', "%2F")
            ),
        };
        h.get(url).bearer_auth(&k)
    })
    .await;
    report("lookup (record, SNILS)", lookup_rate, &lat, failed, pid);

    let (h, k, r, b) = (http.clone(), key.clone(), records.clone(), base.clone());
    let (lat, failed) = run_at(match_rate, seconds, move |i| {
        let t = &r[pick(i + 1_000_003) as usize];
        h.post(format!("{b}/v1/match"))
            .bearer_auth(&k)
            .json(&json!({"demographics": demographics(t), "limit": 5}))
    })
    .await;
    report("$match", match_rate, &lat, failed, pid);
    child.terminate(Duration::from_secs(10));
}
