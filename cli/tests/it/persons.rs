//! `etl persons …` as an operator runs it: the schema is only checked, never
//! migrated (that is `etl migrate`'s, as the owner); a person's data is
//! printed only with `--show-personal-data`, and each such view is first
//! written to the access log (who, when, which person and records; never a
//! value), which `etl access-log list` shows.

use sqlx::PgPool;

use crate::common;
use common::{etl, run};

const LAST_NAME: &str = "Zyxwqvortsova";
const BIRTH_DATE: &str = "1961-04-12";
const SNILS: &str = "11223344595";

/// One record of source `qms`, as the loader would have stored it.
async fn insert_record(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO source_records (source, source_id, last_name, first_name, birth_date,
             snils, snils_valid, schema_version, source_version, content_hash, observed_at,
             stream_seq)
         VALUES ('qms', 'p-1', $1, 'Agrafena', $2::date, $3, true, 1, 1, '\\x00', now(), 1)",
    )
    .bind(LAST_NAME)
    .bind(BIRTH_DATE)
    .bind(SNILS)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn persons_show_prints_personal_data_only_when_asked_and_logs_each_view() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    etl(&db, &stream, &["migrate"]);
    let pool = testkit::pool(&db).await;
    insert_record(&pool).await;
    etl(&db, &stream, &["rematch"]);
    let person: i64 = sqlx::query_scalar(
        "SELECT person_id FROM person_memberships WHERE source = 'qms' AND source_id = 'p-1'
         AND valid_to IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let views = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM personal_data_access")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let hidden = etl(&db, &stream, &["persons", "show", &person.to_string()]);
    assert!(hidden.contains("record qms:p-1"), "{hidden}");
    assert!(
        hidden.contains("--show-personal-data"),
        "says how: {hidden}"
    );
    for value in [LAST_NAME, BIRTH_DATE, SNILS, "Agrafena"] {
        assert!(!hidden.contains(value), "{value} printed: {hidden}");
    }
    assert_eq!(views().await, 0, "nothing shown, nothing logged");

    let shown = etl(
        &db,
        &stream,
        &[
            "persons",
            "show",
            &person.to_string(),
            "--show-personal-data",
        ],
    );
    assert!(
        shown.contains(LAST_NAME) && shown.contains(BIRTH_DATE),
        "{shown}"
    );
    assert_eq!(views().await, 1);
    let (db_user, os_user, command, subject, records, row): (
        String,
        String,
        String,
        String,
        Vec<String>,
        String,
    ) = sqlx::query_as(
        "SELECT db_user, os_user, command, subject, records, to_jsonb(a)::text
         FROM personal_data_access a",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(db_user, db.username);
    assert!(!os_user.is_empty());
    assert_eq!(
        (command.as_str(), subject, records),
        (
            "persons show",
            format!("person {person}"),
            vec!["qms:p-1".to_string()]
        )
    );
    for value in [LAST_NAME, BIRTH_DATE, SNILS, "Agrafena"] {
        assert!(!row.contains(value), "a value in the access log: {row}");
    }

    // Listed for the owner (here the test's superuser).
    let listed: serde_json::Value =
        serde_json::from_str(&etl(&db, &stream, &["access-log", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["subject"], format!("person {person}"));
    assert_eq!(listed[0]["records"][0], "qms:p-1");

    // Append-only, for its owner too.
    let changed = sqlx::query("UPDATE personal_data_access SET os_user = 'someone else'")
        .execute(&pool)
        .await;
    assert!(changed.is_err(), "the access log was changed");
    let deleted = sqlx::query("DELETE FROM personal_data_access")
        .execute(&pool)
        .await;
    assert!(deleted.is_err(), "the access log was deleted from");
    assert_eq!(views().await, 1);
}

/// Only `etl migrate` migrates: every other command against a database
/// that is not migrated (or is behind) says so and changes nothing.
#[tokio::test]
async fn commands_check_the_schema_instead_of_migrating() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let pool = testkit::pool(&db).await;
    let migrated = || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&pool)
            .await
            .unwrap()
            .is_some()
    };
    for args in [
        &["persons", "reviews"][..],
        &["persons", "show", "1"],
        &["persons", "link", "qms:1", "qms:2"],
        &["summary"],
        &["access-log", "list"],
    ] {
        let out = run(&db, &stream, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "etl {args:?} ran on an empty database"
        );
        assert!(
            stderr.contains("no ETL schema yet") && stderr.contains("etl migrate"),
            "etl {args:?}: {stderr}"
        );
        assert!(!migrated().await, "etl {args:?} migrated");
    }

    // Behind: the latest migration is missing.
    etl(&db, &stream, &["migrate"]);
    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .execute(&pool)
        .await
        .unwrap();
    let out = run(&db, &stream, &["persons", "reviews"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("behind") && stderr.contains(&latest.to_string()),
        "{stderr}"
    );
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = $1")
            .bind(latest)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(applied, 0, "persons reviews migrated");
}
