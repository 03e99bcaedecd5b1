//! Helpers of the extractor's integration tests: a Firebird test database of
//! the test's own (WIN1251, generated patients, triggers), settings pointing
//! at the test's stream and buckets, the in-process loader, the expected
//! state read back from Firebird, and a TCP proxy that can be cut.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use etl_runtime::database::DatabaseSettings as PgSettings;
use infoclinica_extractor::firebird::FbConnection;
use infoclinica_extractor::mapping::{Mapped, Mapper};
use infoclinica_extractor::sample;
use infoclinica_extractor::settings::{Charset, DatabaseSettings, Settings};
use proto::bus::StreamSettings;
use proto::Operation;
use rsfbclient::prelude::*;
use rsfbclient::RawValue;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SEED: u64 = 7;
pub const TEST_DIR: &str = "/var/lib/firebird/3.0/data/etl-tests";

/// A Firebird database of this test's own, dropped at the end.
pub struct FbDatabase {
    pub settings: DatabaseSettings,
}

impl FbDatabase {
    /// `count` generated patients (PCODE 1..=count), change log if `triggers`.
    pub fn create(count: u64, triggers: bool) -> FbDatabase {
        let name = testkit::unique("ic");
        let mut db = DatabaseSettings {
            name: "branch".into(),
            host: "127.0.0.1".into(),
            port: 3050,
            database: format!("{TEST_DIR}/{name}.fdb"),
            user: "ETL_TEST".into(),
            password: SecretString::from("etl_test"),
            charset: Charset::Win1251,
            ..Default::default()
        };
        for (filial, unit) in sample::SAMPLE_FILIALS {
            db.business_units
                .insert(filial.to_string(), unit.to_string());
        }
        db.table.snils = Some(sample::SNILS_COLUMN.into());
        db.table.oms_policy = Some(sample::OMS_COLUMN.into());
        remove_left_behind();
        sample::create_sample(&db, count, SEED, triggers)
            .expect("Firebird must be running: deploy/local-services.sh");
        FbDatabase { settings: db }
    }

    /// A read-write connection for the test's own changes.
    pub fn writer(&self) -> FbConnection {
        sample::connect_writer(&self.settings).expect("connect")
    }

    pub fn exec(&self, sql: &str) {
        let mut conn = self.writer();
        conn.execute(sql, ())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().ok();
    }

    /// `(id, pcode, processed)` of every change-log row.
    pub fn changelog(&self) -> Vec<(i64, i64, String)> {
        let mut conn = self.writer();
        let rows: Vec<(i64, i64, String)> = conn
            .query(
                "SELECT ID, PCODE, PROCESSED FROM ETL_CLIENTS_LOG ORDER BY ID",
                (),
            )
            .unwrap();
        conn.close().ok();
        rows
    }

    /// The state PostgreSQL must reach: every row of CLIENTS mapped by the
    /// extractor's own mapping, plus `deleted` PCODEs as deletes.
    pub fn expected(&self, deleted: &[i64]) -> Expected {
        let mapper = Mapper::new(&self.settings);
        let mut conn = infoclinica_extractor::firebird::builder(&self.settings)
            .connect()
            .unwrap();
        let today = infoclinica_extractor::mapping::today();
        let mut out = Expected::new();
        conn.stream_raw(&mapper.page_sql(0, 10_000_000), |row: &[RawValue]| {
            if let Mapped::Record { pcode, record } = mapper.map(row, today) {
                out.insert(
                    format!("{}{pcode}", self.settings.source_id_prefix),
                    (
                        proto::envelope::content_hash(Operation::Upsert, Some(&record)),
                        false,
                    ),
                );
            }
            Ok(())
        })
        .unwrap();
        for p in deleted {
            out.insert(
                format!("{}{p}", self.settings.source_id_prefix),
                (proto::envelope::content_hash(Operation::Delete, None), true),
            );
        }
        out
    }
}

impl Drop for FbDatabase {
    /// Drops the database on a thread of its own, waiting 30 s at most
    /// (rsfbclient has no timeouts; a file left behind is removed by the
    /// next run, `remove_left_behind`).
    fn drop(&mut self) {
        let settings = self.settings.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(conn) = sample::connect_writer(&settings) {
                let _ = conn.drop_database();
            }
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(std::time::Duration::from_secs(30));
    }
}

