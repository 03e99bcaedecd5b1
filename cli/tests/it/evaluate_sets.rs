//! `etl evaluate-sets` on FEBRL1 (1,000 records), as an operator runs it,
//! against the real PostgreSQL: the table comes out, the set's database is
//! made and dropped again, and the matcher links no two different people.

use sqlx::{Connection, PgConnection};

use crate::common;
use common::etl;

/// The cells of the table line of `set`.
fn cells<'a>(table: &'a str, set: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {set} |")))
        .unwrap_or_else(|| panic!("no line for {set} in:\n{table}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[tokio::test]
async fn febrl1_is_evaluated_in_a_database_of_its_own() {
    let db = testkit::fresh_database().await;
    let stream = testkit::unique_stream();
    let table = etl(&db, &stream, &["evaluate-sets", "--sets", "febrl1"]);

    assert!(
        table.starts_with("| set | records | true pairs | found pairs | precision | recall | F1 |"),
        "{table}"
    );
    let row = cells(&table, "febrl1");
    assert_eq!(row[1..3], ["1000", "500"], "records, true pairs: {table}");
    let found: u64 = row[3].parse().unwrap();
    assert!(found > 0 && found <= 500, "{table}");
    // Precision 1.0 and no false merge, whatever the recall.
    assert_eq!(row[4], "1.0000", "precision: {table}");
    assert_eq!(row[7], "0 (0 / 0 / 0 / 0)", "false merges: {table}");

    // The set's own database is gone; the configured one was never used.
    let mut conn = PgConnection::connect_with(&db.without_db().database("postgres"))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(format!("{}_eval_febrl1", db.database_name))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let pool = testkit::pool(&db).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "the configured database stays empty");
}
