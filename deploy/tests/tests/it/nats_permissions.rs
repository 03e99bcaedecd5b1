//! deploy/nats/nats-server.conf and users.conf loaded by a real nats-server
//! of the test's own: each service's user can do its job with the services'
//! default names, and nothing beyond it (no cross-source publish, no publish
//! by the loader, the matcher's person events only, no reading of another
//! user's replies).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use deploy_tests::deploy_dir;
use etl_runtime::checkpoint::Checkpoints;
use futures::StreamExt;
use proto::bus::StreamSettings;
use secrecy::SecretString;
use testkit::nats::TempNats;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const USERS: [(&str, &str); 5] = [
    ("qms-extractor", "NATS_QMS_EXTRACTOR_PASSWORD"),
    (
        "infoclinica-extractor",
        "NATS_INFOCLINICA_EXTRACTOR_PASSWORD",
    ),
    ("loader", "NATS_LOADER_PASSWORD"),
    ("matcher", "NATS_MATCHER_PASSWORD"),
    ("etl", "NATS_ETL_PASSWORD"),
];

fn password(user: &str) -> String {
    format!("pw-of-{user}")
}

/// The deployed configuration, with the store directory moved into the
/// server's temp dir (nats-server refuses `-sd` beside `store_dir`) and
/// without its TLS block.
fn start_server() -> TempNats {
    let env: Vec<(String, String)> = USERS
        .iter()
        .map(|(user, var)| (var.to_string(), password(user)))
        .collect();
    TempNats::start_with_config(
        |dir| {
            // TLS is tls.rs's subject: served here without it.
            let conf = deploy_tests::shipped_nats_conf(&dir.join("store"), None);
            std::fs::write(dir.join("nats-server.conf"), conf).unwrap();
            std::fs::copy(deploy_dir().join("nats/users.conf"), dir.join("users.conf")).unwrap();
            dir.join("nats-server.conf")
        },
        &env,
    )
}

/// A client logged in as `user` with its inboxes under `_INBOX.<user>` (as
/// `NatsSettings::connect` names them), and the server errors it is told
/// about (permission violations arrive this way, asynchronously).
async fn connect(
    nats: &TempNats,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password(user))
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .request_timeout(Some(Duration::from_secs(3)))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    (client, rx)
}

/// Waits for the server's permission error about publishing to `subject`.
async fn expect_violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    expect_error(errors, &format!("publish to \"{subject}\"")).await
}

/// Waits for the server's permission error about subscribing to `subject`.
async fn expect_refused_subscription(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    expect_error(errors, &format!("subscription to \"{subject}\"")).await
}

