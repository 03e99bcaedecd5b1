//! A fresh database with synthetic records matched by the matcher's engine
//! and review items on them, the identity service serving the console
//! in-process, steward accounts, and a headless chromium per test.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use loader::store::Store;
use proto::Envelope;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const STEWARD: &str = "anna";
pub const VIEWER: &str = "victor";
pub const PASSWORD: &str = "correct horse battery";

/// A review item made for the test: its id and the pair's records.
#[derive(Debug, Clone)]
pub struct Pair {
    pub item: i64,
    pub a: (String, String),
    pub b: (String, String),
    /// Record `a` as loaded (its identifiers and names, for searches).
    pub a_record: proto::PatientRecord,
}

pub struct Console {
    pub pool: PgPool,
    pub addr: SocketAddr,
    pub pairs: Vec<Pair>,
    shutdown: CancellationToken,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Console {
    /// Records loaded and matched, three review items, a steward and a
    /// viewer, the service started with the console enabled.
    pub async fn start() -> Console {
        Console::start_with(|_| {}).await
    }

    /// [`Console::start`] with the service's settings changed by
    /// `configure` first.
    pub async fn start_with(configure: impl FnOnce(&mut identity::Settings)) -> Console {
        let db = testkit::fresh_database().await;
        let pool = testkit::pool(&db).await;
        etl_runtime::database::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        let mut settings = identity::Settings {
            database: db.clone(),
            ..Default::default()
        };
        settings.api.listen = ([127, 0, 0, 1], 0).into();
        settings.matcher.scoring = matcher::settings::ScoringKind::Model;
        settings.console.enabled = true;
        configure(&mut settings);
        let pairs = load_pairs(&pool, &settings).await;
        steward_console::accounts::add(&pool, STEWARD, "steward", PASSWORD)
            .await
            .expect("steward added");
        steward_console::accounts::add(&pool, VIEWER, "viewer", PASSWORD)
            .await
            .expect("viewer added");
        let shutdown = CancellationToken::new();
        let (addr, _task) = identity::start(settings, shutdown.clone())
            .await
            .expect("service starts")
            .expect("not shut down");
        Console {
            pool,
            addr,
            pairs,
            shutdown,
        }
    }

    /// Signs `name` in over HTTP; gives the session cookie (`name=value`)
    /// and the CSRF token the queue page carries.
    pub async fn session(&self, name: &str) -> (String, String) {
        let http = client();
        let r = http
            .post(self.url("/signin"))
            .form(&[("name", name), ("password", PASSWORD)])
            .send()
            .await
            .expect("sign-in");
        assert_eq!(r.status(), 303);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let (_, page) = self.get(&cookie, "/queue").await;
        let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        (cookie, page[at..at + 64].to_string())
    }

    /// A form sent by `POST` with a session cookie: the response, status
    /// and headers to check.
    pub async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        client()
            .post(self.url(path))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .expect("request")
    }

    /// A page by `GET` with a session cookie: status and text.
    pub async fn get(&self, cookie: &str, path_and_query: &str) -> (u16, String) {
        let r = client()
            .get(self.url(path_and_query))
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/console{path}", self.addr)
    }

    pub async fn person_of(&self, r: &(String, String)) -> i64 {
        sqlx::query_scalar(
            "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
        )
        .bind(&r.0)
        .bind(&r.1)
        .fetch_one(&self.pool)
        .await
        .expect("record has a person")
    }
}

