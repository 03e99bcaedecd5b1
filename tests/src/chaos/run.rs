//! One run: the servers, the sources and the fleet set up, the chaos, the
//! wait until caught up, and the checks.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sqlx::{Connection, PgConnection, PgPool};

use super::fleet::Proc;
use super::sources::{Firebird, Qms};
use super::verify::{self, KeyDiff};
use super::{Binaries, Options, Summary};
use crate::nats::TempNats;
use crate::postgres::TempCluster;

/// The database of the run, and that of the reference run.
const DATABASE: &str = "etl";
const REFERENCE: &str = "reference";
/// The matcher's person events.
const EVENTS_STREAM: &str = "PERSONS";
const EVENTS_PREFIX: &str = "persons";
/// Metric lines that count an extractor's completed syncs.
const QMS_SYNCS: &str = "qms_syncs_total{outcome=\"complete\"} ";
const INFOCLINICA_PASSES: &str = "infoclinica_delta_pass_seconds_count{database=\"main\"} ";

/// NATS and PostgreSQL of the run, each possibly down until a time.
pub struct Bus {
    nats: TempNats,
    pg: TempCluster,
    nats_up_at: Option<Instant>,
    pg_up_at: Option<Instant>,
    pub nats_restarts: u32,
    pub postgres_restarts: u32,
}

