//! The binary against a configuration that cannot work: `--check-config`
//! names what is wrong, a one-shot run stops at a permanent error instead
//! of retrying, a misspelled setting stops it at start.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// The extractor binary run to its end: exit status, stdout, stderr.
fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infoclinica-extractor"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run the extractor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `good` with `from` replaced by `to`, written beside it.
fn variant(good: &Path, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(good).unwrap();
    assert!(text.contains(from), "{from} in the config");
    let path = good.with_file_name(name);
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_and_permanent_errors_of_one_shot_runs() {
    let fb = FbDatabase::create(50, true);
    let fx = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let good = fx.config_file(dir.path(), &fb, 3050);

    let (status, out, err) = run(&good, &["--check-config"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("ok    nats"), "{out}");
    assert!(
        out.contains("ok    database branch") && out.contains("table CLIENTS, 16 mapped columns"),
        "{out}"
    );
    assert!(out.contains("change log ETL_CLIENTS_LOG"), "{out}");

    // A mapped column the table lacks: the check names it, and a one-shot
    // initial load stops at once with it instead of retrying.
    let no_column = variant(&good, "no-column.toml", "\"SNILS\"", "\"NO_SUCH_SNILS\"");
    let (status, out, _) = run(&no_column, &["--check-config"]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("FAIL  database branch") && out.contains("has no column(s) NO_SUCH_SNILS"),
        "{out}"
    );
    let started = Instant::now();
    let (status, _, err) = run(&no_column, &["--initial-load"]);
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains("NO_SUCH_SNILS") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at once"
    );

    // A wrong password: the check fails, a one-shot delta pass stops.
    let wrong = variant(&good, "wrong.toml", "\"etl_test\"", "\"wrong-password\"");
    let (status, out, _) = run(&wrong, &["--check-config"]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("refused the login"), "{out}");
    let started = Instant::now();
    let (status, _, err) = run(&wrong, &["--delta-sync"]);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("refused the login"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at once"
    );
    for text in [&out, &err] {
        assert!(!text.contains("wrong-password"), "{text}");
    }

    // A misspelled setting: named, nothing started.
    let typo = variant(&good, "typo.toml", "page_size = 100", "page_sise = 100");
    let (status, out, _) = run(&typo, &["--check-config"]);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("FAIL  settings") && out.contains("`extractor.page_sise`"),
        "{out}"
    );
    let (status, _, err) = run(&typo, &["--initial-load"]);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("`extractor.page_sise`"), "{err}");
    fx.finish().await;
}