/// Three pairs of synthetic patients: record `a` from qMS, record `b` from
/// Infoclinica with a typo in the last name and another birth day, so that
/// the item page shows differences. Loaded through the loader's store,
/// placed by the matcher, then each pair put in the review queue.
async fn load_pairs(pool: &PgPool, settings: &identity::Settings) -> Vec<Pair> {
    let generator = synth::Generator::new(24);
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut envelopes = Vec::new();
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for (i, p) in generator.patients(0..3).enumerate() {
        let mut b = p.record.clone();
        if let Some(last) = b.last_name.as_mut() {
            let mut chars: Vec<char> = last.chars().collect();
            let n = chars.len() / 2;
            chars[n] = if chars[n] == 'о' { 'а' } else { 'о' };
            *last = chars.into_iter().collect();
        }
        b.snils = None;
        b.documents.clear();
        let a_id = p.source_id.clone();
        let b_id = format!("{}", 9000 + i);
        let mut a = p.record;
        loader::validity::recompute(&mut a);
        loader::validity::recompute(&mut b);
        records.push(a.clone());
        envelopes.push(Envelope::upsert("qms", a_id.clone(), 1, at, a));
        envelopes.push(Envelope::upsert("infoclinica", b_id.clone(), 1, at, b));
        keys.push((("qms".to_string(), a_id), ("infoclinica".to_string(), b_id)));
    }
    Store::new(pool.clone(), "IT")
        .write_envelopes(&envelopes, 1)
        .await
        .expect("records written");
    let engine = matcher::service::engine(&matcher::Settings {
        matcher: settings.matcher.clone(),
        ..Default::default()
    });
    while engine
        .process_batch(pool, 5000)
        .await
        .expect("matcher batch")
        .expect("the lock is free")
        .changes
        > 0
    {}
    // Only the test's items in the queue, whatever the matcher found.
    sqlx::query("DELETE FROM review_items")
        .execute(pool)
        .await
        .expect("queue emptied");
    let mut pairs = Vec::new();
    for (n, ((a, b), a_record)) in keys.into_iter().zip(records).enumerate() {
        // A gray-zone item as the matcher writes them (its evidence names
        // levels and weights only).
        let evidence = serde_json::json!({
            "probability": 0.9 - n as f64 * 0.1,
            "weight": 3.5,
            "fields": {
                "last_name": {"level": "one_edit", "weight": 2.1},
                "first_name": {"level": "exact", "weight": 4.0},
                "birth_date": {"level": "one_typo", "weight": 1.2},
                "snils": {"level": "differs", "weight": -1.5}
            }
        });
        let item: i64 = sqlx::query_scalar(
            "INSERT INTO review_items (a_source, a_source_id, b_source, b_source_id, reason, score, evidence)
             VALUES ($1, $2, $3, $4, 'model_ambiguous', $5, $6) RETURNING id",
        )
        .bind(&a.0)
        .bind(&a.1)
        .bind(&b.0)
        .bind(&b.1)
        .bind(0.9f32 - n as f32 * 0.1)
        .bind(evidence)
        .fetch_one(pool)
        .await
        .expect("review item");
        pairs.push(Pair {
            item,
            a,
            b,
            a_record,
        });
    }
    pairs
}

/// An HTTP client that does not follow redirects (the tests check them).
pub fn client() -> reqwest::Client {
    etl_runtime::tls::http_client(None)
        .expect("client")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The text of the first element `<tag … id="id" …>…</tag>` of `page`
/// (tags inside removed), for figures the pages mark with ids.
pub fn text_of(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!("id=\"{id}\""))?;
    let open = at + page[at..].find('>')? + 1;
    let tag_start = page[..at].rfind('<')? + 1;
    let tag: String = page[tag_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = open + page[open..].find(&format!("</{tag}>"))?;
    let mut text = String::new();
    let mut inside = false;
    for c in page[open..close].chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => text.push(c),
            _ => {}
        }
    }
    Some(text.trim().to_string())
}

/// A headless chromium driven through its own chromedriver on a free port;
/// both end with the test.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; deploy/local-services.sh installs it)");
        let mut browser_driver = Some(driver);
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=ru"]
            }
        }))
        .expect("capabilities");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver: browser_driver.take().expect("once"),
                    };
                }
                Err(e) if std::time::Instant::now() > deadline => panic!("chromedriver: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