async fn expect_error(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let wanted = what.to_lowercase();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no permission violation for {what}");
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// The matcher creates its stream and publishes person events, and
/// nothing else: no record, no other stream.
#[tokio::test]
async fn matcher_publishes_person_events_only() {
    let nats = start_server();
    let (matcher, mut errors) = connect(&nats, "matcher").await;
    let js = jetstream::new(matcher.clone());
    let events = matcher::settings::EventsSettings::default();
    js.get_or_create_stream(matcher::events::stream_config(&events))
        .await
        .expect("the matcher may create its stream");
    js.publish("persons.created", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the matcher publishes persons.created");
    assert_eq!(stream_messages(&js, "PERSONS").await, 1);
    matcher
        .publish("patients.qms", "forged".into())
        .await
        .unwrap();
    expect_violation(&mut errors, "patients.qms").await;
}

#[tokio::test]
async fn extractor_publishes_only_its_source_and_loader_only_consumes() {
    let nats = start_server();
    let stream = StreamSettings::default();

    let (qms, mut qms_errors) = connect(&nats, "qms-extractor").await;
    let qms_js = jetstream::new(qms.clone());
    proto::bus::ensure_stream(&qms_js, &stream)
        .await
        .expect("the qms extractor may create the stream");
    qms_js
        .publish("patients.qms", "record".into())
        .await
        .unwrap()
        .await
        .expect("qms publishes patients.qms");
    qms.publish("patients.infoclinica", "record".into())
        .await
        .unwrap();
    expect_violation(&mut qms_errors, "patients.infoclinica").await;

    let (loader, mut loader_errors) = connect(&nats, "loader").await;
    loader
        .publish("patients.qms", "forged".into())
        .await
        .unwrap();
    expect_violation(&mut loader_errors, "patients.qms").await;

    // Each extractor writes its own sync-status keys only.
    let done = |kind| etl_runtime::sync_status::Sync {
        kind,
        published: 1,
        deleted: 0,
    };
    etl_runtime::sync_status::record_in(&qms_js, 1, "PATIENTS", "qms", None, done("sync")).await;
    let (infoclinica, mut infoclinica_errors) = connect(&nats, "infoclinica-extractor").await;
    let infoclinica_js = jetstream::new(infoclinica.clone());
    etl_runtime::sync_status::record_in(
        &infoclinica_js,
        1,
        "PATIENTS",
        "infoclinica",
        Some("main"),
        done("delta"),
    )
    .await;
    let forged = "$KV.etl_sync_status.qms.PATIENTS";
    infoclinica.publish(forged, "{}".into()).await.unwrap();
    expect_violation(&mut infoclinica_errors, forged).await;
    let forged = "$KV.etl_sync_status.infoclinica.main.PATIENTS";
    qms.publish(forged, "{}".into()).await.unwrap();
    expect_violation(&mut qms_errors, forged).await;
    let (etl, _) = connect(&nats, "etl").await;
    let status = etl_runtime::sync_status::of_stream(&jetstream::new(etl), "PATIENTS")
        .await
        .unwrap();
    let kinds: Vec<(&str, &str)> = status
        .iter()
        .map(|(key, s)| (key.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(kinds, [("infoclinica/main", "delta"), ("qms", "sync")]);

    let loader_js = jetstream::new(loader);
    assert_eq!(
        stream_messages(&loader_js, "PATIENTS").await,
        1,
        "only the qms extractor's own-subject record was stored"
    );
    let consumer = loader_js
        .get_stream("PATIENTS")
        .await
        .unwrap()
        .get_or_create_consumer(
            "loader",
            pull::Config {
                durable_name: Some("loader".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("the loader may create its durable consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("the loader may fetch");
    let message = batch.next().await.expect("one message").unwrap();
    assert_eq!(message.subject.as_str(), "patients.qms");
    message.double_ack().await.expect("the loader may ack");
    let info = consumer.clone().info().await.unwrap().clone();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));

    // The operator's tool re-publishes any source.
    let (etl, _) = connect(&nats, "etl").await;
    let etl_js = jetstream::new(etl);
    etl_js
        .publish("patients.infoclinica", "retry".into())
        .await
        .unwrap()
        .await
        .expect("etl may re-publish any source");

    // A wrong password is refused.
    let refused = async_nats::ConnectOptions::new()
        .user_and_password("loader".into(), "wrong".into())
        .connect(nats.url())
        .await;
    assert!(refused.is_err(), "wrong password refused");
}

/// Replies are private: the records the server delivers to the loader's
/// fetch go to the loader's inbox, and no other user may subscribe there —
/// neither to every inbox (`_INBOX.>`) nor to the loader's prefix. The
/// loader still gets its records.
#[tokio::test]
async fn no_user_reads_another_users_replies() {
    let nats = start_server();
    let stream = StreamSettings::default();
    let (qms, _) = connect(&nats, "qms-extractor").await;
    let qms_js = jetstream::new(qms);
    proto::bus::ensure_stream(&qms_js, &stream).await.unwrap();
    qms_js
        .publish("patients.qms", "record".into())
        .await
        .unwrap()
        .await
        .expect("qms publishes patients.qms");

    let (spy, mut spy_errors) = connect(&nats, "infoclinica-extractor").await;
    let mut every_inbox = spy.subscribe("_INBOX.>").await.unwrap();
    expect_refused_subscription(&mut spy_errors, "_INBOX.>").await;
    let mut loader_inbox = spy.subscribe("_INBOX.loader.>").await.unwrap();
    expect_refused_subscription(&mut spy_errors, "_INBOX.loader.>").await;
    let (etl, mut etl_errors) = connect(&nats, "etl").await;
    let _etl_spy = etl.subscribe("_INBOX.>").await.unwrap();
    expect_refused_subscription(&mut etl_errors, "_INBOX.>").await;

    let (loader, _) = connect(&nats, "loader").await;
    let consumer = jetstream::new(loader)
        .get_stream("PATIENTS")
        .await
        .unwrap()
        .get_or_create_consumer(
            "loader",
            pull::Config {
                durable_name: Some("loader".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let message = batch.next().await.expect("one message").unwrap();
    assert_eq!(message.payload.as_ref(), b"record", "the loader got it");
    message.double_ack().await.unwrap();

    let seen = tokio::time::timeout(Duration::from_secs(1), async {
        tokio::select! {
            m = every_inbox.next() => m,
            m = loader_inbox.next() => m,
        }
    })
    .await;
    assert!(
        matches!(seen, Err(_) | Ok(None)),
        "another user read the loader's reply: {seen:?}"
    );
}

/// The real qMS extractor (two syncs: the second reads its saved state) and
/// the real loader, each with its own user, move records into PostgreSQL;
/// the Infoclinica extractor's checkpoint and snapshot calls work with its
/// user. The server logs no permission violation.
#[tokio::test]
async fn services_work_with_their_users() {
    let nats = start_server();
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let stream = StreamSettings::default();

    let sim = qms_sim::Simulator::new(qms_sim::Config {
        seed: 11,
        count: 300,
        ..Default::default()
    });
    let sim_stop = CancellationToken::new();
    let stop = sim_stop.clone();
    let (addr, _sim_task) = sim
        .serve("127.0.0.1:0".parse().unwrap(), async move {
            stop.cancelled().await
        })
        .await
        .unwrap();

    let mut loader_settings = loader::testing::settings(&db, &nats.url(), &stream, "loader");
    loader_settings.nats.user = Some("loader".into());
    loader_settings.nats.password = Some(SecretString::from(password("loader")));
    let loader = loader::testing::RunningLoader::start(loader_settings);

    let mut settings = qms_extractor::Settings::default();
    settings.nats.url = nats.url();
    settings.nats.user = Some("qms-extractor".into());
    settings.nats.password = Some(SecretString::from(password("qms-extractor")));
    settings.qms.url = format!("http://{addr}{}", qms_sim::EXPORT_PATH);
    let sync = || async {
        qms_extractor::Extractor::connect(settings.clone())
            .await
            .unwrap_or_else(|e| panic!("qms extractor connects: {e}\n{}", violations(&nats)))
            .sync(Default::default(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("qms sync: {e}\n{}", violations(&nats)))
    };
    sync().await;
    sim.edit(0..10);
    let second = sync().await;
    assert_eq!(
        second.upserts, 10,
        "second sync found the edits: {second:?}"
    );
    testkit::wait_until(Duration::from_secs(60), "300 records loaded", || async {
        testkit::count_records(&pool).await == 300
    })
    .await;
    loader.stop().await;
    sim_stop.cancel();

    // Infoclinica: what runtime::checkpoint and the reconciliation snapshot do.
    let mut options = etl_runtime::nats::NatsSettings {
        url: nats.url(),
        user: Some("infoclinica-extractor".into()),
        password: Some(SecretString::from(password("infoclinica-extractor"))),
        ..Default::default()
    };
    options.request_timeout = Duration::from_secs(3);
    let js = jetstream::new(options.connect("test").await.unwrap());
    proto::bus::ensure_stream(&js, &stream).await.unwrap();
    let checkpoints = Checkpoints::open(&js, "infoclinica_checkpoints", 1)
        .await
        .expect("checkpoint bucket");
    let revision = checkpoints.save("main", "page 1", None).await.unwrap();
    checkpoints
        .save("main", "page 2", Some(revision))
        .await
        .unwrap();
    let saved = checkpoints.load("main").await.unwrap().unwrap();
    assert_eq!(saved.value, bytes::Bytes::from("page 2"));
    let snapshots = match js.get_object_store("infoclinica_snapshots").await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: "infoclinica_snapshots".into(),
                ..Default::default()
            })
            .await
            .expect("snapshot bucket"),
    };
    for round in 0..2u8 {
        let data = vec![round; 300_000];
        snapshots.put("main", &mut data.as_slice()).await.unwrap();
        let mut read = Vec::new();
        use tokio::io::AsyncReadExt;
        snapshots
            .get("main")
            .await
            .unwrap()
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert_eq!(read, data);
    }
    js.publish("patients.infoclinica", "record".into())
        .await
        .unwrap()
        .await
        .expect("infoclinica publishes its own subject");

    // The operator's tool reads through JetStream (`etl status` here).
    let etl = etl_runtime::nats::NatsSettings {
        url: nats.url(),
        user: Some("etl".into()),
        password: Some(SecretString::from(password("etl"))),
        ..Default::default()
    };
    let etl_js = jetstream::new(etl.connect("etl-status").await.unwrap());
    let status = etl_runtime::sync_status::of_stream(&etl_js, "PATIENTS")
        .await
        .unwrap();
    assert!(
        status.iter().any(|(key, _)| key == "qms"),
        "etl reads the sync status: {status:?}\n{}",
        violations(&nats)
    );

    let violations = violations(&nats);
    assert!(
        violations.is_empty(),
        "the services needed more than users.conf allows:\n{violations}"
    );
}

/// The permission violations the server logged.
fn violations(nats: &TempNats) -> String {
    nats.log()
        .lines()
        .filter(|l| l.contains("Violation"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped config's monitoring port (subjects, client names, stream
/// sizes) answers on the loopback interface only: the compose healthcheck
/// reaches it inside the container, nothing reaches it from the network.
#[tokio::test]
async fn monitoring_listens_on_loopback_only() {
    let port = testkit::nats::free_port();
    let mut host = String::new();
    let env: Vec<(String, String)> = USERS
        .iter()
        .map(|(user, var)| (var.to_string(), password(user)))
        .collect();
    let _nats = TempNats::start_with_config_and_monitoring(
        |dir| {
            let conf = deploy_tests::shipped_nats_conf(&dir.join("store"), None);
            let line = conf
                .lines()
                .find(|l| l.starts_with("http:"))
                .expect("an http: line");
            let (shipped_host, _) = line["http:".len()..].trim().rsplit_once(':').unwrap();
            host = shipped_host.to_string();
            let conf = conf.replace(line, &format!("http: {host}:{port}"));
            std::fs::write(dir.join("nats-server.conf"), conf).unwrap();
            std::fs::copy(deploy_dir().join("nats/users.conf"), dir.join("users.conf")).unwrap();
            dir.join("nats-server.conf")
        },
        &env,
    );
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answer = testkit::http_get(loopback, "/healthz").await;
    assert_eq!(answer.map(|a| a.0), Some(200), "answers on loopback");
    // This machine's address towards other hosts (no packet is sent).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    match outward {
        Some(ip) => {
            let reached = tokio::net::TcpStream::connect((ip, port)).await;
            assert!(reached.is_err(), "monitoring reachable on {ip}:{port}");
        }
        None => eprintln!("SKIPPED the outward half: this machine has no address but loopback"),
    }
    assert_eq!(host, "127.0.0.1", "the shipped monitoring address");
}
