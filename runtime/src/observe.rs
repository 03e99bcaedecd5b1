//! Observability every service shares: an HTTP server with `/metrics`
//! (Prometheus), `/healthz` (the process lives) and `/readyz` (its NATS
//! connection, database and consumer are usable), and systemd readiness
//! (`READY=1`, watchdog pings, `STOPPING=1`; all no-ops without
//! `NOTIFY_SOCKET`).
//!
//! Readiness checks are registered by the service loop as it connects
//! ([`watch_nats`], [`watch_database`], [`watch_consumer`]) and the loop calls
//! [`ready`] once it is connected and consuming: until then `/readyz` answers
//! 503 `starting`. Checks live in one process-wide registry, keyed by name (a
//! re-connect replaces its check), so the loops need no handle to the server.
//!
//! Metric labels are `source`, `kind` and `outcome` only: never personal data.
//! Every service also exports `etl_build_info{service, version}` and the
//! process's CPU time, resident memory, open file descriptors and start
//! time (`process_*`, the names Prometheus's own clients use).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// `[http]`: the operations endpoint of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Address of `/metrics`, `/healthz` and `/readyz`, e.g.
    /// `"0.0.0.0:9100"` (port 0: any free port, logged at start). Unset: no
    /// HTTP server (the deploy configurations set it).
    pub listen: Option<SocketAddr>,
    /// How long one readiness check (a `SELECT 1`, a consumer info) may take
    /// before `/readyz` reports it failed.
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: None,
            check_timeout: Duration::from_secs(2),
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Default)]
struct Registry {
    checks: Mutex<BTreeMap<&'static str, Check>>,
    ready: AtomicBool,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Adds (or replaces) the readiness check `name`: `Err` says why the
/// dependency is not usable, without personal data.
pub fn watch<F, Fut>(name: &'static str, check: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let check: Check = Arc::new(move || Box::pin(check()));
    registry().checks.lock().unwrap().insert(name, check);
}

/// Readiness check `nats`: the client's connection is up.
pub fn watch_nats(client: &async_nats::Client) {
    let client = client.clone();
    watch("nats", move || {
        let state = client.connection_state();
        async move {
            match state {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(format!("NATS connection {other}")),
            }
        }
    });
}

/// Readiness check `database`: `SELECT 1` answers.
pub fn watch_database(pool: &sqlx::PgPool) {
    let pool = pool.clone();
    watch("database", move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| format!("SELECT 1 failed: {}", sqlx_kind(&e)))
        }
    });
}

/// Readiness check `consumer`: the durable consumer's info is reachable.
/// Each check also sets the gauge `consumer_pending` (messages not yet
/// delivered: the lag), and a poller keeps it fresh every `every` until
/// `shutdown`.
pub fn watch_consumer(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    every: Duration,
    shutdown: &CancellationToken,
) {
    let probe = consumer.clone();
    watch("consumer", move || {
        let mut consumer = probe.clone();
        async move { consumer_lag(&mut consumer).await }
    });
    let mut consumer = consumer.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let _ = consumer_lag(&mut consumer).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

async fn consumer_lag(
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
) -> Result<(), String> {
    let info = consumer
        .info()
        .await
        .map_err(|e| format!("consumer info failed: {}", e.kind()))?;
    metrics::gauge!("consumer_pending").set(info.num_pending as f64);
    metrics::gauge!("consumer_ack_pending").set(info.num_ack_pending as f64);
    Ok(())
}

fn sqlx_kind(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!("SQLSTATE {}", db.code().as_deref().unwrap_or("?")),
        sqlx::Error::Io(e) => format!("I/O error: {}", e.kind()),
        sqlx::Error::PoolTimedOut => "pool timed out".into(),
        _ => "database error".into(),
    }
}

/// The service is connected and consuming: `/readyz` may answer 200, and
/// systemd (Type=notify) is told `READY=1`.
pub fn ready() {
    if !registry().ready.swap(true, Ordering::SeqCst) {
        notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!("ready");
    }
}

/// Tells systemd the service is stopping (`STOPPING=1`).
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// Pings the systemd watchdog at half `WATCHDOG_USEC`, if set, until
/// `shutdown`. The ping comes from the runtime's own task: a wedged runtime
/// stops pinging and systemd restarts the service.
pub fn spawn_watchdog(shutdown: &CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    });
}

