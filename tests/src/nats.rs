//! A throwaway NATS server with JetStream of one test's own, for tests that
//! stop or kill the server (the shared one serves every other test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TempNats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// A configuration file (`-c`) and the server's environment, if any.
    config: Option<(PathBuf, Vec<(String, String)>)>,
    /// With a config: keep its monitoring (`http:`) instead of `-m 0`.
    monitoring: bool,
}

impl TempNats {
    /// Starts `nats-server -js` on a free port with its store in a temp dir.
    pub fn start() -> TempNats {
        let mut nats = Self::unstarted();
        nats.start_server();
        nats
    }

    /// Starts `nats-server -c <config>` with `env` (e.g. the passwords a
    /// config refers to as `$VARIABLE`) on a free port, its monitoring port
    /// off. `make_config` writes the config into the server's temp dir
    /// (given) and returns its path; the config must set a `jetstream {
    /// store_dir }` inside that dir. The server's log is [`log`](Self::log).
    pub fn start_with_config(
        make_config: impl FnOnce(&Path) -> PathBuf,
        env: &[(String, String)],
    ) -> TempNats {
        let mut nats = Self::unstarted();
        let config = make_config(nats.dir.path());
        nats.config = Some((config, env.to_vec()));
        nats.start_server();
        nats
    }

    /// Like [`start_with_config`](Self::start_with_config), with the
    /// monitoring the config sets (`http: <host>:<port>`) left on.
    pub fn start_with_config_and_monitoring(
        make_config: impl FnOnce(&Path) -> PathBuf,
        env: &[(String, String)],
    ) -> TempNats {
        let mut nats = Self::unstarted();
        let config = make_config(nats.dir.path());
        nats.config = Some((config, env.to_vec()));
        nats.monitoring = true;
        nats.start_server();
        nats
    }

    /// A free port and a temp dir; no server yet.
    fn unstarted() -> TempNats {
        let dir = tempfile::Builder::new()
            .prefix("etl-nats-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        TempNats {
            dir,
            port,
            child: None,
            config: None,
            monitoring: false,
        }
    }

    /// What a server started with a config logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start_server(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new(binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        match &self.config {
            None => {
                command.args(["-js", "-sd"]).arg(self.dir.path());
                command.stderr(Stdio::null());
            }
            Some((config, env)) => {
                command.arg("-c").arg(config);
                if !self.monitoring {
                    command.args(["-m", "0"]);
                }
                command.envs(env.iter().cloned());
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("nats-server.log"))
                    .expect("nats-server log");
                command.stderr(log);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 of the server.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn binary() -> String {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("nats-server")
    .to_string()
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.kill_server();
    }
}

/// A JetStream cluster of throwaway servers on loopback (`n1`, `n2`, …,
/// routes between all of them), for tests that kill a node.
pub struct TempNatsCluster {
    pub nodes: Vec<TempNats>,
}

impl TempNatsCluster {
    /// Starts `size` servers forming one JetStream cluster. JetStream
    /// answers once the servers have elected a meta leader (seconds):
    /// retry the first stream creation.
    pub fn start(size: usize) -> TempNatsCluster {
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cluster_port)| {
                TempNats::start_with_config(
                    |dir| {
                        let config = format!(
                            "server_name: \"n{}\"\n\
                             jetstream {{ store_dir: \"{}\" }}\n\
                             cluster {{\n  name: \"etl_test\"\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{}]\n}}\n",
                            i + 1,
                            dir.join("js").display(),
                            routes.join(", "),
                        );
                        let path = dir.join("nats-server.conf");
                        std::fs::write(&path, config).expect("write the node's config");
                        path
                    },
                    &[],
                )
            })
            .collect();
        TempNatsCluster { nodes }
    }

    /// Every node's client URL, comma-separated (a client's server list).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(TempNats::url).collect();
        urls.join(",")
    }

    /// The node named `server_name` (`n1`, `n2`, …).
    pub fn node(&mut self, server_name: &str) -> &mut TempNats {
        let i: usize = server_name
            .strip_prefix('n')
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=self.nodes.len()).contains(n))
            .unwrap_or_else(|| panic!("no node {server_name}"));
        &mut self.nodes[i - 1]
    }
}

/// A port nothing listens on now (on 127.0.0.1).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
