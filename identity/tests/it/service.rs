//! The `identity` binary as deployed: settings from the environment, its
//! operations endpoint (`/readyz`, `/metrics`), HTTPS on the API, SIGTERM.

use std::time::Duration;

use testkit::ChildProcess;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_https_reports_ready_and_stops_on_sigterm() {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
    let key = identity::clients::add(&pool, "ops", &["ids:read".to_string()])
        .await
        .unwrap();
    let ca = testkit::tls::TestCa::new("identity test CA");
    let cert = ca.server("identity", &["127.0.0.1"]);
    let (api, ops) = (free_port(), free_port());
    let env: Vec<(String, String)> = [
        ("ETL__DATABASE__HOST", db.host.clone()),
        ("ETL__DATABASE__PORT", db.port.to_string()),
        ("ETL__DATABASE__USERNAME", db.username.clone()),
        ("ETL__DATABASE__DATABASE_NAME", db.database_name.clone()),
        ("ETL__API__LISTEN", format!("127.0.0.1:{api}")),
        ("ETL__API__TLS_CERT_FILE", cert.cert.display().to_string()),
        ("ETL__API__TLS_KEY_FILE", cert.key.display().to_string()),
        ("ETL__HTTP__LISTEN", format!("127.0.0.1:{ops}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut child = ChildProcess::spawn(env!("CARGO_BIN_EXE_identity"), &[], &env);
    let ops_addr: std::net::SocketAddr = format!("127.0.0.1:{ops}").parse().unwrap();
    testkit::wait_ready(ops_addr, 200, "database", true).await;

    let https = etl_runtime::tls::http_client(Some(&ca.ca_file()))
        .unwrap()
        .build()
        .unwrap();
    let r = https
        .get(format!("https://127.0.0.1:{api}/v1/review-items"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port gets nothing.
    let plain = etl_runtime::tls::http_client(None)
        .unwrap()
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{api}/v1/review-items"))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status() != 200);
    testkit::wait_for_metric(
        ops_addr,
        "identity_request_seconds",
        Duration::from_secs(10),
    )
    .await;

    let status = child.terminate(Duration::from_secs(30)).expect("stopped");
    assert!(status.success(), "{status:?}\n{}", child.logs());
    let logs = child.logs();
    assert!(!logs.contains(&key), "the key is in the logs");
}

/// `identity --check-config`: the settings and PostgreSQL with its schema,
/// one line each; status 0 when both pass, 1 for a database that is not
/// there or a misspelled setting.
#[test]
fn check_config_reaches_postgresql_and_refuses_a_typo() {
    let db = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = testkit::fresh_database().await;
        let pool = testkit::pool(&db).await;
        etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
        db
    });
    let env = [
        ("ETL__DATABASE__HOST", db.host.clone()),
        ("ETL__DATABASE__PORT", db.port.to_string()),
        ("ETL__DATABASE__USERNAME", db.username.clone()),
        ("ETL__DATABASE__DATABASE_NAME", db.database_name.clone()),
    ];
    let run = |extra: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity"))
            .arg("--check-config")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), out)
    };
    let (status, out) = run(&[]);
    assert_eq!(status, Some(0), "{out}");
    assert!(
        out.contains("ok    settings") && out.contains("ok    postgresql"),
        "{out}"
    );

    let (status, out) = run(&[("ETL__DATABASE__DATABASE_NAME", "no_such_db_identity")]);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("FAIL  postgresql"), "{out}");

    let (status, out) = run(&[("ETL__API__LISTN", "127.0.0.1:1")]);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("listn") && out.contains("api"), "{out}");
}
