//! The processes under test: started, killed with SIGKILL, restarted, and
//! watched for exits nobody asked for (the harness restarts those too, as
//! systemd's `Restart=on-failure` would, and reports them).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long after an exit of its own a process is started again.
const RESTART_AFTER_EXIT: Duration = Duration::from_secs(1);

/// One service process and what happened to it.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Its stderr (logs) across every start, appended.
    pub log: PathBuf,
    child: Option<Child>,
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
    restart_at: Option<Instant>,
    pub starts: u32,
    pub kills: u32,
    /// Exits nobody asked for: the status and the last error line logged.
    pub exits: Vec<String>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Proc {
    /// A process of `program` with `env` (plus its metrics address), not
    /// started yet; its log goes to `<dir>/<name>.log`.
    pub fn new(
        name: &str,
        program: PathBuf,
        args: &[&str],
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Proc {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut env = env;
        env.push(("ETL__HTTP__LISTEN".into(), metrics.to_string()));
        Proc {
            name: name.into(),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            metrics,
            restart_at: None,
            starts: 0,
            kills: 0,
            exits: Vec::new(),
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("log of {}", self.name))?;
        writeln!(log, "=== chaos: start {} of {}", self.starts, self.name)?;
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        // Settings come only from the harness, never from the caller's shell.
        for (key, _) in std::env::vars() {
            if key.starts_with("ETL_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let child = command
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        self.restart_at = None;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL; started again after `restart_after`.
    pub fn kill(&mut self, restart_after: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
            self.restart_at = Some(Instant::now() + restart_after);
        }
    }

    /// Notices an exit of its own and (re)starts the process when due.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let why = format!("{status}; last error: {}", self.last_error());
                self.exits.push(why);
                self.restart_at = Some(Instant::now() + RESTART_AFTER_EXIT);
            }
        }
        if self.child.is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.start()?;
        }
        Ok(())
    }

    /// Starts the process now if it is down (the chaos is over).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.tick()?;
        if self.child.is_none() {
            self.start()?;
        }
        Ok(())
    }

    /// SIGTERM, then the exit status within `timeout` (SIGKILL after it).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::terminate_child(self.child.take()?, timeout)
    }

    /// Waits for the process to exit by itself (a one-shot run).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The last line of the log at level ERROR (the services log no
    /// personal data), without colour codes.
    pub fn last_error(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(strip_ansi)
            .rfind(|l| l.contains("ERROR") || l.starts_with("Error:"))
            .unwrap_or_else(|| "(none logged)".into())
    }

    /// A counter or histogram count on its `/metrics` page (0 when the
    /// line is missing); none when the process does not answer.
    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let Some((200, page)) = crate::http_get(self.metrics, "/metrics").await else {
            return None;
        };
        Some(
            page.lines()
                .find_map(|l| l.strip_prefix(line_prefix))
                .and_then(|rest| rest.trim().parse().ok())
                .unwrap_or(0.0),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
