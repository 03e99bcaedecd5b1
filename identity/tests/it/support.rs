//! A fresh database, records loaded by the loader's store and matched by
//! the matcher's engine, and the identity service serving it in-process.

use std::net::SocketAddr;

use chrono::{NaiveDate, TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use loader::store::Store;
use matcher::Engine;
use proto::normalize::{snils_checksum, Checked};
use proto::{DocumentType, Envelope, IdentityDocument, PatientRecord, Sex};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct Service {
    pub db: DatabaseSettings,
    pub pool: PgPool,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Keys of three clients: `reader` (ids:read), `viewer` (ids:read,
    /// personal:read), `writer` (ids:read, decisions:write).
    pub reader: String,
    pub viewer: String,
    pub writer: String,
    shutdown: CancellationToken,
    version: std::sync::atomic::AtomicI64,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The settings the tests run the service with: scoring by the model (the
/// shipped priors), so that `$match` and the matcher decide alike.
pub fn settings(db: &DatabaseSettings) -> identity::Settings {
    let mut s = identity::Settings {
        database: db.clone(),
        ..Default::default()
    };
    s.api.listen = ([127, 0, 0, 1], 0).into();
    // Tests send requests back to back; the rate limit has its own test.
    s.auth.rate_per_second = 100_000;
    s.auth.burst = 100_000;
    s.matcher.scoring = matcher::settings::ScoringKind::Model;
    s.auth.jwt_keys = vec![identity::settings::JwtKey {
        kid: None,
        algorithm: "HS256".into(),
        secret: Some(JWT_SECRET.to_string().into()),
        public_key_file: None,
    }];
    s
}

pub const JWT_SECRET: &str = "test-secret-of-at-least-32-bytes-length";

/// The matcher's engine as the service's settings configure it.
pub fn engine(settings: &identity::Settings) -> Engine {
    matcher::service::engine(&matcher::Settings {
        matcher: settings.matcher.clone(),
        ..Default::default()
    })
}

impl Service {
    /// A fresh database (migrated), clients added, the service started.
    pub async fn start() -> Service {
        Service::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut identity::Settings)) -> Service {
        let db = testkit::fresh_database().await;
        let pool = testkit::pool(&db).await;
        etl_runtime::database::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        let key = |name: &'static str, scopes: &'static [&'static str]| {
            let pool = pool.clone();
            async move {
                let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
                identity::clients::add(&pool, name, &scopes)
                    .await
                    .expect("client added")
            }
        };
        let reader = key("reader", &["ids:read"]).await;
        let viewer = key("viewer", &["ids:read", "personal:read"]).await;
        let writer = key("writer", &["ids:read", "decisions:write"]).await;
        let mut s = settings(&db);
        tweak(&mut s);
        let shutdown = CancellationToken::new();
        let (addr, _task) = identity::start(s, shutdown.clone())
            .await
            .expect("service starts")
            .expect("not shut down");
        Service {
            db,
            pool,
            addr,
            http: etl_runtime::tls::http_client(None)
                .expect("client")
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            reader,
            viewer,
            writer,
            shutdown,
            version: std::sync::atomic::AtomicI64::new(1),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET with a key; status and body (JSON, or null).
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request");
        let (s, v, _) = read(r).await;
        (s, v)
    }

    /// Writes `records` as the loader writes what it consumes (identifiers
    /// normalized again from their values, as the loader does).
    pub async fn load(&self, records: &[(String, String, PatientRecord)]) {
        let store = Store::new(self.pool.clone(), "IT");
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let version = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for chunk in records.chunks(2000) {
            let envelopes: Vec<Envelope> = chunk
                .iter()
                .map(|(s, i, r)| {
                    let mut r = r.clone();
                    loader::validity::recompute(&mut r);
                    Envelope::upsert(s.clone(), i.clone(), version, at, r)
                })
                .collect();
            store
                .write_envelopes(&envelopes, 1)
                .await
                .expect("records written");
        }
    }

    /// Deletes records (a source deleted them).
    pub async fn delete(&self, records: &[(&str, &str)]) {
        let store = Store::new(self.pool.clone(), "IT");
        let at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        let version = 1_000_000
            + self
                .version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let envelopes: Vec<Envelope> = records
            .iter()
            .map(|(s, i)| Envelope::delete(*s, *i, version, at))
            .collect();
        store
            .write_envelopes(&envelopes, 1)
            .await
            .expect("deletes written");
    }

    /// Lets the matcher apply every pending change, as its service would.
    pub async fn match_pending(&self) {
        let engine = engine(&settings(&self.db));
        while engine
            .process_batch(&self.pool, 5000)
            .await
            .expect("matcher batch")
            .expect("the lock is free")
            .changes
            > 0
        {}
    }

    /// The current person of a record.
    pub async fn person_of(&self, source: &str, source_id: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
        )
        .bind(source)
        .bind(source_id)
        .fetch_one(&self.pool)
        .await
        .expect("record has a person")
    }

    /// Access-log lines: (client, command, subject, records).
    pub async fn access_log(&self) -> Vec<(Option<String>, String, String, Vec<String>)> {
        sqlx::query_as(
            "SELECT client, command, subject, records FROM personal_data_access ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("access log")
    }
}

pub async fn read(r: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, headers)
}

/// A valid SNILS from a nine-digit number.
pub fn snils(n: u32) -> String {
    let first9: Vec<u8> = format!("{n:09}").bytes().map(|b| b - b'0').collect();
    format!("{n:09}{:02}", snils_checksum(&first9))
}

/// A record: names, birth date, sex, optionally a SNILS and a passport.
pub fn person(
    last: &str,
    first: &str,
    middle: &str,
    birth: (i32, u32, u32),
    snils_number: Option<u32>,
    passport: Option<(&str, &str)>,
) -> PatientRecord {
    PatientRecord {
        last_name: Some(last.into()),
        first_name: Some(first.into()),
        middle_name: Some(middle.into()),
        birth_date: NaiveDate::from_ymd_opt(birth.0, birth.1, birth.2),
        sex: Some(if middle.ends_with("на") {
            Sex::Female
        } else {
            Sex::Male
        }),
        snils: snils_number.map(|n| Checked::valid(snils(n))),
        documents: passport
            .map(|(series, number)| {
                vec![IdentityDocument {
                    doc_type: DocumentType::PASSPORT,
                    source_type_code: None,
                    series: Some(series.into()),
                    number: number.into(),
                    problem: None,
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// A record tuple.
pub fn rec(source: &str, id: &str, r: PatientRecord) -> (String, String, PatientRecord) {
    (source.to_string(), id.to_string(), r)
}

/// A signed HS256 JWT for `sub` with `scope`, expiring `exp_in` seconds
/// from now (negative: expired).
pub fn jwt(sub: &str, scope: &str, exp_in: i64) -> String {
    let now = Utc::now().timestamp();
    let claims = serde_json::json!({"sub": sub, "scope": scope, "exp": now + exp_in, "iat": now});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token signed")
}

/// Checks the RFC 9457 members of a problem document and that it quotes
/// none of `secrets`.
pub fn assert_problem(status: u16, body: &Value, expected: u16, secrets: &[&str]) {
    assert_eq!(status, expected, "status; body {body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:etl-bus:identity:problem:")),
        "type: {body}"
    );
    assert!(body["title"].is_string(), "title: {body}");
    assert_eq!(body["status"], expected, "status member: {body}");
    assert!(body["detail"].is_string(), "detail: {body}");
    let text = body.to_string();
    for s in secrets {
        assert!(!text.contains(s), "the problem quotes {s:?}: {text}");
    }
}
