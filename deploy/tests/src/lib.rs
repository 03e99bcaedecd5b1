//! Helpers of the deploy/ tests: where the deployment files are, and how a
//! test that needs an external tool reports that it skipped.

use std::path::PathBuf;
use std::process::Command;

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/tests is inside deploy/")
        .to_path_buf()
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