/// Drops test databases of test processes that have exited (a failed test
/// may leave its file behind).
fn remove_left_behind() {
    let Ok(entries) = std::fs::read_dir(TEST_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".fdb") else {
            continue;
        };
        let pid = stem
            .strip_prefix("ic_")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let mut db = DatabaseSettings {
                    database: format!("{TEST_DIR}/{name}"),
                    user: "ETL_TEST".into(),
                    password: SecretString::from("etl_test"),
                    ..Default::default()
                };
                db.charset = Charset::Win1251;
                if let Ok(conn) = sample::connect_writer(&db) {
                    let _ = conn.drop_database();
                }
            }
        }
    }
}

/// source id → (content hash, deleted).
pub type Expected = HashMap<String, ([u8; 32], bool)>;

pub async fn actual(pool: &PgPool) -> Expected {
    let rows: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT source_id, content_hash, deleted_at IS NOT NULL FROM source_records \
         WHERE source = 'infoclinica'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .map(|(id, hash, deleted)| (id, (hash.try_into().unwrap(), deleted)))
        .collect()
}

/// Waits until PostgreSQL holds exactly `expected`, then asserts it.
pub async fn wait_for_state(pool: &PgPool, expected: &Expected) {
    let ok = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if &actual(pool).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if ok.is_err() {
        let actual = actual(pool).await;
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(k, v)| actual.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .take(5)
            .collect();
        let extra = actual.keys().filter(|k| !expected.contains_key(*k)).count();
        panic!(
            "PostgreSQL state: {} rows, expected {}; wrong e.g. {wrong:?}; {extra} extra",
            actual.len(),
            expected.len()
        );
    }
}

/// What every test starts from.
pub struct Fixture {
    /// The NATS server of the stream, the loader and the extractor.
    pub nats_url: String,
    pub pg: PgSettings,
    pub pool: PgPool,
    pub stream: StreamSettings,
    pub js: jetstream::Context,
    pub loader: RunningLoader,
    pub checkpoint_bucket: String,
    pub snapshot_bucket: String,
}

impl Fixture {
    /// A config file for the extractor binary: this fixture's NATS stream
    /// and checkpoint bucket, `fb` reached at `port` (the server, or a
    /// [`Proxy`] in front of it). Other settings: `ETL__…` variables.
    pub fn config_file(
        &self,
        dir: &std::path::Path,
        fb: &FbDatabase,
        port: u16,
    ) -> std::path::PathBuf {
        let path = dir.join(format!("config-{port}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[nats]
url = "{nats}"
[stream]
name = "{stream}"
subject_prefix = "{prefix}"
max_age = "1h"
[extractor]
checkpoint_bucket = "{bucket}"
page_size = 100
[extractor.retry]
initial = "100ms"
max = "1s"
[[databases]]
name = "branch"
host = "127.0.0.1"
port = {port}
database = "{path}"
user = "ETL_TEST"
password = "etl_test"
charset = "WIN1251"
business_units = {{ "1" = "main", "3" = "branch-1", "7" = "branch-7" }}
[databases.table]
snils = "SNILS"
oms_policy = "POLIS"
"#,
                nats = testkit::nats_url(),
                stream = self.stream.name,
                prefix = self.stream.subject_prefix,
                bucket = self.checkpoint_bucket,
                path = fb.settings.database,
            ),
        )
        .unwrap();
        path
    }

    /// On the shared NATS server.
    pub async fn new() -> Fixture {
        Self::on_nats(&testkit::nats_url()).await
    }

    /// On the NATS server at `nats_url` (a test's own, which it restarts).
    pub async fn on_nats(nats_url: &str) -> Fixture {
        // Logs on stderr with RUST_LOG (e.g. RUST_LOG=infoclinica_extractor=debug).
        if std::env::var_os("RUST_LOG").is_some() {
            etl_runtime::telemetry::init(&Default::default());
        }
        let pg = testkit::fresh_database().await;
        let stream = testkit::unique_stream();
        let js = testkit::jetstream_at(nats_url, &stream).await;
        let pool = testkit::pool(&pg).await;
        let loader =
            RunningLoader::start(loader::testing::settings(&pg, nats_url, &stream, "loader"));
        Fixture {
            nats_url: nats_url.to_string(),
            pg,
            pool,
            stream,
            js,
            loader,
            checkpoint_bucket: testkit::unique("ck"),
            snapshot_bucket: testkit::unique("snap"),
        }
    }

