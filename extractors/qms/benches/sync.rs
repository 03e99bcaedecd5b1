//! `cargo bench -p qms-extractor --bench sync`: a 1,000,000-record export
//! (`BENCH_RECORDS` for another size) served at full speed by the simulator
//! in this process; the extractor binary (release) as a child process.
//!
//! Measures: parse rate of the extractor's parser on the export in memory
//! (lines → records → fields → normalized record → content hash), plain
//! download time, the first sync and a no-change sync to "acked on the bus
//! and state saved" (from the extractor's own `took`), and the extractor's
//! peak RSS (VmHWM).

use std::time::{Duration, Instant};

use qms_extractor::parse::{self, Decoder, LineSplitter, Rejoiner};
use testkit::ChildProcess;

#[tokio::main]
async fn main() {
    let records: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sim = qms_sim::Simulator::new(qms_sim::Config {
        seed: 1,
        count: records,
        rows_per_chunk: 2048,
        ..Default::default()
    });
    let (addr, _task) = sim
        .serve("127.0.0.1:0".parse().unwrap(), std::future::pending())
        .await
        .unwrap();
    let url = format!("http://{addr}{}", qms_sim::EXPORT_PATH);

    // Download alone.
    let start = Instant::now();
    // A client of the crypto provider the services use (reqwest has none).
    let http = etl_runtime::tls::http_client(None)
        .unwrap()
        .build()
        .unwrap();
    let mut response = http.get(&url).send().await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    let download = start.elapsed();
    println!(
        "download: {} records, {:.1} MiB in {:.2} s",
        records,
        bytes.len() as f64 / (1 << 20) as f64,
        download.as_secs_f64()
    );

    // Parse rate, single thread, export in memory.
    let today = chrono::Utc::now().date_naive();
    let decoder = Decoder::for_label("utf-8").unwrap();
    let profile = parse::Profile::default();
    let start = Instant::now();
    let mut splitter = LineSplitter::default();
    let mut joiner = Rejoiner::default();
    let mut parsed = 0u64;
    let mut hash_xor = 0u8;
    let mut decoded = String::new();
    for chunk in bytes.chunks(64 * 1024) {
        splitter.push(chunk, |line| {
            let (text, bad) = decoder.decode_with(line.bytes, &mut decoded);
            joiner.push(text, bad, |raw| {
                if let Ok((_, record)) = parse::parse_record(raw, &profile, today) {
                    // What a first sync does per record (a no-change sync
                    // only checks and hashes the raw text).
                    let h = proto::envelope::content_hash(proto::Operation::Upsert, Some(&record));
                    hash_xor ^= h[0];
                    parsed += 1;
                }
            })
        });
    }
    joiner.finish(|_| parsed += 1);
    let took = start.elapsed();
    println!(
        "full parse + normalize + content hash (changed records only): {parsed} records in {:.2} s = {:.0} records/s (xor {hash_xor})",
        took.as_secs_f64(),
        parsed as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    let mut splitter = LineSplitter::default();
    let mut joiner = Rejoiner::default();
    let mut fields = 0usize;
    for chunk in bytes.chunks(64 * 1024) {
        splitter.push(chunk, |line| {
            let (text, bad) = decoder.decode_with(line.bytes, &mut decoded);
            joiner.push(text, bad, |raw| {
                if parse::check_record(raw).is_ok() {
                    hash_xor ^= parse::raw_hash(raw, &profile)[0];
                    fields += 1;
                }
            })
        });
    }
    joiner.finish(|_| {});
    let took = start.elapsed();
    println!(
        "split + decode + rejoin + check + raw hash (what every sync does per line): {:.2} s = {:.0} lines/s ({fields} records)",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    drop(bytes);

    // The extractor binary: first sync, then a no-change sync (daemon, short interval).
    let stream = testkit::unique_stream();
    let _js = testkit::jetstream(&stream).await;
    let id = testkit::unique("qmsbench");
    let env: Vec<(String, String)> = vec![
        ("ETL__NATS__URL".into(), testkit::nats_url()),
        ("ETL__STREAM__NAME".into(), stream.name.clone()),
        (
            "ETL__STREAM__SUBJECT_PREFIX".into(),
            stream.subject_prefix.clone(),
        ),
        ("ETL__STREAM__MAX_AGE".into(), "1h".into()),
        ("ETL__QMS__URL".into(), url.clone()),
        ("ETL__QMS__INTERVAL".into(), "1s".into()),
        (
            "ETL__QMS__STATE__OBJECT_BUCKET".into(),
            format!("{id}_state"),
        ),
        (
            "ETL__QMS__REJECTS__STREAM".into(),
            format!("{}_REJECTS", stream.name),
        ),
        (
            "ETL__QMS__REJECTS__SUBJECT".into(),
            format!("{}_rejects.qms", stream.subject_prefix),
        ),
        ("RUST_LOG".into(), "info".into()),
    ];
    let mut child = ChildProcess::spawn(env!("CARGO_BIN_EXE_qms-extractor"), &[], &env);
    let pid = child.pid();
    let start = Instant::now();
    let mut peak_after_first = 0;
    loop {
        let logs = child.logs();
        let done = logs.matches("sync complete").count();
        if done == 1 && peak_after_first == 0 {
            peak_after_first = vm_hwm(pid);
        }
        if done >= 2 {
            break;
        }
        assert!(child.is_running(), "extractor exited: {logs}");
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "bench timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = vm_hwm(pid);
    let logs = child.logs();
    child.kill9();
    for line in logs.lines().filter(|l| l.contains("sync complete")) {
        println!("extractor: {}", strip_ansi(line));
    }
    println!(
        "extractor peak RSS: {:.0} MiB after the first sync, {:.0} MiB after the no-change sync",
        peak_after_first as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let client = async_nats::connect(testkit::nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&stream.name).await;
    let _ = js.delete_stream(format!("{}_REJECTS", stream.name)).await;
    let _ = js.delete_object_store(format!("{id}_state")).await;
}

/// Peak resident set size of `pid`, KiB.
fn vm_hwm(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if c == '\x1b' {
            esc = true;
        } else if esc {
            if c == 'm' {
                esc = false;
            }
        } else {
            out.push(c);
        }
    }
    out
}
