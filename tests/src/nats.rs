//! A throwaway NATS server with JetStream of one test's own, for tests that
//! stop or kill the server (the shared one serves every other test).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TempNats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl TempNats {
    /// Starts `nats-server -js` on a free port with its store in a temp dir.
    pub fn start() -> TempNats {
        let dir = tempfile::Builder::new()
            .prefix("etl-nats-")
            .tempdir()
            .expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = TempNats {
            dir,
            port,
            child: None,
        };
        nats.start_server();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start_server(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