    /// Extractor settings on this test's stream and buckets for `db`.
    pub fn settings(&self, db: &DatabaseSettings) -> Settings {
        let mut s = Settings::default();
        s.nats.url = self.nats_url.clone();
        s.stream = self.stream.clone();
        s.extractor.checkpoint_bucket = self.checkpoint_bucket.clone();
        s.extractor.snapshot_bucket = self.snapshot_bucket.clone();
        s.extractor.page_size = 500;
        s.extractor.retry.initial = Duration::from_millis(100);
        s.extractor.retry.max = Duration::from_secs(1);
        s.extractor.connect_timeout = Duration::from_secs(5);
        s.extractor.query_timeout = Duration::from_secs(30);
        s.databases = vec![db.clone()];
        s
    }

    /// Messages stored in the test's stream.
    pub async fn stream_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.stream.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The checkpoint of database `name`, decoded.
    pub async fn checkpoint(&self, name: &str) -> Option<infoclinica_extractor::state::State> {
        let kv = self.js.get_key_value(&self.checkpoint_bucket).await.ok()?;
        let entry = kv.get(name).await.ok()??;
        serde_json::from_slice(&entry).ok()
    }

    /// Stops the loader and removes the test's buckets.
    pub async fn finish(self) {
        self.loader.stop().await;
        let _ = self.js.delete_key_value(&self.checkpoint_bucket).await;
        let _ = self.js.delete_object_store(&self.snapshot_bucket).await;
        let _ = self.js.delete_stream(&self.stream.name).await;
    }
}

pub use loader::testing::RunningLoader;

pub fn loader_settings(db: &PgSettings, stream: &StreamSettings) -> loader::Settings {
    loader::testing::settings(db, &testkit::nats_url(), stream, "loader")
}

/// Runs the extractor in process until it returns.
pub async fn extract(
    settings: Settings,
    mode: infoclinica_extractor::Mode,
) -> Vec<infoclinica_extractor::DatabaseSummary> {
    tokio::time::timeout(
        Duration::from_secs(120),
        infoclinica_extractor::run(settings, mode, CancellationToken::new()),
    )
    .await
    .expect("extractor finishes within 120 s")
    .expect("extractor returns Ok")
}

/// A TCP proxy in front of Firebird that a test can cut (every connection
/// closed, new ones refused) and restore, or make stall after a number of
/// bytes from the server: a Firebird server that goes away or hangs during
/// a pass, without stopping the server the other tests share.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Bytes from the server still forwarded before stalling; < 0: no limit.
    budget: Arc<AtomicI64>,
    generation: Arc<std::sync::Mutex<CancellationToken>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicI64::new(-1));
        let generation = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let task = {
            let (cut, budget, generation) = (cut.clone(), budget.clone(), generation.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let token = generation.lock().unwrap().clone();
                    let budget = budget.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                            return;
                        };
                        let (mut cr, mut cw) = client.into_split();
                        let (mut sr, mut sw) = server.into_split();
                        let up = async {
                            let mut buf = vec![0u8; 16384];
                            loop {
                                let n = cr.read(&mut buf).await.unwrap_or(0);
                                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        };
                        let down = async {
                            let mut buf = vec![0u8; 16384];
                            loop {
                                let n = sr.read(&mut buf).await.unwrap_or(0);
                                if n == 0 {
                                    break;
                                }
                                loop {
                                    let left = budget.load(Ordering::SeqCst);
                                    if left < 0 || left >= n as i64 {
                                        if left >= 0 {
                                            budget.fetch_sub(n as i64, Ordering::SeqCst);
                                        }
                                        break;
                                    }
                                    // Stalled: hold the data until cut.
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        };
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = async { tokio::join!(up, down) } => {}
                        }
                    });
                }
            })
        };
        Proxy {
            port,
            cut,
            budget,
            generation,
            task,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut generation = self.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Accepts connections again, without a byte limit.
    pub fn restore(&self) {
        self.budget.store(-1, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }

    /// From now, forward only `bytes` more from the server, then stall.
    pub fn stall_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