/// The process-wide Prometheus recorder (installed on first call).
/// Histograms ending in `_seconds` or `_size` get buckets (so they are
/// histograms, not summaries, and aggregate across replicas).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_size".into()),
                    &[
                        1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                    ],
                )
            })
            .expect("bucket lists are not empty");
        match builder.install_recorder() {
            Ok(handle) => {
                build_info();
                process_metrics();
                handle
            }
            // Another recorder is installed (a test harness): render ours
            // anyway, it just stays empty.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Everything a service's `main` starts: the metrics recorder, the HTTP
/// server (when `[http] listen` is set) and the watchdog. Returns the bound
/// address.
pub async fn start(
    settings: &HttpSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    prometheus();
    spawn_watchdog(shutdown);
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the HTTP endpoint {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let timeout = settings.check_timeout;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_page))
        .route("/readyz", get(move || readyz(timeout)));
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = serve.await {
            tracing::error!(%error, "HTTP endpoint failed");
        }
    });
    tracing::info!(%addr, "HTTP endpoint (/metrics, /healthz, /readyz) listening");
    Ok(Some(addr))
}

async fn metrics_page() -> impl IntoResponse {
    process_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

/// `etl_build_info{service, version}` (always 1): which binary and version
/// answers. The service is the executable's name (`loader`, `matcher`, …).
fn build_info() {
    let service = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    metrics::gauge!("etl_build_info", "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// The process's own figures, read from `/proc/self` at each scrape (Linux;
/// elsewhere they are absent): CPU time, resident memory, open file
/// descriptors, and the start time (when the recorder was installed, which
/// `main` does first).
fn process_metrics() {
    static STARTED: OnceLock<f64> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
    metrics::gauge!("process_start_time_seconds").set(*started);
    // utime and stime, fields 14 and 15, in clock ticks: Linux reports them
    // in USER_HZ, which is 100 on every architecture it exports to user space.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name (field 2) may hold spaces: count after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            metrics::gauge!("process_cpu_seconds_total").set((user + system) / 100.0);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
        if let Some(kib) = rss_kib {
            metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// Runs every check (concurrently, each within `timeout`): 200 when all
/// pass, else 503; the JSON body names each check and why it failed.
async fn readyz(timeout: Duration) -> impl IntoResponse {
    let checks: Vec<(&'static str, Check)> = registry()
        .checks
        .lock()
        .unwrap()
        .iter()
        .map(|(name, check)| (*name, check.clone()))
        .collect();
    let runs = checks.into_iter().map(|(name, check)| async move {
        let result = match tokio::time::timeout(timeout, check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        (name, result)
    });
    let results = futures_join_all(runs).await;
    let started = registry().ready.load(Ordering::SeqCst);
    let ok = started && results.iter().all(|(_, r)| r.is_ok());
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        if ok {
            "ready"
        } else if started {
            "not ready"
        } else {
            "starting"
        }
        .into(),
    );
    let mut detail = serde_json::Map::new();
    for (name, result) in results {
        detail.insert(
            name.into(),
            match result {
                Ok(()) => "ok".into(),
                Err(reason) => reason.into(),
            },
        );
    }
    body.insert("checks".into(), detail.into());
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Object(body).to_string(),
    )
}

/// Awaits all futures concurrently (a few checks: no need for `futures`).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("readiness check panicked"));
    }
    out
}

/// Readiness check `stream`: the stream's info is reachable.
pub fn watch_stream(js: &async_nats::jetstream::Context, stream: &str) {
    let (js, stream) = (js.clone(), stream.to_string());
    watch("stream", move || {
        let (js, stream) = (js.clone(), stream.clone());
        async move {
            let mut stream = js
                .get_stream(&stream)
                .await
                .map_err(|e| format!("stream lookup failed: {}", e.kind()))?;
            stream
                .info()
                .await
                .map(drop)
                .map_err(|e| format!("stream info failed: {}", e.kind()))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// One test: the registry is process-wide.
    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_checks() {
        let shutdown = CancellationToken::new();
        let settings = HttpSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            check_timeout: Duration::from_millis(200),
        };
        let addr = start(&settings, &shutdown).await.unwrap().unwrap();
        assert_eq!(get(addr, "/healthz").await.0, 200);

        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("starting"), "{body}");

        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        watch("database", move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("SELECT 1 failed".into())
                }
            }
        });
        watch("slow", || async { Ok(()) });
        ready();
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");

        up.store(false, Ordering::SeqCst);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["checks"]["database"], "SELECT 1 failed");
        assert_eq!(json["checks"]["slow"], "ok");

        watch("slow", || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        up.store(true, Ordering::SeqCst);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "a check past its timeout fails: {body}");

        metrics::counter!("loader_records_loaded_total", "outcome" => "inserted").increment(3);
        metrics::histogram!("loader_batch_seconds").record(0.2);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("loader_records_loaded_total{outcome=\"inserted\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("loader_batch_seconds_bucket"),
            "histograms have buckets: {body}"
        );
        for name in [
            "etl_build_info{service=",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(body.contains(name), "{name} missing: {body}");
        }
        shutdown.cancel();
    }
}
