//! `etl console user add|list|disable|password`: the password comes from
//! standard input and is stored as an argon2 hash only; the list never
//! shows it; bad input is refused with a clear message; a new password
//! replaces the old one; a disabled account is listed as such.

use steward_console::accounts::password_matches;

use crate::common::{etl, run, run_with_input};

#[tokio::test]
async fn an_account_is_added_listed_given_a_new_password_and_disabled() {
    let stream = testkit::unique_stream();
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl(&db, &stream, &["migrate"]);
    let stored = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT password_hash FROM console_users WHERE name = 'anna'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let add = ["console", "user", "add", "anna", "--role", "steward"];
    let out = run_with_input(&db, &stream, &add, "first-secret-42\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = stored().await;
    assert!(hash.starts_with("$argon2"), "{hash}");
    assert!(!hash.contains("first-secret-42"));
    assert!(password_matches("first-secret-42", &hash));

    let listed = etl(&db, &stream, &["console", "user", "list"]);
    assert!(
        listed.contains("anna") && listed.contains("steward"),
        "{listed}"
    );
    assert!(!listed.contains("argon2"), "{listed}");

    for (args, input, says) in [
        (
            vec!["console", "user", "add", "bob", "--role", "boss"],
            "long-enough-1\n",
            "unknown role",
        ),
        (
            vec!["console", "user", "add", "anna"],
            "long-enough-1\n",
            "exists already",
        ),
        (
            vec!["console", "user", "add", "carl"],
            "short\n",
            "at least",
        ),
    ] {
        let out = run_with_input(&db, &stream, &args, input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }

    let password = ["console", "user", "password", "anna"];
    let out = run_with_input(&db, &stream, &password, "second-secret-42\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = stored().await;
    assert!(password_matches("second-secret-42", &hash));
    assert!(!password_matches("first-secret-42", &hash));

    etl(&db, &stream, &["console", "user", "disable", "anna"]);
    let list: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["console", "user", "list", "--json"])).unwrap();
    assert!(list[0]["disabled_at"].is_string(), "{list}");
    assert!(!run(&db, &stream, &["console", "user", "disable", "anna"])
        .status
        .success());
}
