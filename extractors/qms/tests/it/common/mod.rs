//! Fixture of the extractor's integration tests: a simulator of the test's
//! own, a fresh database, a stream and state buckets of the test's own, and
//! an in-process loader that moves what the extractor publishes into
//! PostgreSQL.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use chrono::NaiveDate;
use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use qms_extractor::parse::{self, Decoder, LineSplitter, Rejoiner};
use qms_extractor::{Extractor, RunOptions, Settings, SyncReport};
use qms_sim::Simulator;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Fixture {
    pub db: DatabaseSettings,
    pub stream: StreamSettings,
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub sim: Simulator,
    pub sim_url: String,
    pub settings: Settings,
    sim_stop: CancellationToken,
    loader_stop: CancellationToken,
    loader: Option<JoinHandle<anyhow::Result<loader::Summary>>>,
}

impl Fixture {
    /// `rows` generated patients (seed 7) served by a fresh simulator.
    pub async fn new(rows: u64) -> Fixture {
        Self::with_sim(qms_sim::Config {
            seed: 7,
            count: rows,
            slow_first_byte: Duration::from_secs(5),
            drip_delay: Duration::from_millis(1500),
            rows_per_chunk: 128,
            ..Default::default()
        })
        .await
    }

    pub async fn with_sim(config: qms_sim::Config) -> Fixture {
        let db = testkit::fresh_database().await;
        let stream = testkit::unique_stream();
        let js = testkit::jetstream(&stream).await;
        let pool = testkit::pool(&db).await;
        let sim = Simulator::new(config);
        let sim_stop = CancellationToken::new();
        let stop = sim_stop.clone();
        let (addr, _task) = sim
            .serve("127.0.0.1:0".parse().unwrap(), async move {
                stop.cancelled().await
            })
            .await
            .expect("simulator binds");
        let sim_url = format!("http://{addr}{}", qms_sim::EXPORT_PATH);

        let mut settings = Settings::default();
        settings.nats.url = testkit::nats_url();
        settings.stream = stream.clone();
        let q = &mut settings.qms;
        q.url = sim_url.clone();
        q.connect_timeout = Duration::from_secs(2);
        q.read_timeout = Duration::from_secs(1);
        q.retries = 2;
        q.retry_backoff.initial = Duration::from_millis(50);
        q.retry_backoff.max = Duration::from_millis(200);
        q.failed_sync_delay = Duration::from_millis(200);
        q.interval = Duration::from_millis(500);
        let id = testkit::unique("qms");
        q.state.object_bucket = format!("{id}_state");
        q.rejects.stream = format!("{}_REJECTS", stream.name);
        q.rejects.subject = format!("{}_rejects.qms", stream.subject_prefix);
        q.rejects.max_age = Duration::from_secs(3600);

        let mut fixture = Fixture {
            db,
            stream,
            js,
            pool,
            sim,
            sim_url,
            settings,
            sim_stop,
            loader_stop: CancellationToken::new(),
            loader: None,
        };
        fixture.start_loader();
        fixture
    }

    fn start_loader(&mut self) {
        let s = loader::testing::settings(&self.db, &testkit::nats_url(), &self.stream, "loader");
        self.loader = Some(tokio::spawn(loader::run(s, self.loader_stop.clone())));
    }

    pub async fn extractor(&self) -> Extractor {
        Extractor::connect(self.settings.clone())
            .await
            .expect("extractor connects")
    }

    /// One sync through a fresh extractor (as a restarted process would).
    pub async fn sync(&self, options: RunOptions) -> Result<SyncReport, qms_extractor::SyncError> {
        self.extractor()
            .await
            .sync(options, &CancellationToken::new())
            .await
    }

    pub async fn sync_ok(&self) -> SyncReport {
        self.sync(RunOptions::default())
            .await
            .expect("sync succeeds")
    }

    /// Messages in the test's stream.
    pub async fn stream_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.stream.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    pub async fn reject_messages(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(&self.settings.qms.rejects.stream)
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Waits until PostgreSQL holds exactly `expected`.
    pub async fn wait_for_state(&self, expected: &Expected) {
        let pool = self.pool.clone();
        testkit::wait_until(Duration::from_secs(60), "source_records to match", || {
            let pool = pool.clone();
            async move { actual_state(&pool).await == *expected }
        })
        .await;
    }

    pub async fn stop(mut self) {
        self.loader_stop.cancel();
        if let Some(task) = self.loader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.sim_stop.cancel();
    }
}

/// Per his number: full content hash and whether deleted.
pub type Expected = HashMap<String, ([u8; 32], bool)>;

/// What the records of a clean UTF-8 export hash to.
pub fn hashes_of_export(text: &str) -> HashMap<String, [u8; 32]> {
    let today = chrono::Utc::now().date_naive();
    parse_export(text.as_bytes(), "utf-8", today)
        .into_iter()
        .map(|(his, record)| {
            let hash = proto::envelope::content_hash(proto::Operation::Upsert, Some(&record));
            (his, hash)
        })
        .collect()
}

/// Parses a whole export with the extractor's parser.
pub fn parse_export(
    bytes: &[u8],
    encoding: &str,
    today: NaiveDate,
) -> Vec<(String, proto::PatientRecord)> {
    let decoder = Decoder::for_label(encoding).unwrap();
    let mut splitter = LineSplitter::default();
    let mut joiner = Rejoiner::default();
    let mut raws = Vec::new();
    splitter.push(bytes, |line| {
        let (text, bad) = decoder.decode(line.bytes);
        joiner.push(&text, bad, |r| raws.push(r.clone()));
    });
    assert!(!splitter.finish(|_| panic!("unterminated line")));
    joiner.finish(|r| raws.push(r.clone()));
    raws.iter()
        .map(|r| parse::parse_record(r, &parse::Profile::default(), today).expect("parses"))
        .collect()
}

pub fn delete_hash() -> [u8; 32] {
    proto::envelope::content_hash(proto::Operation::Delete, None)
}

/// Expected state: every record of `export` live, every his number in
/// `deleted` soft-deleted.
pub fn expected(export: &str, deleted: &[String]) -> Expected {
    let mut e: Expected = hashes_of_export(export)
        .into_iter()
        .map(|(k, h)| (k, (h, false)))
        .collect();
    for his in deleted {
        e.insert(his.clone(), (delete_hash(), true));
    }
    e
}

pub async fn actual_state(pool: &PgPool) -> Expected {
    let rows: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT source_id, content_hash, deleted_at IS NOT NULL FROM source_records WHERE source = 'qms'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .map(|(id, hash, deleted)| (id, (hash.try_into().unwrap(), deleted)))
        .collect()
}

pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}
