//! TLS on every link, against real servers with certificates made by the
//! test (`testkit::tls`): PostgreSQL with `ssl = on`, nats-server with a
//! `tls { }` block (and client certificates), qMS over HTTPS (the simulator
//! behind an HTTPS front) and the OTLP collector over HTTPS. Each shows the
//! right certificate accepted and a wrong one (another CA, another host)
//! refused.

use std::path::Path;
use std::time::Duration;

use etl_runtime::database::{DatabaseSettings, SslMode};
use etl_runtime::nats::NatsSettings;
use sqlx::Connection as _;
use testkit::nats::TempNats;
use testkit::postgres::TempCluster;
use testkit::tls::{https_front, nats_tls_block, CertFiles, TestCa};

async fn connect_pg(settings: &DatabaseSettings) -> Result<sqlx::PgConnection, sqlx::Error> {
    sqlx::PgConnection::connect_with(&settings.with_db()).await
}

async fn uses_tls(settings: &DatabaseSettings) -> bool {
    let mut conn = connect_pg(settings).await.expect("connects");
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Refused by the certificate check (sqlx reports it as an I/O error), and
/// the services' value-free description of the error says so.
fn assert_refused(result: Result<sqlx::PgConnection, sqlx::Error>, what: &str) {
    match result {
        Err(error) => {
            let described = etl_runtime::database::describe(&error);
            assert!(
                described.starts_with("TLS: invalid peer certificate"),
                "{what}: refused, but not by the certificate check: {error}"
            );
            eprintln!("{what}: refused: {described}");
        }
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[tokio::test]
async fn postgres_accepts_its_certificate_and_refuses_a_wrong_one() {
    let ca = TestCa::new("etl test CA");
    let other = TestCa::new("another CA");
    // The certificate names 127.0.0.1, not `localhost`.
    let cluster = TempCluster::start_with_tls(&ca.server("postgres", &["127.0.0.1"]), None);
    let verified = DatabaseSettings {
        database_name: "postgres".into(),
        ssl_mode: SslMode::VerifyFull,
        ca_file: Some(ca.ca_file()),
        ..cluster.server()
    };
    assert!(uses_tls(&verified).await, "verify-full connects over TLS");

    let other_ca = DatabaseSettings {
        ca_file: Some(other.ca_file()),
        ..verified.clone()
    };
    assert_refused(connect_pg(&other_ca).await, "verify-full, another CA");
    let other_ca_required = DatabaseSettings {
        ssl_mode: SslMode::Require,
        ..other_ca.clone()
    };
    assert_refused(
        connect_pg(&other_ca_required).await,
        "require with a CA file (verify-ca), another CA",
    );

    let other_host = DatabaseSettings {
        host: "localhost".into(),
        ..verified.clone()
    };
    assert_refused(connect_pg(&other_host).await, "verify-full, another host");
    let other_host_chain_only = DatabaseSettings {
        ssl_mode: SslMode::VerifyCa,
        ..other_host
    };
    assert!(
        uses_tls(&other_host_chain_only).await,
        "verify-ca checks the chain, not the name"
    );

    let plain = DatabaseSettings {
        ssl_mode: SslMode::Disable,
        ca_file: None,
        ..verified.clone()
    };
    assert!(!uses_tls(&plain).await, "disable connects in plain text");
}

/// deploy/postgres/pg_hba.conf (compose's): over the network TLS and a
/// password, plain text refused.
#[tokio::test]
async fn the_shipped_pg_hba_refuses_plain_text() {
    let ca = TestCa::new("etl test CA");
    let hba = deploy_tests::deploy_dir().join("postgres/pg_hba.conf");
    let cluster = TempCluster::start_with_tls(&ca.server("postgres", &["127.0.0.1"]), Some(&hba));
    // The Unix socket (trust), as the image's init scripts use it.
    let local = sqlx::postgres::PgConnectOptions::new()
        .socket(cluster.socket_dir())
        .port(cluster.port())
        .username("postgres")
        .database("postgres");
    let mut conn = sqlx::PgConnection::connect_with(&local)
        .await
        .expect("the socket");
    sqlx::query("ALTER ROLE postgres PASSWORD 'pw-of-postgres'")
        .execute(&mut conn)
        .await
        .unwrap();

    let verified = DatabaseSettings {
        database_name: "postgres".into(),
        password: Some("pw-of-postgres".to_string().into()),
        ssl_mode: SslMode::VerifyFull,
        ca_file: Some(ca.ca_file()),
        ..cluster.server()
    };
    assert!(uses_tls(&verified).await, "TLS and the password: in");
    let plain = DatabaseSettings {
        ssl_mode: SslMode::Disable,
        ..verified.clone()
    };
    let error = connect_pg(&plain).await.expect_err("plain text refused");
    assert!(
        error.to_string().contains("no encryption"),
        "refused by pg_hba.conf: {error}"
    );
    let no_password = DatabaseSettings {
        password: None,
        ..verified
    };
    connect_pg(&no_password)
        .await
        .expect_err("no password refused");
}

/// A nats-server with JetStream and TLS (`server`'s certificate); with
/// `client_ca`, it requires client certificates signed by that CA.
fn nats_with_tls(server: &CertFiles, client_ca: Option<&Path>) -> TempNats {
    let tls = nats_tls_block(server, client_ca);
    TempNats::start_with_config(
        |dir| {
            let path = dir.join("nats-server.conf");
            let store = dir.join("jetstream");
            std::fs::write(
                &path,
                format!("jetstream {{ store_dir: \"{}\" }}\n{tls}", store.display()),
            )
            .unwrap();
            path
        },
        &[],
    )
}

/// Whether a service with `settings` gets connected (the services retry
/// the initial connection in the background, so a refusal shows as never
/// connecting).
async fn nats_connects(settings: &NatsSettings) -> bool {
    let client = settings.connect("tls-test").await.expect("settings valid");
    for _ in 0..30 {
        if client.connection_state() == async_nats::connection::State::Connected {
            client.flush().await.expect("flush over the connection");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn nats_verifies_the_server_and_the_client() {
    let ca = TestCa::new("etl test CA");
    let other = TestCa::new("another CA");
    let server = nats_with_tls(&ca.server("nats", &["127.0.0.1"]), None);
    let trusted = NatsSettings {
        url: server.url(),
        ca_file: Some(ca.ca_file()),
        ..Default::default()
    };
    assert!(nats_connects(&trusted).await, "the server's CA: connected");
    let tls_url = NatsSettings {
        url: server.url().replace("nats://", "tls://"),
        ..trusted.clone()
    };
    assert!(nats_connects(&tls_url).await, "a tls:// URL: connected");
    let other_ca = NatsSettings {
        ca_file: Some(other.ca_file()),
        ..trusted.clone()
    };
    assert!(!nats_connects(&other_ca).await, "another CA: refused");
    let system_roots = NatsSettings {
        ca_file: None,
        ..trusted.clone()
    };
    assert!(
        !nats_connects(&system_roots).await,
        "a private CA not in the system's store: refused"
    );

    let elsewhere = nats_with_tls(
        &ca.server("nats-elsewhere", &["nats.elsewhere.example"]),
        None,
    );
    let other_host = NatsSettings {
        url: elsewhere.url(),
        ..trusted.clone()
    };
    assert!(!nats_connects(&other_host).await, "another host: refused");

    let plain = TempNats::start();
    let tls_required = NatsSettings {
        url: plain.url(),
        require_tls: true,
        ..trusted.clone()
    };
    assert!(
        !nats_connects(&tls_required).await,
        "require_tls: a server without TLS refused"
    );
}

#[tokio::test]
async fn nats_client_certificates() {
    let ca = TestCa::new("etl test CA");
    let other = TestCa::new("another CA");
    let server = nats_with_tls(&ca.server("nats", &["127.0.0.1"]), Some(&ca.ca_file()));
    let without = NatsSettings {
        url: server.url(),
        ca_file: Some(ca.ca_file()),
        ..Default::default()
    };
    assert!(
        !nats_connects(&without).await,
        "no client certificate: refused"
    );
    let client = ca.client("loader", "loader");
    let with = NatsSettings {
        client_cert: Some(client.cert.clone()),
        client_key: Some(client.key.clone()),
        ..without.clone()
    };
    assert!(
        nats_connects(&with).await,
        "the CA's client certificate: connected"
    );
    let stranger = other.client("stranger", "loader");
    let with_other = NatsSettings {
        client_cert: Some(stranger.cert),
        client_key: Some(stranger.key),
        ..without.clone()
    };
    assert!(
        !nats_connects(&with_other).await,
        "another CA's client certificate: refused"
    );
    let half = NatsSettings {
        client_cert: Some(client.cert),
        ..without
    };
    let error = half.connect("tls-test").await.unwrap_err();
    assert!(error.to_string().contains("client_key"), "{error}");
}

#[tokio::test]
async fn the_shipped_nats_config_serves_tls() {
    let ca = TestCa::new("etl test CA");
    let other = TestCa::new("another CA");
    // Its `tls` block names nats.crt and nats.key in a directory.
    let server = ca.server("nats", &["127.0.0.1"]);
    let tls_dir = server.cert.parent().unwrap().to_path_buf();
    let env = [("NATS_LOADER_PASSWORD", "pw-loader")]
        .into_iter()
        .chain(
            [
                "NATS_QMS_EXTRACTOR_PASSWORD",
                "NATS_INFOCLINICA_EXTRACTOR_PASSWORD",
                "NATS_MATCHER_PASSWORD",
                "NATS_ETL_PASSWORD",
            ]
            .map(|var| (var, "unused")),
        )
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    let nats = TempNats::start_with_config(
        |dir| {
            let conf = deploy_tests::shipped_nats_conf(&dir.join("store"), Some(&tls_dir));
            std::fs::write(dir.join("nats-server.conf"), conf).unwrap();
            std::fs::copy(
                deploy_tests::deploy_dir().join("nats/users.conf"),
                dir.join("users.conf"),
            )
            .unwrap();
            dir.join("nats-server.conf")
        },
        &env,
    );
    let loader = NatsSettings {
        url: nats.url(),
        user: Some("loader".into()),
        password: Some("pw-loader".to_string().into()),
        ca_file: Some(ca.ca_file()),
        ..Default::default()
    };
    assert!(nats_connects(&loader).await, "{}", nats.log());
    let other_ca = NatsSettings {
        ca_file: Some(other.ca_file()),
        ..loader
    };
    assert!(!nats_connects(&other_ca).await, "another CA: refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qms_over_https_verifies_the_server() {
    let ca = TestCa::new("etl test CA");
    let other = TestCa::new("another CA");
    let sim = qms_sim::Simulator::new(qms_sim::Config {
        seed: 11,
        count: 30,
        ..Default::default()
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let (plain, _task) = sim
        .serve("127.0.0.1:0".parse().unwrap(), async move {
            stopped.cancelled().await
        })
        .await
        .unwrap();
    let good = https_front(plain, &ca.server("qms", &["127.0.0.1"])).await;
    let elsewhere = https_front(
        plain,
        &ca.server("qms-elsewhere", &["qms.elsewhere.example"]),
    )
    .await;

    let stream = testkit::unique_stream();
    let _js = testkit::jetstream(&stream).await;
    let mut settings = qms_extractor::Settings::default();
    settings.nats.url = testkit::nats_url();
    settings.stream = stream.clone();
    let q = &mut settings.qms;
    q.url = format!("https://{good}{}", qms_sim::EXPORT_PATH);
    q.ca_file = Some(ca.ca_file());
    q.connect_timeout = Duration::from_secs(2);
    q.read_timeout = Duration::from_secs(5);
    q.retries = 0;
    q.state.object_bucket = format!("{}_state", testkit::unique("qms"));
    q.rejects.stream = format!("{}_REJECTS", stream.name);
    q.rejects.subject = format!("{}_rejects.qms", stream.subject_prefix);
    q.rejects.max_age = Duration::from_secs(3600);

    let sync = |settings: qms_extractor::Settings| async move {
        let extractor = qms_extractor::Extractor::connect(settings)
            .await
            .expect("extractor connects");
        let shutdown = tokio_util::sync::CancellationToken::new();
        extractor
            .sync(qms_extractor::RunOptions::default(), &shutdown)
            .await
    };
    let report = sync(settings.clone()).await.expect("sync over HTTPS");
    assert_eq!(report.records, 30);

    let mut other_ca = settings.clone();
    other_ca.qms.ca_file = Some(other.ca_file());
    let error = sync(other_ca).await.expect_err("another CA refused");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    let mut other_host = settings.clone();
    other_host.qms.url = format!("https://{elsewhere}{}", qms_sim::EXPORT_PATH);
    let error = sync(other_host).await.expect_err("another host refused");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    stop.cancel();
}

/// Installs the process-wide subscriber: runs in a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_https() {
    if testkit::run_in_own_process("tls::traces_are_exported_over_https") {
        return;
    }
    let ca = TestCa::new("etl test CA");
    let collector = testkit::otlp::Collector::start().await;
    let plain = collector
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let front = https_front(plain, &ca.server("collector", &["127.0.0.1"])).await;
    let telemetry = etl_runtime::telemetry::init_with_traces(
        &etl_runtime::telemetry::LogSettings::default(),
        &etl_runtime::telemetry::TelemetrySettings {
            otlp_endpoint: Some(format!("https://{front}")),
            ca_file: Some(ca.ca_file()),
            ..Default::default()
        },
        "deploy-tests",
    )
    .expect("exporter set up");
    {
        // A target of an exported crate (only the bus's own spans go out).
        let span = tracing::info_span!(target: "etl_runtime::tls_test", "tls_probe");
        let _entered = span.enter();
    }
    telemetry.flush().await;
    testkit::wait_until(Duration::from_secs(10), "the span at the collector", || {
        let received = collector.spans().iter().any(|s| s.name == "tls_probe");
        async move { received }
    })
    .await;
    telemetry.shutdown(Duration::from_secs(2)).await;

    // The exporter's client (one subscriber per process: tried directly)
    // refuses a collector whose certificate another CA signed.
    let other = TestCa::new("another CA");
    let refused = tokio::task::spawn_blocking(move || {
        let client = etl_runtime::tls::blocking_http_client(Some(&other.ca_file()))
            .unwrap()
            .build()
            .unwrap();
        client
            .post(format!("https://{front}/v1/traces"))
            .send()
            .unwrap_err()
    })
    .await
    .unwrap();
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "{refused:?}"
    );
}
