//! Helpers of the deploy/ tests: where the deployment files are, and how a
//! test that needs an external tool reports that it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/tests is inside deploy/")
        .to_path_buf()
}

/// deploy/nats/nats-server.conf for a server of a test's own: its store in
/// `store`, and its `tls { }` block's files (`nats.crt`, `nats.key`) in
/// `tls_dir`, or the block removed (`None`: a plain server, for tests of
/// something else than TLS).
pub fn shipped_nats_conf(store: &Path, tls_dir: Option<&Path>) -> String {
    let conf = std::fs::read_to_string(deploy_dir().join("nats/nats-server.conf")).unwrap();
    assert!(
        conf.contains("store_dir: /data\n"),
        "store_dir line changed"
    );
    let conf = conf.replace(
        "store_dir: /data\n",
        &format!("store_dir: \"{}\"\n", store.display()),
    );
    let start = conf.find("\ntls {\n").expect("a tls block") + 1;
    let end = start + conf[start..].find("\n}\n").expect("the tls block's end") + 3;
    match tls_dir {
        Some(dir) => {
            let block = conf[start..end].replace("/etc/nats/tls/", &format!("{}/", dir.display()));
            format!("{}{block}{}", &conf[..start], &conf[end..])
        }
        None => format!("{}{}", &conf[..start], &conf[end..]),
    }
}

/// Whether `program --version` runs; if not, prints why the calling test
/// skips (visible with `--nocapture` and in CI logs of failing runs).
pub fn tool_available(program: &str, args: &[&str], test: &str) -> bool {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "SKIPPED {test}: `{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {program} is not installed ({e})");
            false
        }
    }
}