impl Bus {
    pub async fn start() -> anyhow::Result<Bus> {
        let (nats, pg) = tokio::task::spawn_blocking(|| (TempNats::start(), TempCluster::start()))
            .await
            .context("starting nats-server and PostgreSQL")?;
        let mut conn =
            PgConnection::connect_with(&pg.server().without_db().database("postgres")).await?;
        for db in [DATABASE, REFERENCE] {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut conn)
                .await?;
        }
        Ok(Bus {
            nats,
            pg,
            nats_up_at: None,
            pg_up_at: None,
            nats_restarts: 0,
            postgres_restarts: 0,
        })
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Settings of a service using `database` on this run's servers.
    pub fn env(&self, database: &str) -> Vec<(String, String)> {
        let pg = self.pg.server();
        [
            ("ETL__NATS__URL", self.nats.url()),
            ("ETL__DATABASE__HOST", pg.host.clone()),
            ("ETL__DATABASE__PORT", pg.port.to_string()),
            ("ETL__DATABASE__USERNAME", pg.username.clone()),
            ("ETL__DATABASE__DATABASE_NAME", database.to_string()),
            ("ETL__DATABASE__ACQUIRE_TIMEOUT", "2s".into()),
            ("ETL__SHUTDOWN__DEADLINE", "10s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub async fn pool(&self, database: &str) -> anyhow::Result<PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.pg.server().without_db().database(database))
            .await?)
    }

    pub fn nats_is_up(&self) -> bool {
        self.nats_up_at.is_none()
    }

    pub fn postgres_is_up(&self) -> bool {
        self.pg_up_at.is_none()
    }

    /// kill -9 of nats-server, started again after `down`.
    pub fn kill_nats(&mut self, down: Duration) {
        self.nats.kill_server();
        self.nats_up_at = Some(Instant::now() + down);
        self.nats_restarts += 1;
    }

    /// PostgreSQL stopped at once (`-m immediate`), started after `down`.
    pub fn stop_postgres(&mut self, down: Duration) {
        tokio::task::block_in_place(|| self.pg.stop_server());
        self.pg_up_at = Some(Instant::now() + down);
        self.postgres_restarts += 1;
    }

    /// Starts what is due (`all`: whatever is down).
    pub fn tick(&mut self, all: bool) {
        let due = |t: Option<Instant>| t.is_some_and(|t| all || Instant::now() >= t);
        if due(self.nats_up_at) {
            tokio::task::block_in_place(|| self.nats.start_server());
            self.nats_up_at = None;
        }
        if due(self.pg_up_at) {
            tokio::task::block_in_place(|| self.pg.start_server());
            self.pg_up_at = None;
        }
    }
}

/// Everything of one run.
pub struct Rig {
    pub bus: Bus,
    binaries: Binaries,
    dir: std::path::PathBuf,
    _sim: Proc,
    pub qms: Qms,
    pub firebird: Firebird,
    pub fleet: Vec<Proc>,
    /// Attempts to kill the qMS extractor while it publishes, and hits.
    pub qms_publish_strikes: u32,
    pub qms_publish_kills: u32,
}

impl Rig {
    pub async fn start(binaries: Binaries, options: &Options, dir: &Path) -> anyhow::Result<Rig> {
        let bus = Bus::start().await?;
        // As deployed: the schema owner migrates, the services never do.
        for database in [DATABASE, REFERENCE] {
            let out = tokio::process::Command::new(binaries.path("etl"))
                .arg("migrate")
                .envs(bus.env(database))
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "etl migrate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sim_port = super::fleet::free_port();
        let mut sim = Proc::new(
            "qms-sim",
            binaries.path("qms-sim"),
            &[
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--count",
                &options.records.to_string(),
                "--seed",
                &options.seed.to_string(),
            ],
            Vec::new(),
            dir,
        );
        sim.start()?;
        let qms = Qms::new(([127, 0, 0, 1], sim_port).into(), options.records);
        let name = crate::unique("chaos");
        let firebird = Firebird::create(
            dir,
            &name,
            binaries.path("infoclinica-extractor"),
            options.records,
            options.seed,
        )
        .await?;
        let sim_source = &qms;
        crate::wait_until(
            Duration::from_secs(20),
            "qms-sim answering",
            || async move { sim_source.keys().await.is_ok() },
        )
        .await;
        let fleet = fleet(&binaries, &bus, &qms, &firebird, dir);
        let mut rig = Rig {
            bus,
            binaries,
            dir: dir.to_path_buf(),
            _sim: sim,
            qms,
            firebird,
            fleet,
            qms_publish_strikes: 0,
            qms_publish_kills: 0,
        };
        for p in &mut rig.fleet {
            p.start()?;
        }
        Ok(rig)
    }

    /// Kills and restarts at random for `options.duration` while the
    /// sources change.
    pub async fn chaos(&mut self, options: &Options, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        let pause = |rng: &mut ChaCha8Rng| {
            let (lo, hi) = options.pause;
            Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
        };
        let end = Instant::now() + options.duration;
        // The first sync publishes every record: killed in the middle.
        self.kill_qms_mid_publish(rng).await;
        let mut next_strike = Instant::now() + pause(rng);
        let mut next_change = Instant::now();
        while Instant::now() < end {
            self.bus.tick(false);
            for p in &mut self.fleet {
                p.tick()?;
            }
            if Instant::now() >= next_strike {
                self.strike(rng).await?;
                next_strike = Instant::now() + pause(rng);
            }
            if Instant::now() >= next_change {
                self.change_sources(rng, options.records).await?;
                next_change = Instant::now() + Duration::from_millis(rng.random_range(300..=1500));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// One kill or server restart, chosen at random; one in eight is the
    /// qMS extractor killed while it publishes a large change.
    async fn strike(&mut self, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        if rng.random_range(0..8) == 0 {
            return self.strike_qms_publish(rng).await;
        }
        let target = rng.random_range(0..self.fleet.len() + 2);
        let down = Duration::from_millis(rng.random_range(500..=3000));
        if target < self.fleet.len() {
            self.fleet[target].kill(Duration::from_millis(rng.random_range(0..=2000)));
        } else if target == self.fleet.len() && self.bus.nats_is_up() {
            self.bus.kill_nats(down);
        } else if target > self.fleet.len() && self.bus.postgres_is_up() {
            self.bus.stop_postgres(down);
        }
        Ok(())
    }

    /// A large share of the qMS export edited, the extractor killed as soon
    /// as its sync starts publishing, and half the time the edit undone at
    /// once (A → B → A: the next sync must publish A again).
    async fn strike_qms_publish(&mut self, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        if !self.fleet[0].is_running() || !self.bus.nats_is_up() {
            return Ok(());
        }
        let rows = self.qms.bulk_edit(rng).await?;
        self.kill_qms_mid_publish(rng).await;
        if rng.random_bool(0.5) {
            self.qms.restore(rows).await?;
        }
        Ok(())
    }

    /// Kills the qMS extractor as soon as a new message of its appears on
    /// the stream (10 s at most: a large export is downloaded and compared
    /// first); whether it did.
    pub async fn kill_qms_mid_publish(&mut self, rng: &mut ChaCha8Rng) -> bool {
        self.qms_publish_strikes += 1;
        let last = |stream: Option<async_nats::jetstream::stream::Stream>| async move {
            let stream = stream?;
            let message = stream.get_last_raw_message_by_subject("patients.qms").await;
            Some(message.map(|m| m.sequence).unwrap_or(0))
        };
        let Ok(client) = async_nats::connect(self.bus.nats_url()).await else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        // At the start the extractor may not have created the stream yet.
        let mut stream = js.get_stream("PATIENTS").await.ok();
        let base = last(stream.clone()).await.unwrap_or(0);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && self.fleet[0].is_running() {
            if stream.is_none() {
                stream = js.get_stream("PATIENTS").await.ok();
            }
            if last(stream.clone()).await.is_some_and(|seq| seq > base) {
                self.fleet[0].kill(Duration::from_millis(rng.random_range(0..=2000)));
                self.qms_publish_kills += 1;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    async fn change_sources(&mut self, rng: &mut ChaCha8Rng, records: u64) -> anyhow::Result<()> {
        if rng.random_bool(0.5) {
            self.qms.change(rng, records).await
        } else {
            self.firebird.change(rng, records).await
        }
    }

    /// The chaos is over: every server and process up again.
    pub fn freeze(&mut self) -> anyhow::Result<()> {
        self.bus.tick(true);
        for p in &mut self.fleet {
            p.ensure_running()?;
        }
        Ok(())
    }

    /// Waits until the pipeline has caught up with the sources: the time
    /// it took, or what was still behind at `timeout`.
    pub async fn converge(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Result<Duration, String>> {
        let start = Instant::now();
        let pool = self.bus.pool(DATABASE).await?;
        let mut syncs = [Completions::default(), Completions::default()];
        for (c, (i, metric)) in syncs
            .iter_mut()
            .zip([(0, QMS_SYNCS), (1, INFOCLINICA_PASSES)])
        {
            c.last = self.fleet[i].metric(metric).await.unwrap_or(0.0);
        }
        loop {
            for p in &mut self.fleet {
                p.tick()?;
            }
            let behind = self.behind(&pool, &mut syncs).await;
            match behind {
                None => return Ok(Ok(start.elapsed())),
                Some(why) if start.elapsed() > timeout => return Ok(Err(why)),
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// What the pipeline still lacks; none when it has caught up.
    async fn behind(&self, pool: &PgPool, syncs: &mut [Completions; 2]) -> Option<String> {
        let mut lacks = Vec::new();
        for (c, (i, metric)) in syncs
            .iter_mut()
            .zip([(0, QMS_SYNCS), (1, INFOCLINICA_PASSES)])
        {
            if let Some(v) = self.fleet[i].metric(metric).await {
                c.observe(v);
            }
            if c.total < 2.0 {
                lacks.push(format!(
                    "{}: {} sync(s) since the chaos",
                    self.fleet[i].name, c.total
                ));
            }
        }
        let keys = [
            ("qms", self.qms.keys().await),
            ("infoclinica", self.firebird.keys().await),
        ];
        for (source, keys) in keys {
            let stored = verify::live_keys(pool, source).await;
            match (keys, stored) {
                (Ok(k), Ok(s)) => {
                    let diff = KeyDiff::of(&k, &s);
                    if !diff.is_empty() {
                        lacks.push(format!("{source} keys {diff:?}"));
                    }
                }
                (k, s) => lacks.push(format!("{source} keys unread: {:?} {:?}", k.err(), s.err())),
            }
        }
        match verify::consumer_lag(&self.bus.nats_url(), "PATIENTS", "loader").await {
            Ok(0) => {}
            Ok(n) => lacks.push(format!("loader consumer lag {n}")),
            Err(e) => lacks.push(format!("loader consumer unread: {e}")),
        }
        match verify::pending_changes(pool).await {
            Ok(0) => {}
            Ok(n) => lacks.push(format!("{n} change(s) not matched")),
            Err(e) => lacks.push(format!("record_changes unread: {e}")),
        }
        match verify::unpublished_events(pool).await {
            Ok(0) => {}
            Ok(n) => lacks.push(format!("{n} person event(s) not published")),
            Err(e) => lacks.push(format!("person events unread: {e}")),
        }
        (!lacks.is_empty()).then(|| lacks.join("; "))
    }

    /// The person events once the relay has published every one (the
    /// re-match's too), within `timeout`, checked.
    pub async fn events(&self, timeout: Duration) -> anyhow::Result<verify::EventsSeen> {
        let pool = self.bus.pool(DATABASE).await?;
        let start = Instant::now();
        loop {
            match verify::unpublished_events(&pool).await? {
                0 => break,
                n if start.elapsed() > timeout => {
                    return Ok(verify::EventsSeen {
                        bus: Vec::new(),
                        problems: vec![format!("{n} person event(s) not published")],
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        verify::events(&pool, &self.bus.nats_url(), EVENTS_STREAM, EVENTS_PREFIX).await
    }

    /// `etl rematch` on the run's database; a failure to run is reported
    /// as its outcome.
    pub async fn rematch(&self) -> verify::Rematch {
        verify::rematch(&self.binaries.path("etl"), &self.bus.env(DATABASE))
            .await
            .unwrap_or_else(|e| verify::Rematch {
                line: format!("did not run: {e:#}"),
                counts: Vec::new(),
            })
    }

    /// SIGTERM to every process; the non-zero exits.
    pub fn stop(&mut self) -> Vec<String> {
        let mut unclean = Vec::new();
        for p in self.fleet.iter_mut().filter(|p| p.is_running()) {
            match p.terminate(Duration::from_secs(20)) {
                Some(s) if s.success() => {}
                Some(s) => unclean.push(format!("{}: {s}", p.name)),
                None => unclean.push(format!("{}: killed after 20 s", p.name)),
            }
        }
        unclean
    }

    /// The reference: the same binaries, once and undisturbed, from the
    /// final sources into a stream and database of their own, within
    /// `timeout`.
    pub async fn reference(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut env = self.bus.env(REFERENCE);
        env.extend(
            [
                ("ETL__STREAM__NAME", "REFERENCE"),
                ("ETL__STREAM__SUBJECT_PREFIX", "reference"),
                ("ETL__QMS__URL", &self.qms.url()),
                ("ETL__QMS__STATE__OBJECT_BUCKET", "reference_qms_state"),
                ("ETL__QMS__REJECTS__STREAM", "REFERENCE_REJECTS"),
                ("ETL__QMS__REJECTS__SUBJECT", "reference_rejects.qms"),
                ("ETL__EXTRACTOR__CHECKPOINT_BUCKET", "reference_checkpoints"),
                ("ETL__EXTRACTOR__SNAPSHOT_BUCKET", "reference_snapshots"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = self.firebird.config.to_string_lossy().to_string();
        let proc = |name: &str, bin: &str, args: &[&str]| {
            Proc::new(name, self.binaries.path(bin), args, env.clone(), &self.dir)
        };
        let mut loader = proc("reference-loader", "loader", &[]);
        let mut qms = proc("reference-qms", "qms-extractor", &["--no-daemon"]);
        let mut ic = proc(
            "reference-infoclinica",
            "infoclinica-extractor",
            &["--config", &config, "--initial-load", "--restart"],
        );
        for p in [&mut loader, &mut qms, &mut ic] {
            p.start()?;
        }
        for p in [&mut qms, &mut ic] {
            let status = p.wait_exit(timeout).await;
            anyhow::ensure!(
                status.is_some_and(|s| s.success()),
                "reference {} ended {status:?}: {}",
                p.name,
                p.last_error()
            );
        }
        let url = self.bus.nats_url();
        let waited = Instant::now();
        loop {
            match verify::consumer_lag(&url, "REFERENCE", "loader").await {
                Ok(0) => break,
                lag if waited.elapsed() > timeout => anyhow::bail!(
                    "the reference loader did not catch up in {timeout:?}: lag {lag:?}; {}",
                    loader.last_error()
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        loader.terminate(Duration::from_secs(20));
        Ok(())
    }

    /// Record-by-record comparison with the reference, and the reference's
    /// keys against the sources'.
    pub async fn compare(&self, summary: &mut Summary) -> anyhow::Result<()> {
        let chaos = verify::records(&self.bus.pool(DATABASE).await?).await?;
        let reference_pool = self.bus.pool(REFERENCE).await?;
        let reference = verify::records(&reference_pool).await?;
        summary.comparison = verify::Comparison::of(&chaos, &reference);
        let keys = [
            ("qms", self.qms.keys().await?),
            ("infoclinica", self.firebird.keys().await?),
        ];
        for (source, keys) in keys {
            let stored = verify::live_keys(&reference_pool, source).await?;
            summary
                .reference_keys
                .push((source.to_string(), KeyDiff::of(&keys, &stored)));
        }
        Ok(())
    }
}

impl Rig {
    /// The personal data of the run looked for in every log of the run
    /// (the operator's listings written to `etl.log` first), in the dead
    /// letters' reasons and in the person events on the bus (`events`).
    pub async fn privacy(
        &self,
        events: &[crate::person_events::BusEvent],
    ) -> anyhow::Result<Vec<super::privacy::Leak>> {
        self.etl_listings().await?;
        let pool = self.bus.pool(DATABASE).await?;
        let values = super::privacy::personal_values(&pool).await?;
        anyhow::ensure!(!values.is_empty(), "no personal values to look for");
        let mut leaks = super::privacy::scan_logs(&values, &self.dir)?;
        leaks.extend(super::privacy::scan_dead_letters(&values, &pool).await?);
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        leaks.extend(super::privacy::find(
            &values,
            &payloads.join("\n"),
            "person events",
        ));
        Ok(leaks)
    }

    /// What an operator lists without opting in to personal data, into
    /// `etl.log` beside the services' logs.
    async fn etl_listings(&self) -> anyhow::Result<()> {
        let commands: [&[&str]; 6] = [
            &["status"],
            &["summary"],
            &["dlq", "list"],
            &["persons", "reviews"],
            &["sources", "list"],
            &["brake", "list"],
        ];
        let mut out = String::new();
        for args in commands {
            let run = tokio::process::Command::new(self.binaries.path("etl"))
                .args(args)
                .envs(self.bus.env(DATABASE))
                .output()
                .await?;
            out.push_str(&format!("=== etl {}\n", args.join(" ")));
            out.push_str(&String::from_utf8_lossy(&run.stdout));
            out.push_str(&String::from_utf8_lossy(&run.stderr));
        }
        std::fs::write(self.dir.join("etl.log"), out)?;
        Ok(())
    }
}

/// The processes under chaos: both extractors, two loaders, the matcher.
/// The extractors come first (`converge` reads their metrics by position).
fn fleet(binaries: &Binaries, bus: &Bus, qms: &Qms, firebird: &Firebird, dir: &Path) -> Vec<Proc> {
    let env = |extra: &[(&str, &str)]| {
        let mut env = bus.env(DATABASE);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let qms_env = env(&[
        ("ETL__QMS__URL", &qms.url()),
        ("ETL__QMS__INTERVAL", "2s"),
        ("ETL__QMS__FAILED_SYNC_DELAY", "1s"),
        ("ETL__QMS__CONNECT_TIMEOUT", "5s"),
        ("ETL__QMS__READ_TIMEOUT", "10s"),
        ("ETL__QMS__RETRY_BACKOFF__INITIAL", "200ms"),
        ("ETL__QMS__RETRY_BACKOFF__MAX", "1s"),
        // The harness removes a few records at a time; the brake would
        // hold a burst of them after a long outage.
        ("ETL__QMS__DELETION_BRAKE__MAX_SHARE", "0.5"),
    ]);
    let config = firebird.config.to_string_lossy().to_string();
    let loader_env = env(&[
        ("ETL__LOADER__ACK_WAIT", "5s"),
        ("ETL__LOADER__RETRY__MAX", "2s"),
    ]);
    let matcher_env = env(&[
        ("ETL__MATCHER__RETRY__MAX", "2s"),
        ("ETL__EVENTS__ENABLED", "true"),
        ("ETL__EVENTS__STREAM", EVENTS_STREAM),
        ("ETL__EVENTS__SUBJECT_PREFIX", EVENTS_PREFIX),
        ("ETL__EVENTS__POLL_INTERVAL", "200ms"),
        ("ETL__EVENTS__RETRY__MAX", "1s"),
    ]);
    vec![
        Proc::new(
            "qms-extractor",
            binaries.path("qms-extractor"),
            &[],
            qms_env,
            dir,
        ),
        Proc::new(
            "infoclinica-extractor",
            binaries.path("infoclinica-extractor"),
            &["--config", &config],
            env(&[]),
            dir,
        ),
        Proc::new(
            "loader-1",
            binaries.path("loader"),
            &[],
            loader_env.clone(),
            dir,
        ),
        Proc::new("loader-2", binaries.path("loader"), &[], loader_env, dir),
        Proc::new("matcher", binaries.path("matcher"), &[], matcher_env, dir),
    ]
}

/// Completed syncs of a process seen since a point, across its restarts
/// (a restarted process counts from zero again).
#[derive(Debug, Default)]
struct Completions {
    last: f64,
    total: f64,
}

impl Completions {
    fn observe(&mut self, value: f64) {
        self.total += if value >= self.last {
            value - self.last
        } else {
            value
        };
        self.last = value;
    }
}

#[cfg(test)]
mod tests {
    use super::Completions;

    #[test]
    fn completions_count_across_a_restart() {
        let mut c = Completions {
            last: 3.0,
            total: 0.0,
        };
        c.observe(4.0);
        c.observe(0.0); // restarted
        c.observe(2.0);
        assert_eq!(c.total, 3.0);
    }
}
