//! deploy/nats/nats-server.conf and users.conf loaded by a real nats-server
//! of the test's own: each service's user can do its job with the services'
//! default names, and nothing beyond it (no cross-source publish, no publish
//! by the loader).

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

const USERS: [(&str, &str); 4] = [
    ("qms-extractor", "NATS_QMS_EXTRACTOR_PASSWORD"),
    (
        "infoclinica-extractor",
        "NATS_INFOCLINICA_EXTRACTOR_PASSWORD",
    ),
    ("loader", "NATS_LOADER_PASSWORD"),
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

/// A client logged in as `user`, and the server errors it is told about
/// (permission violations arrive this way, asynchronously).
async fn connect(
    nats: &TempNats,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password(user))
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
    let wanted = format!("publish to \"{subject}\"").to_lowercase();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no permission violation for {subject}");
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

    // The operator's tool is an administrator.
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
            .expect("qms extractor connects")
            .sync(Default::default(), &CancellationToken::new())
            .await
            .expect("qms sync")
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

    let log = nats.log();
    assert!(
        !log.contains("Permissions Violation"),
        "the services needed more than users.conf allows:\n{}",
        log.lines()
            .filter(|l| l.contains("Permissions Violation"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
