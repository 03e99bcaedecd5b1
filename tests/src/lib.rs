//! Test support for integration tests against the real local servers
//! (PostgreSQL on 127.0.0.1:5432, NATS with JetStream on 127.0.0.1:4222;
//! `deploy/local-services.sh` starts them). Tests share those servers, so
//! every test gets its own database, stream, subject prefix and consumer.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use proto::Envelope;
use sqlx::{Connection, PgConnection, PgPool};

pub mod chaos;
pub mod cpu;
pub mod docs;
pub mod index;
pub mod layers;
pub mod nats;
pub mod otlp;
pub mod person_events;
pub mod postgres;
pub mod tls;

/// A name no other test (or test run) uses: `<prefix>_<pid>_<n>_<nanos>`.
/// Aborts this test process if it is still running after `limit`. A test
/// whose runtime is stuck — a blocking call on a runtime thread, or, after
/// the test body, the runtime's shutdown waiting without a limit for a
/// blocking call that never returns — cannot fire its own timeouts, and
/// would otherwise hold CI until its global limit. For a test binary of
/// one test: the limit covers the whole process.
pub fn abort_if_still_running(test: &'static str, limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("{test}: still running after {limit:?}; aborting the test process");
        std::process::abort();
    });
}

pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// The port of a server of this process's own that [`local_postgres`]
/// names instead of the shared one ([`use_postgres`]).
static OWN_POSTGRES: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// Makes [`local_postgres`] (and so [`fresh_database`]) name the server on
/// 127.0.0.1:`port` for the rest of this process: a benchmark's own
/// cluster ([`postgres::benchmark_server`]). Once per process.
pub fn use_postgres(port: u16) {
    OWN_POSTGRES
        .set(port)
        .expect("use_postgres is called once per process");
}

/// Settings of the local PostgreSQL server (the shared one, unless
/// [`use_postgres`] named another), database not yet chosen.
pub fn local_postgres() -> DatabaseSettings {
    if let Some(&port) = OWN_POSTGRES.get() {
        return DatabaseSettings {
            host: "127.0.0.1".into(),
            port,
            ..shared_postgres()
        };
    }
    shared_postgres()
}

/// Settings of the shared local PostgreSQL server.
fn shared_postgres() -> DatabaseSettings {
    DatabaseSettings {
        host: std::env::var("TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        port: std::env::var("TEST_PG_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432),
        username: "postgres".into(),
        max_connections: 8,
        // The test's superuser owns the schema: services started on it
        // migrate it, as on a development database.
        migrate: true,
        ..Default::default()
    }
}

/// Whether a name made by [`unique`] belongs to a process that has exited.
/// Only names exactly of the form `<prefix>_<pid>_<n>_<nanos>` qualify.
fn left_behind(name: &str, prefix: &str) -> bool {
    // A test's second stream is named after its first (`<name>_persons`:
    // the matcher's person events).
    let name = name.strip_suffix("_persons").unwrap_or(name);
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let Ok(pid) = parts[0].parse::<u32>() else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Creates an empty database with a unique name on `server`. Databases of
/// test processes that have exited are dropped first, so that runs do not
/// pile up on a shared server.
pub async fn create_database(mut server: DatabaseSettings) -> DatabaseSettings {
    server.database_name = unique("etl_test");
    let mut conn = PgConnection::connect_with(&server.without_db().database("postgres"))
        .await
        .expect("PostgreSQL must be running: deploy/local-services.sh");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'etl\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in names.iter().filter(|n| left_behind(n, "etl_test")) {
        let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await;
    }
    let create = format!(r#"CREATE DATABASE "{}""#, server.database_name);
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("create test database");
    server
}

/// A fresh, empty database on the shared local server.
pub async fn fresh_database() -> DatabaseSettings {
    create_database(local_postgres()).await
}

/// A pool on `db` for the test's own queries.
pub async fn pool(db: &DatabaseSettings) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.with_db())
        .await
        .expect("connect to test database")
}

/// A stream and subject prefix of this test's own.
pub fn unique_stream() -> StreamSettings {
    let id = unique("t");
    StreamSettings {
        name: id.to_uppercase(),
        subject_prefix: id,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Deletes test streams of test processes that have exited.
async fn remove_left_behind_streams(js: &jetstream::Context) {
    use futures::StreamExt;
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async { n.ok() })
        .collect()
        .await;
    for name in names.iter().filter(|n| left_behind(&n.to_lowercase(), "t")) {
        let _ = js.delete_stream(name).await;
    }
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A JetStream context on the local server, and the test's stream created.
pub async fn jetstream(stream: &StreamSettings) -> jetstream::Context {
    jetstream_at(&nats_url(), stream).await
}

/// A JetStream context on the server at `url`, and the test's stream created.
pub async fn jetstream_at(url: &str, stream: &StreamSettings) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("NATS must be running: deploy/local-services.sh");
    let js = jetstream::new(client);
    remove_left_behind_streams(&js).await;
    proto::bus::ensure_stream(&js, stream)
        .await
        .expect("create test stream");
    js
}

/// Publishes every envelope with its message id, keeping many acks in
/// flight; returns how many the server stored (not dropped as duplicates).
pub async fn publish_all(
    js: &jetstream::Context,
    stream: &StreamSettings,
    envelopes: impl IntoIterator<Item = Envelope>,
) -> usize {
    let mut publisher = proto::bus::Publisher::new(js, stream, 1024);
    for envelope in envelopes {
        publisher.send(&envelope).await.expect("publish");
    }
    publisher.settle().await.expect("publish acks").stored as usize
}

/// Every message of `stream`, in stream order (an ordered consumer; the
/// count is the stream's when the call starts).
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<jetstream::Message> {
    use futures::StreamExt;
    let mut stream = js.get_stream(stream).await.expect("the stream");
    let n = stream.info().await.expect("stream info").state.messages as usize;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("the stream's messages within 30 s");
        out.push(next.expect("more messages").expect("a message"));
    }
    out
}

