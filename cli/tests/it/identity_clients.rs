//! `etl identity client add|list|revoke`: the key is printed once and works
//! with the identity service's authenticator; only its hash is stored; the
//! list never shows it; a revoked key stops working; bad input is refused
//! with a clear message.

use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderValue};
use identity::auth::Authenticator;
use identity::settings::AuthSettings;

use crate::common::{etl, run};

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    headers
}

#[tokio::test]
async fn a_client_is_added_listed_and_revoked() {
    let stream = testkit::unique_stream();
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl(&db, &stream, &["migrate"]);

    let args = [
        "identity",
        "client",
        "add",
        "portal",
        "--scopes",
        "ids:read,personal:read",
    ];
    let key = etl(&db, &stream, &args).trim().to_string();
    assert!(key.starts_with("idk_"), "{key}");
    let auth = Authenticator::new(pool.clone(), &AuthSettings::default()).unwrap();
    let caller = auth
        .authenticate(&bearer(&key))
        .await
        .ok()
        .expect("the key works");
    assert_eq!(caller.name, "portal");
    assert!(caller.personal());

    // Only the hash is stored; the list names the client, never the key.
    let stored: String = sqlx::query_scalar("SELECT t::text FROM identity_clients t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!stored.contains(&key[4..]), "{stored}");
    let listed = etl(&db, &stream, &["identity", "client", "list"]);
    assert!(
        listed.contains("portal") && listed.contains("ids:read,personal:read"),
        "{listed}"
    );
    assert!(!listed.contains(&key[4..]), "{listed}");

    // Bad input: a clear refusal, nothing added.
    for (args, says) in [
        (
            vec!["identity", "client", "add", "x", "--scopes", "admin"],
            "unknown scope",
        ),
        (
            vec!["identity", "client", "add", "portal"],
            "exists already",
        ),
        (
            vec!["identity", "client", "add", "no spaces"],
            "client name",
        ),
    ] {
        let out = run(&db, &stream, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }

    etl(&db, &stream, &["identity", "client", "revoke", "portal"]);
    assert!(
        auth.authenticate(&bearer(&key)).await.is_err(),
        "a revoked key is refused"
    );
    let list: serde_json::Value = serde_json::from_str(&etl(
        &db,
        &stream,
        &["identity", "client", "list", "--json"],
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["revoked_at"].is_string(), "{list}");
    let again = run(&db, &stream, &["identity", "client", "revoke", "portal"]);
    assert!(!again.status.success());
}
