//! Is the matcher's least possible write for new records cheaper than the
//! loader's write of them? With `BENCH_FLOOR=N` (default 20,000; 0 skips
//! it): the loader's write path for N new records (its `Store`, batches of
//! 2,000, committed), then, in one transaction that is rolled back, only
//! the rows the matcher must write for those records — without any
//! matching work, as server-side statements (no client transfer), so a
//! lower bound: read the records; persons at the table's ratio of persons
//! to records; one membership per record, with its reason (it is also the
//! record's `assigned` row of the audit log); pairs at the table's ratio
//! of pairs to records; the change rows deleted. If that floor costs
//! PostgreSQL more than the loader's whole write, a matcher sharing the
//! machine with a loader running flat out cannot keep its pace, however
//! its matching is done. The records stay unmatched, with their changes.

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};

use crate::support::{checkpoint, load, new_records, Cpu, Spent, Table};

/// The table's live records, current persons and pairs.
#[derive(sqlx::FromRow)]
struct Ratios {
    live: i64,
    persons: i64,
    pairs: i64,
}

pub async fn run(table: &Table, n: usize) {
    let records = new_records(77, n, "floor");
    let pool = &table.pool;
    let ratios: Ratios = sqlx::query_as(
        "SELECT (SELECT count(*) FROM source_records WHERE deleted_at IS NULL) AS live,
                (SELECT count(*) FROM persons WHERE retired_at IS NULL) AS persons,
                (SELECT count(*) FROM match_pairs) AS pairs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    checkpoint(pool).await;
    let before = Cpu::now();
    let started = Instant::now();
    load(&table.store, &records, 1).await;
    let loader = started.elapsed();
    let loader_cpu = before.spent();
    let n_persons = (n as f64 * ratios.persons as f64 / ratios.live as f64).round() as i64;
    let n_pairs = (n as f64 * ratios.pairs as f64 / ratios.live as f64).round() as i64;
    let (total, parts, floor_cpu) = least_write(pool, n_persons, n_pairs).await;
    println!(
        "floor: CPU per 1,000 records: the loader's write path {}, the matcher's least write {}",
        loader_cpu.per_thousand(n),
        floor_cpu.per_thousand(n)
    );
    println!(
        "floor: {n} new records on {}: the loader's write {:.0} ms ({:.0} records/s); the matcher's least write for them \
         ({n_persons} persons, {n} memberships with their reasons, {n_pairs} pairs; no matching) {:.0} ms ({:.0} records/s) = {:.2}× the loader's: {}",
        ratios.live,
        loader.as_secs_f64() * 1e3,
        n as f64 / loader.as_secs_f64(),
        total.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64(),
        total.as_secs_f64() / loader.as_secs_f64(),
        parts.join(", ")
    );
}

/// The least write for the records just loaded (`floor-…`), step by step,
/// rolled back: the time of all steps and of each, and their CPU.
async fn least_write(
    pool: &PgPool,
    n_persons: i64,
    n_pairs: i64,
) -> (Duration, Vec<String>, Spent) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE floor_recs ON COMMIT DROP AS
         SELECT c.change_id, c.source, c.source_id, row_number() OVER (ORDER BY c.change_id) AS n
         FROM record_changes c WHERE c.source_id LIKE 'floor-%'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut total = Duration::ZERO;
    let mut parts = Vec::new();
    let before = Cpu::now();
    for (what, sql) in steps(n_persons, n_pairs) {
        let took = timed(&mut tx, sql).await;
        total += took;
        parts.push(format!("{what} {} ms", took.as_millis()));
    }
    let spent = before.spent();
    tx.rollback().await.unwrap();
    (total, parts, spent)
}

async fn timed(conn: &mut PgConnection, sql: String) -> Duration {
    let started = Instant::now();
    // Numbers computed here, no input: safe to format into the SQL.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .unwrap();
    started.elapsed()
}

fn steps(n_persons: i64, n_pairs: i64) -> [(&'static str, String); 5] {
    [
        (
            "records read",
            "SELECT count(r.last_name) FROM floor_recs f
             JOIN source_records r ON r.source = f.source AND r.source_id = f.source_id"
                .into(),
        ),
        (
            "persons",
            format!(
                "CREATE TEMP TABLE floor_persons ON COMMIT DROP AS
                 WITH p AS (INSERT INTO persons (locked) SELECT false FROM generate_series(1, {n_persons})
                            RETURNING person_id)
                 SELECT person_id, row_number() OVER (ORDER BY person_id) AS n FROM p"
            ),
        ),
        (
            "memberships (each also its record's `assigned` row of the audit)",
            format!(
                "INSERT INTO person_memberships (source, source_id, person_id, actor, rule, new_person)
                 SELECT f.source, f.source_id, p.person_id, 'matcher', 'operator_or_alone', true FROM floor_recs f
                 JOIN floor_persons p ON p.n = (f.n - 1) % {n_persons} + 1"
            ),
        ),
        (
            "pairs",
            format!(
                "INSERT INTO match_pairs (a_source, a_source_id, b_source, b_source_id, decision, rule, score, evidence)
                 SELECT source, source_id, 'zz-floor', source_id, 'link', 'snils', 20,
                        '{{\"snils\": \"exact\", \"last_name\": \"exact\", \"birth_date\": \"exact\"}}'
                 FROM floor_recs WHERE n <= {n_pairs}"
            ),
        ),
        (
            "change rows deleted",
            "DELETE FROM record_changes WHERE change_id IN (SELECT change_id FROM floor_recs)".into(),
        ),
    ]
}
