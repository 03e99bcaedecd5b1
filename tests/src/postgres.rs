//! A throwaway PostgreSQL cluster of one test's own, for tests that stop the
//! server (stopping the shared one would break every other test), and for
//! the benchmarks, which measure on a server with the deployment's
//! recommended settings (the shared one has the package's defaults).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etl_runtime::database::DatabaseSettings;

pub struct TempCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// Further `-c name=value` options of the server.
    options: String,
    /// Whether the server syncs its writes to disk (`fsync`): off for
    /// tests, which throw the cluster away; on for benchmarks, which
    /// measure what a production server does.
    durable: bool,
}

/// The PostgreSQL settings the deployment recommends
/// (`deploy/postgres/tuning.conf`), as `name=value` pairs.
pub fn recommended_settings() -> Vec<(String, String)> {
    parse_settings(include_str!("../../deploy/postgres/tuning.conf"))
}

/// `name = value` lines of a postgresql.conf; comments and blank lines
/// skipped.
fn parse_settings(conf: &str) -> Vec<(String, String)> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once('=').expect("a `name = value` line");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// The server a benchmark measures on: unless `BENCH_PG=shared`, a cluster
/// of its own with the deployment's recommended settings
/// ([`TempCluster::start_recommended`]), which [`crate::local_postgres`]
/// then names for the rest of the process; keep it alive until the end.
/// With `BENCH_PG=shared`, the shared local server as it is.
pub fn benchmark_server() -> Option<TempCluster> {
    if std::env::var("BENCH_PG").as_deref() == Ok("shared") {
        println!("PostgreSQL: the shared local server, its own settings");
        return None;
    }
    let cluster = TempCluster::start_recommended();
    crate::use_postgres(cluster.port());
    let settings: Vec<String> = recommended_settings()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    println!(
        "PostgreSQL: a cluster of the benchmark's own on port {}, fsync on, {} (deploy/postgres/tuning.conf)",
        cluster.port(),
        settings.join(", ")
    );
    Some(cluster)
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with pg_ctl")
}

/// Runs a server binary as `postgres` when we are root (initdb refuses root).
fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin).args(args);
        cmd
    } else {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        cmd
    }
}

/// Runs a server binary as `postgres` and fails the test if it fails.
fn run_as_postgres(bin: &Path, args: &[&str]) {
    let out = as_postgres(bin, args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TempCluster {
    /// initdb + start on a free port, trust auth on 127.0.0.1.
    pub fn start() -> TempCluster {
        let cluster = Self::init();
        cluster.start_server();
        cluster
    }

    /// As [`Self::start`], durable (`fsync` on) and with the deployment's
    /// recommended settings ([`recommended_settings`]): what benchmarks
    /// measure on.
    pub fn start_recommended() -> TempCluster {
        let mut cluster = Self::init();
        cluster.durable = true;
        for (name, value) in recommended_settings() {
            cluster.options += &format!(" -c {name}={value}");
        }
        cluster.start_server();
        cluster
    }

    /// As [`Self::start`], with TLS on (`ssl = on`) and `server` as the
    /// server's certificate; plain connections are still accepted unless
    /// `hba_file` (a `pg_hba.conf` to use instead of initdb's) says so.
    pub fn start_with_tls(server: &crate::tls::CertFiles, hba_file: Option<&Path>) -> TempCluster {
        let mut cluster = Self::init();
        let mut files = vec![
            (server.cert.as_path(), "server.crt"),
            (server.key.as_path(), "server.key"),
        ];
        if let Some(hba) = hba_file {
            files.push((hba, "given_hba.conf"));
        }
        // The server reads its key only if the key is its user's and no one
        // else's.
        for (from, name) in files {
            let to = cluster.data().join(name);
            std::fs::copy(from, &to).expect("copy the server certificate");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if nix::unistd::Uid::effective().is_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .unwrap();
                assert!(status.success(), "chown {name}");
            }
        }
        cluster.options = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        if hba_file.is_some() {
            let hba = cluster.data().join("given_hba.conf");
            cluster.options += &format!(" -c hba_file={}", hba.display());
        }
        cluster.start_server();
        cluster
    }

    fn init() -> TempCluster {
        let dir = postgres_owned_dir("etl-pg-");
        let bin = pg_bin();
        let data = dir.path().join("data");
        run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        TempCluster {
            dir,
            port: free_port(),
            bin,
            options: String::new(),
            durable: false,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A streaming standby of this (running) server: a base backup taken
    /// with `pg_basebackup -R` (which writes `standby.signal` and the
    /// primary's connection), started on a port of its own. Make it
    /// synchronous with [`Self::wait_synchronous_standby`].
    pub fn start_standby(&self) -> TempCluster {
        let dir = postgres_owned_dir("etl-pg-standby-");
        let data = dir.path().join("data");
        run_as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                // Not a spread checkpoint (minutes on an idle server).
                "--checkpoint=fast",
            ],
        );
        let standby = TempCluster {
            dir,
            port: free_port(),
            bin: self.bin.clone(),
            options: self.options.clone(),
            durable: self.durable,
        };
        standby.start_server();
        standby
    }

    /// Makes every commit on this primary wait until a standby has it
    /// (`synchronous_standby_names = '*'`), and waits until one is
    /// streaming synchronously: a commit acknowledged here then survives
    /// the loss of this server.
    pub async fn wait_synchronous_standby(&self) {
        use sqlx::Connection;
        let mut conn =
            sqlx::PgConnection::connect_with(&self.server().with_db().database("postgres"))
                .await
                .expect("connect to the primary");
        for sql in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
        let start = std::time::Instant::now();
        loop {
            let sync: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if sync > 0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no synchronous standby after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Promotes this standby to a primary (`pg_ctl promote`), waiting until
    /// it accepts writes.
    pub fn promote(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        );
    }

    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} {}",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" },
            self.options,
        );
        let log = self.dir.path().join("server.log");
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server at once, as a crash or a power cut would.
    pub fn stop_server(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// The directory of the server's Unix socket (`host` for a local
    /// connection).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server(&self) -> DatabaseSettings {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            username: "postgres".into(),
            acquire_timeout: Duration::from_secs(2),
            // The cluster's superuser owns the schema: services started on
            // it migrate it, as on the shared test server.
            migrate: true,
            ..Default::default()
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        )
        .output();
    }
}

/// A temporary directory the `postgres` user may write (initdb and
/// pg_basebackup run as that user when the tests run as root).
fn postgres_owned_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    if nix::unistd::Uid::effective().is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", dir.path().display());
    }
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recommended_settings_are_read_from_the_deployment_file() {
        let settings = super::recommended_settings();
        let names: Vec<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["shared_buffers", "max_wal_size", "checkpoint_timeout"]
        );
        assert!(settings
            .iter()
            .all(|(_, v)| !v.is_empty() && !v.contains(' ')));
    }
}
