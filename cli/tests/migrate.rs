//! `etl migrate`: the schema owner's step before new service versions start
//! (compose's one-shot `migrate` service runs it).

use std::process::Command;

#[tokio::test]
async fn migrate_applies_the_schema_once_and_is_idempotent() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_etl"))
            .arg("migrate")
            .envs(testkit::service_env(&db, &stream))
            .output()
            .expect("run etl migrate");
        assert!(
            out.status.success(),
            "etl migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("the schema is up to date"), "{first}");
    assert!(first.contains("source records"), "{first}");
    let pool = testkit::pool(&db).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_name IN ('source_records', 'persons', 'dead_letters')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
    assert_eq!(run(), first, "a second run changes nothing");
}
