//! deploy/monitoring: the Prometheus alert rules pass `promtool check
//! rules`, and the Grafana dashboard and the rules refer only to metrics the
//! code exports (names found in the sources' `counter!`/`gauge!`/
//! `histogram!` calls, plus the process and scrape metrics).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn monitoring() -> PathBuf {
    repo().join("deploy/monitoring")
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = monitoring().join("alerts.yml");
    let out = match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            // deploy/local-services.sh installs it (Debian's `prometheus`).
            eprintln!("SKIPPED alert_rules_pass_promtool: promtool not runnable ({e}); run deploy/local-services.sh");
            return;
        }
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules: {text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Metric names the code exports: the first string literal of every
/// `counter!(`, `gauge!(` and `histogram!(` in the crates' sources
/// (histograms also as `_bucket`, `_sum`, `_count`), and what Prometheus
/// itself adds (`up`).
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::from(["up".to_string()]);
    let mut files = Vec::new();
    for dir in ["runtime", "loader", "matcher", "extractors", "cli"] {
        collect_rs(&repo().join(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let Some(end) = rest.find('"') else { continue };
                let name = rest[..end].to_string();
                if macro_name == "histogram!(" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                names.insert(name);
            }
        }
    }
    names
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                collect_rs(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, strings and `by (…)` groups that are not functions or
/// keywords.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "delta",
        "deriv",
        "time",
        "vector",
        "histogram_quantile",
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "absent",
        "offset",
        "bool",
        "le",
    ];
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => depth_brace += 1,
            '}' if !in_string => depth_brace -= 1,
            _ if in_string || depth_brace > 0 => {}
            _ => cleaned.push(c),
        }
        if c == '}' || c == '"' {
            cleaned.push(' ');
        }
    }
    // `by (a, b)`: label names, not metrics.
    let mut without_groups = String::new();
    let mut rest = cleaned.as_str();
    while let Some(at) = rest.find(" by (").or_else(|| rest.find("by (")) {
        without_groups.push_str(&rest[..at]);
        let close = rest[at..].find(')').map_or(rest.len(), |c| at + c + 1);
        rest = &rest[close..];
    }
    without_groups.push_str(rest);
    let mut names = BTreeSet::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in without_groups.split(|c: char| !ident(c)) {
        if token.is_empty()
            || token.chars().next().unwrap().is_ascii_digit()
            || NOT_METRICS.contains(&token)
            // Range and step durations: [15m:1m].
            || token.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<f64>().is_ok()
        {
            continue;
        }
        names.insert(token.to_string());
    }
    names
}

#[test]
fn dashboard_and_rules_use_only_exported_metrics() {
    let exported = exported();
    for name in [
        "matcher_backlog",
        "matcher_review_items_open",
        "etl_dead_letters_open",
        "etl_last_sync_timestamp_seconds",
        "etl_deletion_brake_held",
        "etl_build_info",
        "process_cpu_seconds_total",
    ] {
        assert!(
            exported.contains(name),
            "{name} not found in the code: {exported:?}"
        );
    }

    // The parse finds metric names and only them.
    let names = metrics_in(
        r#"time() - max by (source, database) (bogus_total{kind!="all"}[15m:1m]) > 3 * 3600"#,
    );
    assert_eq!(names, BTreeSet::from(["bogus_total".to_string()]));

    let path = monitoring().join("grafana/dashboards/etl-bus.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            exprs.push(expr.to_string());
        }
    }
    let mut seen = BTreeSet::new();
    for expr in &exprs {
        for name in metrics_in(expr) {
            assert!(
                exported.contains(&name),
                "{name} (in `{expr}`) is not exported by any service"
            );
            seen.insert(name);
        }
    }
    // The extractor's parse caught something: the watched metrics are in.
    for name in [
        "matcher_backlog",
        "etl_last_sync_timestamp_seconds",
        "etl_deletion_brake_held",
    ] {
        assert!(seen.contains(name), "{name} not used: {seen:?}");
    }
}