/// Publishes raw bytes on a subject (for poison messages).
pub async fn publish_raw(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    js.publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows in `source_records`.
pub async fn count_records(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM source_records")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Environment that points a service at this test's database and stream.
pub fn service_env(db: &DatabaseSettings, stream: &StreamSettings) -> Vec<(String, String)> {
    vec![
        ("ETL__DATABASE__HOST".into(), db.host.clone()),
        ("ETL__DATABASE__PORT".into(), db.port.to_string()),
        ("ETL__DATABASE__USERNAME".into(), db.username.clone()),
        ("ETL__DATABASE__MIGRATE".into(), db.migrate.to_string()),
        (
            "ETL__DATABASE__DATABASE_NAME".into(),
            db.database_name.clone(),
        ),
        ("ETL__NATS__URL".into(), nats_url()),
        ("ETL__STREAM__NAME".into(), stream.name.clone()),
        (
            "ETL__STREAM__SUBJECT_PREFIX".into(),
            stream.subject_prefix.clone(),
        ),
        ("ETL__STREAM__MAX_AGE".into(), "1h".into()),
    ]
}

/// Environment variable naming the one test a child test process runs.
const OWN_PROCESS_ENV: &str = "ETL_TEST_OWN_PROCESS";

/// For a test that installs something process-wide (the metrics recorder,
/// the readiness registry, the tracing subscriber): every integration test
/// of a crate shares one binary, so such a test runs alone in a child
/// process of that binary. `test` is the test's path inside the binary
/// (`gauges::the_matcher_exports_…`). In the parent this runs the child,
/// fails the test with the child's output if the child failed, and returns
/// `true` (the caller returns); in the child it returns `false` and the
/// caller goes on with the test's body.
pub fn run_in_own_process(test: &str) -> bool {
    if std::env::var(OWN_PROCESS_ENV).as_deref() == Ok(test) {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS_ENV, test)
        .output()
        .expect("spawn the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in its own process: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves
/// nothing running.
pub struct ChildProcess {
    child: Option<Child>,
    pub log: tempfile::NamedTempFile,
}

impl ChildProcess {
    /// Spawns `program` with `env`, its stderr (logs) kept in a temp file.
    pub fn spawn(program: &str, args: &[&str], env: &[(String, String)]) -> ChildProcess {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn child process");
        ChildProcess {
            child: Some(child),
            log,
        }
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        terminate_child(self.child.take()?, timeout)
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `GET path` on a service's operations endpoint (`/metrics`, `/healthz`,
/// `/readyz`) at `addr`: the status code and body. HTTP/1.0 over a plain
/// socket (no HTTP client needed); `None` if nothing answers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// `/readyz` at `addr`: the status code and the JSON body (`{"checks":
/// {name: "ok" | why}}`); `None` if nothing answers.
pub async fn readyz(addr: std::net::SocketAddr) -> Option<(u16, serde_json::Value)> {
    let (code, body) = http_get(addr, "/readyz").await?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// Waits (60 s at most) until `/readyz` at `addr` answers `code` with check
/// `check` reported as `ok` (`want_ok`) or as failing; returns that body.
pub async fn wait_ready(
    addr: std::net::SocketAddr,
    code: u16,
    check: &str,
    want_ok: bool,
) -> serde_json::Value {
    let what = format!("/readyz {code} with {check} ok={want_ok}");
    let mut seen = serde_json::Value::Null;
    let start = Instant::now();
    loop {
        if let Some((c, body)) = readyz(addr).await {
            if c == code && (body["checks"][check] == "ok") == want_ok {
                return body;
            }
            seen = body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/metrics` at `addr` until it shows `metric`; returns the page.
pub async fn wait_for_metric(
    addr: std::net::SocketAddr,
    metric: &str,
    timeout: Duration,
) -> String {
    let start = Instant::now();
    loop {
        if let Some((200, page)) = http_get(addr, "/metrics").await {
            if page.contains(metric) {
                return page;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {metric} on /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM to `child`, then its exit status within `timeout`; SIGKILL (and
/// none) after it.
pub fn terminate_child(mut child: Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    use nix::sys::signal::{kill, Signal};
    let _ = kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
