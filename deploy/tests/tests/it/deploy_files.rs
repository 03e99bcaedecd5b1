//! The deployment files pass their tools' own validation where the tools are
//! installed (each test prints SKIPPED and why where not), and agree with the
//! workspace: every binary is in the image, every unit starts one of them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use deploy_tests::{deploy_dir, tool_available};

const UNITS: [&str; 6] = [
    "etl-loader@.service",
    "etl-matcher.service",
    "etl-identity.service",
    "etl-qms-extractor.service",
    "etl-infoclinica-extractor.service",
    "etl.target",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[[bin]] name = "..."` of every workspace member.
fn workspace_binaries() -> BTreeSet<String> {
    let root = deploy_dir().parent().unwrap().to_path_buf();
    let workspace = read(&root.join("Cargo.toml"));
    let members = workspace
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("members list");
    let mut bins = BTreeSet::new();
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        // The test-support crate's binary (the chaos harness) is not shipped.
        if member.is_empty() || member == "tests" {
            continue;
        }
        let manifest = read(&root.join(member).join("Cargo.toml"));
        for section in manifest.split("[[bin]]").skip(1) {
            let name = section
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .expect("bin name");
            bins.insert(name.trim_matches('"').to_string());
        }
    }
    bins
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    for unit in UNITS {
        let text = read(&deploy_dir().join("systemd").join(unit));
        if unit.ends_with(".service") {
            for wanted in [
                "Type=notify",
                "WatchdogSec=",
                "Restart=on-failure",
                "RestartSec=",
                "TimeoutStopSec=",
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "ProtectHome=yes",
                "PrivateTmp=yes",
                "User=etl",
                "EnvironmentFile=/etc/etl/",
                "WantedBy=etl.target",
                "PartOf=etl.target",
            ] {
                assert!(text.contains(wanted), "{unit} lacks {wanted}");
            }
        }
    }
    if !tool_available(
        "systemd-analyze",
        &["--version"],
        "systemd_units_pass_systemd_analyze_verify",
    ) {
        return;
    }
    // verify also checks that ExecStart's program exists: a copy of each
    // unit whose program is /bin/true (the arguments stay).
    let dir = tempfile::tempdir().unwrap();
    let bins = workspace_binaries();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = read(&deploy_dir().join("systemd").join(unit));
        let mut copy = String::new();
        for line in text.lines() {
            match line.strip_prefix("ExecStart=/usr/local/bin/") {
                Some(rest) => {
                    let program = rest.split_whitespace().next().unwrap();
                    assert!(
                        bins.contains(program),
                        "{unit} starts {program}, not a workspace binary"
                    );
                    copy.push_str(&line.replacen(
                        &format!("/usr/local/bin/{program}"),
                        "/bin/true",
                        1,
                    ));
                }
                None => copy.push_str(line),
            }
            copy.push('\n');
        }
        std::fs::write(dir.path().join(unit), copy).unwrap();
        paths.push(dir.path().join(unit));
    }
    // The template is verified as an instance too.
    std::fs::copy(
        dir.path().join("etl-loader@.service"),
        dir.path().join("etl-loader@2.service"),
    )
    .unwrap();
    paths.push(dir.path().join("etl-loader@2.service"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It reports unknown keys and bad values as warnings with exit status 0:
    // any line about our units fails the test.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            UNITS
                .iter()
                .any(|u| l.contains(u.trim_end_matches(".service").trim_end_matches('@')))
        })
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    eprintln!("systemd-analyze verify passed for {} units", paths.len());
}

/// `docker compose` (v2 plugin) or `docker-compose` (v1), whichever works.
fn compose() -> Option<Vec<&'static str>> {
    let test = "compose_file_passes_compose_config";
    if Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(vec!["docker", "compose"]);
    }
    eprintln!("docker compose plugin missing; trying docker-compose");
    tool_available("docker-compose", &["version"], test).then(|| vec!["docker-compose"])
}

#[test]
fn compose_file_passes_compose_config() {
    let text = read(&deploy_dir().join("docker-compose.yml"));
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("container_name:")),
        "a fixed container name prevents --scale loader=3"
    );
    let Some(compose) = compose() else { return };
    let run = |env_file: Option<&str>, args: &[&str]| {
        let mut command = Command::new(compose[0]);
        command.args(&compose[1..]);
        if let Some(file) = env_file {
            command.args(["--env-file", file]);
        }
        command
            .args(["-f", "docker-compose.yml"])
            .args(args)
            .current_dir(deploy_dir())
            // Only what the test gives: no password from the caller's shell.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap()
    };
    let out = run(Some(".env.example"), &["config", "-q"]);
    assert!(
        out.status.success(),
        "compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(
        Some(".env.example"),
        &["--profile", "demo", "config", "--services"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for service in [
        "nats",
        "postgres",
        "qms-sim",
        "qms-extractor",
        "infoclinica-extractor",
        "matcher",
        "identity",
        "loader",
    ] {
        assert!(
            services.contains(service),
            "service {service} missing: {services:?}"
        );
    }

    // The loader publishes no host port (replicas would collide).
    let out = run(Some(".env.example"), &["config"]);
    let config = String::from_utf8_lossy(&out.stdout);
    let loader_section: String = config
        .split("\n  loader:\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !loader_section.is_empty(),
        "loader in compose config:\n{config}"
    );
    assert!(
        !loader_section.contains("ports:"),
        "loader publishes a port:\n{loader_section}"
    );
    assert!(
        loader_section.contains("/readyz"),
        "loader healthcheck:\n{loader_section}"
    );

    // Without the passwords, compose refuses instead of starting open services.
    let out = run(None, &["config", "-q"]);
    assert!(
        !out.status.success(),
        "compose config must require the passwords"
    );
    eprintln!("compose config passed with {}", compose.join(" "));
}

/// The compose file's PostgreSQL runs with `postgres/tuning.conf`: the
/// entrypoint's substitution, run on that file, gives exactly its settings
/// as `-c name=value` options.
#[test]
fn compose_postgres_runs_with_the_recommended_settings() {
    let text = read(&deploy_dir().join("docker-compose.yml"));
    assert!(text.contains("./postgres/tuning.conf:/etc/postgresql/tuning.conf:ro"));
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("$$(") && l.ends_with("/etc/postgresql/tuning.conf)"))
        .expect("the entrypoint's substitution of tuning.conf");
    // Compose turns `$$` into `$`; the shell runs what is inside `$(…)`.
    let inner = &line["$$(".len()..line.len() - 1];
    let conf = deploy_dir().join("postgres/tuning.conf");
    let script = inner.replace("/etc/postgresql/tuning.conf", &conf.display().to_string());
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let wanted: Vec<String> = testkit::postgres::recommended_settings()
        .into_iter()
        .flat_map(|(name, value)| ["-c".to_string(), format!("{name}={value}")])
        .collect();
    assert!(!wanted.is_empty());
    assert_eq!(got, wanted);
}

#[test]
fn dockerfile_builds_every_binary() {
    let dockerfile = read(&deploy_dir().join("Dockerfile"));
    for bin in workspace_binaries() {
        assert!(
            dockerfile.contains(&format!("--bin {bin}")),
            "Dockerfile does not build {bin}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "Dockerfile does not copy {bin}"
        );
    }
    assert!(
        dockerfile.contains("\nUSER etl"),
        "the image runs as a non-root user"
    );
    // The image cannot be built here (no registry for the base images);
    // hadolint, where installed, lints it.
    if tool_available(
        "hadolint",
        &["--version"],
        "dockerfile_builds_every_binary (hadolint)",
    ) {
        let out = Command::new("hadolint")
            .arg(deploy_dir().join("Dockerfile"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hadolint:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The example configurations load into the services' settings (unknown
/// keys are refused), and say what the defaults are (traces off, the
/// shutdown deadline, readiness check limit).
#[test]
fn example_configurations_load_with_the_defaults() {
    let config = |name: &str| deploy_dir().join("config").join(name);
    let loader: loader::Settings =
        etl_runtime::settings::load(Some(&config("loader.toml"))).expect("loader.toml");
    let matcher: matcher::Settings =
        etl_runtime::settings::load(Some(&config("matcher.toml"))).expect("matcher.toml");
    let identity: identity::Settings =
        etl_runtime::settings::load(Some(&config("identity.toml"))).expect("identity.toml");
    let qms: qms_extractor::Settings =
        etl_runtime::settings::load(Some(&config("qms-extractor.toml")))
            .expect("qms-extractor.toml");
    let infoclinica: infoclinica_extractor::Settings =
        etl_runtime::settings::load(Some(&config("infoclinica-extractor.toml")))
            .expect("infoclinica-extractor.toml");
    infoclinica.validate().expect("infoclinica-extractor.toml");
    same_decisions(&matcher.matcher, &identity.matcher);
    let defaults = etl_runtime::telemetry::TelemetrySettings::default();
    for (name, telemetry, shutdown, http) in [
        ("loader", &loader.telemetry, &loader.shutdown, &loader.http),
        (
            "matcher",
            &matcher.telemetry,
            &matcher.shutdown,
            &matcher.http,
        ),
        (
            "identity",
            &identity.telemetry,
            &identity.shutdown,
            &identity.http,
        ),
        ("qms-extractor", &qms.telemetry, &qms.shutdown, &qms.http),
    ] {
        assert_eq!(
            telemetry.otlp_endpoint, None,
            "{name}: traces off by default"
        );
        assert_eq!(telemetry.sample_ratio, defaults.sample_ratio, "{name}");
        assert_eq!(telemetry.export_timeout, defaults.export_timeout, "{name}");
        assert_eq!(
            shutdown.deadline,
            etl_runtime::shutdown::ShutdownSettings::default().deadline,
            "{name}"
        );
        assert_eq!(
            http.check_timeout,
            etl_runtime::observe::HttpSettings::default().check_timeout,
            "{name}"
        );
    }
}

/// `$match` ranks and decides pairs as the matcher does only with the same
/// settings of a pair's decision: identity.toml's `[matcher]` must say
/// what matcher.toml says (a threshold changed in one file only would make
/// the identity service call "certain" what the matcher sends to review).
fn same_decisions(
    matcher: &matcher::settings::MatcherSettings,
    identity: &matcher::settings::MatcherSettings,
) {
    let differs =
        |what: &str| format!("identity.toml [matcher] {what} differs from matcher.toml's");
    assert_eq!(matcher.scoring, identity.scoring, "{}", differs("scoring"));
    assert_eq!(
        matcher.max_block_size,
        identity.max_block_size,
        "{}",
        differs("max_block_size")
    );
    assert_eq!(matcher.model, identity.model, "{}", differs("[model]"));
    assert_eq!(
        format!("{:?}", matcher.weights),
        format!("{:?}", identity.weights),
        "{}",
        differs("[weights]")
    );
}
