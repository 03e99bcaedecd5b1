//! deploy/postgres/roles.sql on a fresh database: migrations as etl_owner,
//! then the real loader as etl_loader and the real matcher as etl_matcher do
//! their work, and no role can write what is not its own.

use std::process::Command;
use std::time::Duration;

use chrono::TimeZone;
use deploy_tests::deploy_dir;
use etl_runtime::database::DatabaseSettings;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Any fixed key: every run of this test in the cluster takes it.
const ROLES_LOCK: i64 = 0x6574_6c5f_726f_6c65;

/// The services' settings as deployed: their own role, and they never
/// change the schema (`database.migrate = false`).
fn as_role(db: &DatabaseSettings, role: &str) -> DatabaseSettings {
    DatabaseSettings {
        username: role.into(),
        migrate: false,
        ..db.clone()
    }
}

/// `psql -f roles.sql` as the superuser, as an operator runs it.
fn run_roles_sql(db: &DatabaseSettings) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", &db.host])
        .args(["-p", &db.port.to_string(), "-U", &db.username])
        .args(["-d", &db.database_name, "-f"])
        .arg(deploy_dir().join("postgres/roles.sql"))
        .output()
        .expect("psql is installed with PostgreSQL");
    assert!(
        out.status.success(),
        "roles.sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn pool_as(db: &DatabaseSettings, role: &str) -> PgPool {
    testkit::pool(&as_role(db, role)).await
}

/// Runs `sql` as `role`; the SQLSTATE if refused.
async fn try_sql(db: &DatabaseSettings, role: &str, sql: &'static str) -> Result<(), String> {
    let mut conn = PgConnection::connect_with(&as_role(db, role).with_db())
        .await
        .unwrap();
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            sqlx::Error::Database(d) => d.code().unwrap_or_default().to_string(),
            other => other.to_string(),
        })
}

const DENIED: &str = "42501";

/// The real loader and matcher, in process.
struct Services {
    loader: loader::testing::RunningLoader,
    matcher_stop: CancellationToken,
    matcher: tokio::task::JoinHandle<anyhow::Result<matcher::Applied>>,
}

impl Services {
    fn start(
        loader_db: &DatabaseSettings,
        matcher_db: &DatabaseSettings,
        stream: &proto::bus::StreamSettings,
    ) -> Services {
        let mut loader_settings =
            loader::testing::settings(loader_db, &testkit::nats_url(), stream, "loader");
        loader_settings.loader.retry.max = Duration::from_millis(300);
        let mut matcher_settings = matcher::Settings {
            database: matcher_db.clone(),
            ..Default::default()
        };
        matcher_settings.matcher.retry.max = Duration::from_millis(300);
        let matcher_stop = CancellationToken::new();
        Services {
            loader: loader::testing::RunningLoader::start(loader_settings),
            matcher: tokio::spawn(matcher::run(matcher_settings, matcher_stop.clone())),
            matcher_stop,
        }
    }

    fn running(&self) -> bool {
        !self.loader.task.is_finished() && !self.matcher.is_finished()
    }

