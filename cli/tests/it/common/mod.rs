//! The `etl` binary run as an operator would, pointed at a test's database
//! and stream (shared by the operator-command tests).

// Each test file uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;

/// Runs `etl args…`, whatever its outcome.
pub fn run(db: &DatabaseSettings, stream: &StreamSettings, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(args)
        .envs(testkit::service_env(db, stream))
        .output()
        .expect("run etl")
}

/// Runs `etl args…`, which must succeed; its standard output.
pub fn etl(db: &DatabaseSettings, stream: &StreamSettings, args: &[&str]) -> String {
    String::from_utf8(succeeded(run(db, stream, args), args).stdout).unwrap()
}

/// Runs `etl args…`, which must succeed; its standard error (progress).
pub fn etl_stderr(db: &DatabaseSettings, stream: &StreamSettings, args: &[&str]) -> String {
    String::from_utf8_lossy(&succeeded(run(db, stream, args), args).stderr).into_owned()
}

fn succeeded(out: Output, args: &[&str]) -> Output {
    assert!(
        out.status.success(),
        "etl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `etl args…` with `input` on its standard input, whatever its
/// outcome (passwords are read from there, never from the command line).
pub fn run_with_input(
    db: &DatabaseSettings,
    stream: &StreamSettings,
    args: &[&str],
    input: &str,
) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(args)
        .envs(testkit::service_env(db, stream))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run etl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("input written");
    drop(stdin);
    child.wait_with_output().expect("etl ends")
}
