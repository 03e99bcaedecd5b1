//! The steward console's benchmark (release build, real PostgreSQL):
//!
//! 1. `BENCH_PERSONS` (default 1,000,000) truth-generator persons loaded and
//!    matched (testkit::index, as the identity service's benchmark);
//! 2. `BENCH_ITEMS` (default 10,000) open review items on random pairs of
//!    loaded records (the matcher's evidence shape);
//! 3. the identity service in-process with the console enabled, a steward
//!    signed in over HTTP;
//! 4. the queue page (`/console/queue`, default order, 100 rows, the count
//!    and the filters' choices over all open items) `BENCH_REPEAT` (default
//!    50) times, then as many item pages (`/console/items/{id}`, with the
//!    access-log line each writes) of random items; p50, p99, max.
//!
//! Targets: the queue in under 200 ms, an item page in under 100 ms.
//!
//! `cargo bench -p steward-console --bench console`
//! (a quick check: `BENCH_PERSONS=2000 BENCH_ITEMS=1000`).

use std::time::Instant;

use rand::RngExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `items` open review items on random pairs of `records`.
async fn review_items(pool: &sqlx::PgPool, records: &[(String, String)], items: u64) {
    let mut rng = rand::rng();
    let mut rows = Vec::new();
    while (rows.len() as u64) < items {
        let a = &records[rng.random_range(0..records.len())];
        let b = &records[rng.random_range(0..records.len())];
        if a < b {
            rows.push((a.clone(), b.clone(), rng.random_range(0.3f32..0.95)));
        }
    }
    rows.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    rows.dedup_by(|x, y| x.0 == y.0 && x.1 == y.1);
    let evidence = json!({"probability": 0.7, "weight": 2.0, "fields": {
        "last_name": {"level": "one_edit", "weight": 2.1},
        "birth_date": {"level": "exact", "weight": 3.0},
        "snils": {"level": "differs", "weight": -1.5}}});
    for chunk in rows.chunks(5000) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO review_items (a_source, a_source_id, b_source, b_source_id, reason, score, evidence, created_at) ",
        );
        q.push_values(chunk, |mut v, (a, b, score)| {
            v.push_bind(&a.0)
                .push_bind(&a.1)
                .push_bind(&b.0)
                .push_bind(&b.1)
                .push_bind("model_ambiguous")
                .push_bind(*score)
                .push_bind(&evidence)
                .push("now() - random() * interval '30 days'");
        });
        q.build().execute(pool).await.expect("review items");
    }
    sqlx::query("ANALYZE review_items")
        .execute(pool)
        .await
        .expect("analyze");
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    println!(
        "{what}: {} requests; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

async fn timed_get(http: &reqwest::Client, url: &str, cookie: &str) -> f64 {
    let started = Instant::now();
    let r = http
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.expect("body");
    started.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    // Measured on the deployment's recommended PostgreSQL settings.
    let _postgres = testkit::postgres::benchmark_server();
    let persons = env("BENCH_PERSONS", 1_000_000);
    let items = env("BENCH_ITEMS", 10_000);
    let repeat = env("BENCH_REPEAT", 50);
    let (db, pool, records) = testkit::index::matched(persons, 2026).await;
    let keys: Vec<(String, String)> = records
        .iter()
        .map(|t| (t.source.to_string(), t.source_id.clone()))
        .collect();
    review_items(&pool, &keys, items).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM review_items WHERE status = 'open'")
        .fetch_all(&pool)
        .await
        .expect("ids");
    println!("{} open review items", ids.len());
    steward_console::accounts::add(&pool, "bench", "steward", "bench-password")
        .await
        .expect("account");

    let mut settings = identity::Settings {
        database: db,
        ..Default::default()
    };
    settings.api.listen = ([127, 0, 0, 1], 0).into();
    settings.console.enabled = true;
    let shutdown = CancellationToken::new();
    let (addr, _task) = identity::start(settings, shutdown.clone())
        .await
        .expect("service starts")
        .expect("not shut down");
    let base = format!("http://{addr}/console");
    let http = etl_runtime::tls::http_client(None)
        .expect("client")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(format!("{base}/signin"))
        .form(&[("name", "bench"), ("password", "bench-password")])
        .send()
        .await
        .expect("sign-in");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let queue_url = format!("{base}/queue");
    timed_get(&http, &queue_url, &cookie).await;
    let mut queue = Vec::new();
    for _ in 0..repeat {
        queue.push(timed_get(&http, &queue_url, &cookie).await);
    }
    report(&format!("queue of {} items", ids.len()), queue);
    let mut rng = rand::rng();
    let mut item = Vec::new();
    for _ in 0..repeat {
        let id = ids[rng.random_range(0..ids.len())];
        item.push(timed_get(&http, &format!("{base}/items/{id}"), &cookie).await);
    }
    report(&format!("item page at {persons} persons"), item);
    shutdown.cancel();
}
