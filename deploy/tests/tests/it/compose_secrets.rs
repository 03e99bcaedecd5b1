//! Compose refuses to start with the example passwords of deploy/.env.example:
//! its first one-shot service runs deploy/check-secrets.sh, which this test
//! runs the same way (`sh`, the passwords in the environment), and every
//! other service waits for it.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use deploy_tests::deploy_dir;

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `NAME=value` lines of deploy/.env.example.
fn example_env() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn check(env: &BTreeMap<String, String>) -> Output {
    Command::new("sh")
        .arg(deploy_dir().join("check-secrets.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("sh runs")
}

/// The lines of the service `name` in docker-compose.yml (to the next
/// service or top-level key).
fn service_block(compose: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| *l != header);
    let first = lines.next().unwrap_or_else(|| panic!("service {name}"));
    let body = lines.take_while(|l| {
        let indent = l.len() - l.trim_start().len();
        l.trim().is_empty() || l.trim_start().starts_with('#') || indent > 2
    });
    std::iter::once(first)
        .chain(body)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_passwords_are_refused() {
    let example = example_env();
    let passwords: Vec<&String> = example
        .keys()
        .filter(|k| k.ends_with("_PASSWORD"))
        .collect();
    assert!(passwords.len() >= 10, "{passwords:?}");

    let out = check(&example);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the example values were accepted");
    for name in &passwords {
        assert!(stderr.contains(name.as_str()), "{name} not named: {stderr}");
        assert!(
            !stderr.contains(&example[*name]),
            "a value printed: {stderr}"
        );
    }

    // One left as it was: still refused, and only it is named.
    let mut real: BTreeMap<String, String> = example
        .keys()
        .map(|k| (k.clone(), format!("{k}-Q7v1xL0pR3")))
        .collect();
    let out = check(&real);
    assert!(
        out.status.success(),
        "real passwords refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    real.insert(
        "NATS_LOADER_PASSWORD".into(),
        "change-me-nats-loader".into(),
    );
    let out = check(&real);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("NATS_LOADER_PASSWORD") && !stderr.contains("POSTGRES_PASSWORD"),
        "{stderr}"
    );
}

#[test]
fn compose_runs_the_check_first_with_every_password() {
    let compose = read("docker-compose.yml");
    let check = service_block(&compose, "check-secrets");
    assert!(
        check.contains("./check-secrets.sh:/deploy/check-secrets.sh:ro")
            && check.contains(r#"command: ["sh", "/deploy/check-secrets.sh"]"#),
        "{check}"
    );
    for name in example_env().keys().filter(|k| k.ends_with("_PASSWORD")) {
        assert!(
            check.contains(&format!("{name}: ${{{name}:?")),
            "check-secrets does not get {name}"
        );
    }
    // The two servers wait for it; everything else waits for them.
    for server in ["nats", "postgres"] {
        let block = service_block(&compose, server);
        assert!(
            block.contains("check-secrets:\n        condition: service_completed_successfully"),
            "{server} does not wait for check-secrets:\n{block}"
        );
    }
}