    async fn stop(self) {
        self.loader.stop().await;
        self.matcher_stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.matcher)
            .await
            .expect("matcher stops")
            .unwrap()
            .expect("matcher ran");
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn roles_have_least_privilege_and_the_services_work_with_them() {
    let db = testkit::fresh_database().await;

    // Roles are cluster-wide: parallel runs on other databases wait here.
    let mut lock_conn = PgConnection::connect_with(&db.without_db().database("postgres"))
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(ROLES_LOCK)
        .execute(&mut lock_conn)
        .await
        .unwrap();
    run_roles_sql(&db);
    etl_runtime::database::MIGRATOR
        .run(&pool_as(&db, "etl_owner").await)
        .await
        .expect("etl_owner runs the migrations");
    // Idempotent, and runs at the same time in one database take turns.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| run_roles_sql(&db));
        }
    });
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(ROLES_LOCK)
        .execute(&mut lock_conn)
        .await
        .unwrap();
    lock_conn.close().await.unwrap();

    // The real services, each as its role.
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let generator = synth::Generator::new(5);
    let at = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let envelopes = (0..200).map(|i| generator.patient(i).into_envelope("qms", 1, at));
    testkit::publish_all(&js, &stream, envelopes).await;
    testkit::publish_raw(&js, stream.subject("qms"), b"not a record".to_vec()).await;

    let services = Services::start(
        &as_role(&db, "etl_loader"),
        &as_role(&db, "etl_matcher"),
        &stream,
    );
    let pool = pool_as(&db, "etl_readonly").await;
    testkit::wait_until(Duration::from_secs(60), "loaded and matched", || async {
        count(&pool, "SELECT count(*) FROM source_records").await == 200
            && count(&pool, "SELECT count(*) FROM dead_letters").await == 1
            && count(&pool, "SELECT count(*) FROM record_changes").await == 0
            && count(&pool, "SELECT count(*) FROM person_memberships").await == 200
    })
    .await;
    services.stop().await;

    // Each role writes only its own tables.
    let record = "INSERT INTO source_records (source, source_id, schema_version, source_version, content_hash, observed_at, stream_seq) VALUES ('qms', 'x-1', 1, 1, '\\x00', now(), 1)";
    assert_eq!(try_sql(&db, "etl_loader", record).await, Ok(()));
    assert_eq!(
        try_sql(
            &db,
            "etl_loader",
            "INSERT INTO persons (locked) VALUES (false)"
        )
        .await,
        Err(DENIED.into())
    );
    assert_eq!(
        try_sql(&db, "etl_loader", "DELETE FROM source_records").await,
        Err(DENIED.into()),
        "the loader soft-deletes, never deletes"
    );
    assert_eq!(
        try_sql(
            &db,
            "etl_loader",
            "INSERT INTO sources (name) VALUES ('evil')"
        )
        .await,
        Err(DENIED.into()),
        "the loader never registers a source"
    );
    assert_eq!(
        try_sql(
            &db,
            "etl_matcher",
            "INSERT INTO persons (locked) VALUES (false)"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        try_sql(&db, "etl_matcher", record).await,
        Err(DENIED.into())
    );
    assert_eq!(
        try_sql(
            &db,
            "etl_matcher",
            "UPDATE source_records SET deleted_at = now()"
        )
        .await,
        Err(DENIED.into())
    );
    assert_eq!(
        try_sql(&db, "etl_matcher", "DELETE FROM dead_letters").await,
        Err(DENIED.into())
    );
    for write in [
        record,
        "UPDATE persons SET locked = true",
        "DELETE FROM dead_letters",
        "TRUNCATE match_pairs",
        "CREATE TABLE reporting_scratch (x int)",
    ] {
        assert_eq!(
            try_sql(&db, "etl_readonly", write).await,
            Err(DENIED.into()),
            "readonly: {write}"
        );
    }
    for read in [
        "SELECT count(*) FROM person_golden",
        "SELECT count(*) FROM match_audit",
    ] {
        assert_eq!(
            try_sql(&db, "etl_readonly", read).await,
            Ok(()),
            "readonly: {read}"
        );
    }
    assert_eq!(
        try_sql(&db, "etl_loader", "DROP TABLE persons").await,
        Err(DENIED.into()),
        "only the owner changes the schema"
    );
    for role in ["etl_loader", "etl_matcher"] {
        assert_eq!(
            try_sql(&db, role, "CREATE TABLE service_scratch (x int)").await,
            Err(DENIED.into()),
            "{role} cannot add tables"
        );
    }
    operator_decides_but_cannot_change_the_schema(&db).await;
    identity_serves_as_its_role(&db).await;
}

/// etl_operator (people running `etl`): decisions applied at once, the
/// access log appended to; no DDL, no trigger changes, no deletions of the
/// audit or the decisions, the access log neither read nor changed.
async fn operator_decides_but_cannot_change_the_schema(db: &DatabaseSettings) {
    for ddl in [
        "ALTER TABLE match_audit_events DISABLE TRIGGER ALL",
        "ALTER TABLE match_decisions DISABLE TRIGGER match_decisions_never_deleted",
        "DROP TRIGGER personal_data_access_append_only ON personal_data_access",
        "ALTER TABLE personal_data_access DISABLE TRIGGER ALL",
        "CREATE TABLE operator_scratch (x int)",
        "DROP TABLE review_items",
        "DELETE FROM match_audit_events",
        "DELETE FROM match_decisions",
        "UPDATE source_records SET last_name = 'x'",
        "SELECT count(*) FROM personal_data_access",
        "UPDATE personal_data_access SET os_user = 'x'",
    ] {
        assert_eq!(
            try_sql(db, "etl_operator", ddl).await,
            Err(DENIED.into()),
            "etl_operator: {ddl}"
        );
    }
    assert_eq!(
        try_sql(
            db,
            "etl_readonly",
            "SELECT count(*) FROM personal_data_access"
        )
        .await,
        Err(DENIED.into()),
        "only the owner reads the access log"
    );

    assert_eq!(
        try_sql(
            db,
            "etl_operator",
            "INSERT INTO sources (name) VALUES ('lab')"
        )
        .await,
        Ok(()),
        "etl sources register runs as etl_operator"
    );
    assert_eq!(
        try_sql(db, "etl_operator", "SELECT version FROM _sqlx_migrations").await,
        Ok(()),
        "etl checks the schema version as etl_operator"
    );
    let operator = pool_as(db, "etl_operator").await;
    let records: Vec<(String, String)> = sqlx::query_as(
        "SELECT source, source_id FROM person_memberships WHERE valid_to IS NULL
         ORDER BY source_id LIMIT 2",
    )
    .fetch_all(&operator)
    .await
    .expect("etl_operator reads persons");
    let (a, b) = (records[0].clone(), records[1].clone());
    let engine = matcher::service::engine(&matcher::Settings::default());
    matcher::operator::decide(&engine, &operator, "link", &a, &b, "tester", None)
        .await
        .expect("etl_operator links two records");
    let persons: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT person_id FROM person_memberships WHERE valid_to IS NULL
         AND (source, source_id) IN (($1, $2), ($3, $4))",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&b.0)
    .bind(&b.1)
    .fetch_all(&operator)
    .await
    .unwrap();
    assert_eq!(persons.len(), 1, "one person after the link");
    matcher::operator::set_lock(&engine, &operator, persons[0], true, "tester")
        .await
        .expect("etl_operator locks a person");
    matcher::operator::decide(&engine, &operator, "keep_apart", &a, &b, "tester", None)
        .await
        .expect("etl_operator keeps two records apart");
    assert_eq!(
        try_sql(
            db,
            "etl_operator",
            "INSERT INTO personal_data_access (os_user, command, subject, db_user)
             VALUES ('tester', 'persons show', 'person 1', 'someone else')"
        )
        .await,
        Ok(())
    );
    // The server, not the client, names the database user.
    let owner = pool_as(db, "etl_owner").await;
    let logged: Vec<String> = sqlx::query_scalar("SELECT db_user FROM personal_data_access")
        .fetch_all(&owner)
        .await
        .expect("the owner reads the access log");
    assert_eq!(logged, ["etl_operator"]);
}

