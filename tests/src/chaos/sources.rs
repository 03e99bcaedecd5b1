//! The two sources and how the harness changes them: the qMS simulator's
//! export (rows added, edited, removed, restored as generated) through its
//! admin API, and the Infoclinica `CLIENTS` table in Firebird (rows
//! inserted, updated, deleted, each firing the change-log triggers).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rsfbclient::prelude::*;

/// Where the Firebird test databases live (the directory the server may
/// write; `deploy/local-services.sh` creates it and the user below).
pub const FIREBIRD_DIR: &str = "/var/lib/firebird/3.0/data/etl-tests";
const FIREBIRD_USER: &str = "ETL_TEST";
const FIREBIRD_PASSWORD: &str = "etl_test";

/// What was done to the sources, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    /// qMS only: edited or removed rows put back exactly as generated
    /// (A → B → A).
    pub restored: u64,
}

/// The qMS simulator (`qms-sim`, generated rows) and what the harness
/// believes it holds, to pick plausible changes.
pub struct Qms {
    pub addr: SocketAddr,
    count: u64,
    removed: BTreeSet<u64>,
    touched: Vec<(u64, u64)>,
    pub changes: Changes,
}

impl Qms {
    pub fn new(addr: SocketAddr, count: u64) -> Qms {
        Qms {
            addr,
            count,
            removed: BTreeSet::new(),
            touched: Vec::new(),
            changes: Changes::default(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/cgi-bin/qms_export_pat", self.addr)
    }

    /// One random change of the export: a few rows edited, removed,
    /// restored, or appended.
    pub async fn change(&mut self, rng: &mut ChaCha8Rng, records: u64) -> anyhow::Result<()> {
        let span = rng.random_range(1..=(records / 100).max(1));
        let from = rng.random_range(0..self.count);
        let to = (from + span).min(self.count);
        match rng.random_range(0..10) {
            0..=3 => {
                self.post(&format!("/admin/edit?from={from}&to={to}"))
                    .await?;
                self.changes.changed += to - from;
                self.touched.push((from, to));
            }
            4..=5 => {
                // Small: the extractor's deletion brake (raised for the
                // harness) must not hold them.
                let to = (from + span.div_ceil(2)).min(self.count);
                self.post(&format!("/admin/delete?from={from}&to={to}"))
                    .await?;
                let new = (from..to).filter(|i| self.removed.insert(*i)).count();
                self.changes.removed += new as u64;
                self.touched.push((from, to));
            }
            6..=7 if !self.touched.is_empty() => {
                let rows = self
                    .touched
                    .swap_remove(rng.random_range(0..self.touched.len()));
                self.restore(rows).await?;
            }
            _ => {
                self.count += span;
                self.post(&format!("/admin/count?count={}", self.count))
                    .await?;
                self.changes.added += span;
            }
        }
        Ok(())
    }

    /// Edits a large share (20–50 %) of the rows at once: the next sync
    /// publishes long enough to be killed in the middle. Returns the rows.
    pub async fn bulk_edit(&mut self, rng: &mut ChaCha8Rng) -> anyhow::Result<(u64, u64)> {
        let span = self.count * rng.random_range(20..=50) / 100;
        let from = rng.random_range(0..=self.count - span);
        self.post(&format!("/admin/edit?from={from}&to={}", from + span))
            .await?;
        self.changes.changed += span;
        Ok((from, from + span))
    }

    /// Rows `from..to` back exactly as generated.
    pub async fn restore(&mut self, (from, to): (u64, u64)) -> anyhow::Result<()> {
        self.post(&format!("/admin/restore?from={from}&to={to}"))
            .await?;
        for i in from..to {
            self.removed.remove(&i);
        }
        self.changes.restored += to - from;
        Ok(())
    }

    async fn post(&self, path: &str) -> anyhow::Result<()> {
        match http_post(self.addr, path).await {
            Some(200) => Ok(()),
            other => bail!("qms-sim {path}: {other:?}"),
        }
    }

    /// The his numbers the export holds now, read from the export itself
    /// (first field of every line; the harness serves no wrapped lines).
    pub async fn keys(&self) -> anyhow::Result<BTreeSet<String>> {
        let (code, body) = crate::http_get(self.addr, "/cgi-bin/qms_export_pat")
            .await
            .context("qms-sim does not answer")?;
        if code != 200 {
            bail!("qms-sim export: status {code}");
        }
        Ok(body
            .lines()
            .filter_map(|l| l.split('|').next())
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect())
    }
}

/// `POST path` with an empty body; the status code.
async fn http_post(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        socket.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await.ok()?;
        let head = String::from_utf8_lossy(&response);
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// A Firebird database file on the local server.
#[derive(Debug, Clone)]
struct FbTarget {
    path: String,
}

impl FbTarget {
    fn connect(&self) -> anyhow::Result<rsfbclient::Connection<rsfbclient::RustFbClient>> {
        Ok(rsfbclient::builder_pure_rust()
            .host("127.0.0.1")
            .port(3050)
            .db_name(self.path.as_str())
            .user(FIREBIRD_USER)
            .pass(FIREBIRD_PASSWORD)
            .charset(rsfbclient::charset::WIN_1251)
            .connect()?)
    }

    /// Updates (or deletes) the existing rows chosen by `picks` (a random
    /// position among the rows, a random number for the new values) in one
    /// transaction; returns how many rows changed.
    fn update_or_delete(&self, picks: &[(u64, u64)], delete: bool) -> anyhow::Result<u64> {
        let mut conn = self.connect()?;
        let pcodes: Vec<(i64,)> = conn.query("SELECT PCODE FROM CLIENTS", ())?;
        if pcodes.is_empty() {
            return Ok(0);
        }
        conn.begin_transaction()?;
        let mut touched = 0;
        for (position, number) in picks {
            let pcode = pcodes[(*position % pcodes.len() as u64) as usize].0;
            let sql = if delete {
                format!("DELETE FROM CLIENTS WHERE PCODE = {pcode}")
            } else if number % 4 == 0 {
                format!(
                    "UPDATE CLIENTS SET PASPNUM = '{:06}' WHERE PCODE = {pcode}",
                    number % 1_000_000
                )
            } else {
                format!(
                    "UPDATE CLIENTS SET PHONE1 = '+7 (916) {:03}-{:02}-{:02}' WHERE PCODE = {pcode}",
                    number / 10_000 % 1000,
                    number / 100 % 100,
                    number % 100
                )
            };
            touched += conn.execute(&sql, ())? as u64;
        }
        conn.commit()?;
        conn.close()?;
        Ok(touched)
    }

    fn keys(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut conn = self.connect()?;
        let rows: Vec<(i64,)> = conn.query("SELECT PCODE FROM CLIENTS", ())?;
        conn.close()?;
        Ok(rows.into_iter().map(|(p,)| p.to_string()).collect())
    }
}

/// The Infoclinica sample database of this run, in the shared Firebird 3;
/// dropped with this value.
pub struct Firebird {
    target: FbTarget,
    /// The extractor's configuration (its `create-sample-db` and
    /// `sample-changes` commands create and extend the sample).
    pub config: PathBuf,
    extractor: PathBuf,
    pub changes: Changes,
}

impl Firebird {
    /// Writes the extractor's configuration for a new database and creates
    /// it with `records` generated patients and the change-log triggers.
    pub async fn create(
        dir: &Path,
        name: &str,
        extractor: PathBuf,
        records: u64,
        seed: u64,
    ) -> anyhow::Result<Firebird> {
        let path = format!("{FIREBIRD_DIR}/{name}.fdb");
        let config = dir.join("infoclinica-extractor.toml");
        std::fs::write(&config, extractor_config(&path))?;
        let firebird = Firebird {
            target: FbTarget { path },
            config,
            extractor,
            changes: Changes::default(),
        };
        let count = records.to_string();
        let seed = seed.to_string();
        firebird
            .run_extractor(&["create-sample-db", "--count", &count, "--seed", &seed])
            .await
            .context("creating the Firebird sample (deploy/local-services.sh starts Firebird)")?;
        Ok(firebird)
    }

    async fn run_extractor(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&self.extractor)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("ETL__LOG__LEVEL", "warn")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "infoclinica-extractor {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// One random change as hospital users make them: new generated
    /// patients inserted, or a few random rows updated (phone, sometimes
    /// the passport number) or deleted, in one transaction.
    pub async fn change(&mut self, rng: &mut ChaCha8Rng, records: u64) -> anyhow::Result<()> {
        let span = rng.random_range(1..=(records / 100).max(1));
        match rng.random_range(0..10) {
            0..=2 => {
                let inserts = span.to_string();
                self.run_extractor(&[
                    "sample-changes",
                    "--updates",
                    "0",
                    "--deletes",
                    "0",
                    "--inserts",
                    &inserts,
                ])
                .await?;
                self.changes.added += span;
            }
            kind => {
                let delete = kind >= 7;
                let picks: Vec<(u64, u64)> = (0..span)
                    .map(|_| {
                        (
                            rng.random_range(0..u64::MAX),
                            rng.random_range(0..10_000_000),
                        )
                    })
                    .collect();
                let target = self.target.clone();
                let touched =
                    tokio::task::spawn_blocking(move || target.update_or_delete(&picks, delete))
                        .await??;
                if delete {
                    self.changes.removed += touched;
                } else {
                    self.changes.changed += touched;
                }
            }
        }
        Ok(())
    }

    /// The PCODEs the table holds now.
    pub async fn keys(&self) -> anyhow::Result<BTreeSet<String>> {
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || target.keys()).await?
    }
}

impl Drop for Firebird {
    /// Drops the database on a thread, waiting 30 s at most (the client
    /// has no timeouts).
    fn drop(&mut self) {
        let target = self.target.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(conn) = target.connect() {
                let _ = conn.drop_database();
            }
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(Duration::from_secs(30));
    }
}

/// The extractor's configuration for the sample database at `path`; the
/// NATS address, stream and buckets come by environment.
fn extractor_config(path: &str) -> String {
    format!(
        r#"[extractor]
delta_interval = "1s"
connect_timeout = "5s"
query_timeout = "30s"

[extractor.retry]
initial = "200ms"
max = "2s"

[[databases]]
name = "main"
host = "127.0.0.1"
port = 3050
database = "{path}"
user = "{FIREBIRD_USER}"
password = "{FIREBIRD_PASSWORD}"
charset = "WIN1251"
sync = "changelog"
business_units = {{ "1" = "main", "3" = "branch-1", "7" = "branch-7" }}

[databases.table]
snils = "SNILS"
oms_policy = "POLIS"
"#
    )
}