/// The identity service as etl_identity: reads persons, writes the access
/// log and decisions; reads neither the access log nor anything it may not.
/// Its API clients are added as etl_operator (`etl identity client add`).
async fn identity_serves_as_its_role(db: &DatabaseSettings) {
    let operator = pool_as(db, "etl_operator").await;
    let scopes: Vec<String> = ["ids:read", "personal:read", "decisions:write"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let key = identity::clients::add(&operator, "roles-test", &scopes)
        .await
        .expect("etl_operator adds an API client");
    let settings = identity::Settings {
        database: as_role(db, "etl_identity"),
        api: identity::settings::ApiSettings {
            listen: ([127, 0, 0, 1], 0).into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let (addr, _) = identity::start(settings, stop.clone())
        .await
        .expect("identity starts as etl_identity")
        .expect("not stopped");
    let records: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT source, source_id, person_id FROM person_memberships WHERE valid_to IS NULL
         ORDER BY source_id LIMIT 2",
    )
    .fetch_all(&operator)
    .await
    .unwrap();
    let http = etl_runtime::tls::http_client(None)
        .unwrap()
        .build()
        .unwrap();
    let person = http
        .get(format!("http://{addr}/v1/persons/{}", records[0].2))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(person.status(), 200, "{}", person.text().await.unwrap());
    let link = serde_json::json!({
        "a": {"source": records[0].0, "source_id": records[0].1},
        "b": {"source": records[1].0, "source_id": records[1].1},
    });
    let linked = http
        .post(format!("http://{addr}/v1/decisions/link"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(link.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 200, "{}", linked.text().await.unwrap());
    stop.cancel();
    for sql in [
        "SELECT count(*) FROM personal_data_access",
        "UPDATE source_records SET last_name = 'x'",
        "DELETE FROM match_decisions",
        "UPDATE identity_clients SET scopes = '{}'",
        "CREATE TABLE identity_scratch (x int)",
    ] {
        assert_eq!(
            try_sql(db, "etl_identity", sql).await,
            Err(DENIED.into()),
            "etl_identity: {sql}"
        );
    }
    let owner = pool_as(db, "etl_owner").await;
    let views: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT db_user, client FROM personal_data_access WHERE client IS NOT NULL")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(
        views,
        [("etl_identity".to_string(), Some("roles-test".to_string()))]
    );
}

/// Services deployed with `database.migrate = false` and started before the
/// owner's `etl migrate` wait for it (no crash loop, no schema of their
/// own), then work.
#[tokio::test]
async fn services_wait_for_the_owner_to_migrate() {
    let db = testkit::fresh_database().await;
    let deployed = DatabaseSettings {
        migrate: false,
        ..db.clone()
    };
    let stream = testkit::unique_stream();
    let js = testkit::jetstream(&stream).await;
    let generator = synth::Generator::new(6);
    let at = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let envelopes = (0..50).map(|i| generator.patient(i).into_envelope("qms", 1, at));
    testkit::publish_all(&js, &stream, envelopes).await;

    let services = Services::start(&deployed, &deployed, &stream);
    let pool = testkit::pool(&db).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let schema: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(schema, None, "a service migrated with migrate = false");
    assert!(services.running(), "they wait");

    etl_runtime::database::MIGRATOR
        .run(&pool)
        .await
        .expect("the owner migrates");
    testkit::wait_until(Duration::from_secs(60), "loaded and matched", || async {
        count(&pool, "SELECT count(*) FROM source_records").await == 50
            && count(&pool, "SELECT count(*) FROM person_memberships").await == 50
    })
    .await;
    services.stop().await;
}
