//! `etl summary`: what landed in PostgreSQL, and the state of the bus.
//! Counts only: no personal data is printed.

use async_nats::jetstream;
use sqlx::PgPool;

use crate::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let db = &settings.database;
    let pool = crate::db::connect(settings).await?;
    println!("Medical ETL bus — summary");
    println!(
        "PostgreSQL database {} on {}:{}",
        db.database_name, db.host, db.port
    );

    println!("\nSource records (one row per record of a source system)");
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT source, count(*), count(*) FILTER (WHERE deleted_at IS NULL),
                count(*) FILTER (WHERE deleted_at IS NOT NULL), count(DISTINCT business_unit)
         FROM source_records GROUP BY source ORDER BY source",
    )
    .fetch_all(&pool)
    .await?;
    println!(
        "  {:<14} {:>9} {:>9} {:>9} {:>15}",
        "source", "records", "live", "deleted", "business units"
    );
    for (source, total, live, deleted, units) in &rows {
        println!("  {source:<14} {total:>9} {live:>9} {deleted:>9} {units:>15}");
    }
    if rows.is_empty() {
        println!("  (none yet)");
    }

    println!("\nIdentity documents by canonical type (numbers stored as text)");
    let docs: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT coalesce(t.code, 'type ' || (d->>'type')), count(*), count(*) FILTER (WHERE d->>'problem' IS NOT NULL)
         FROM source_records r CROSS JOIN LATERAL jsonb_array_elements(r.documents) d
         LEFT JOIN document_types t ON t.id = (d->>'type')::int
         WHERE r.deleted_at IS NULL GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await?;
    println!(
        "  {:<28} {:>9} {:>16}",
        "type", "documents", "format problems"
    );
    for (code, n, bad) in &docs {
        println!("  {code:<28} {n:>9} {bad:>16}");
    }

    let (snils, snils_bad, oms, oms_bad, no_doc): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(snils), count(*) FILTER (WHERE snils_valid = false),
                count(oms_policy), count(*) FILTER (WHERE oms_policy_valid = false),
                count(*) FILTER (WHERE documents = '[]'::jsonb)
         FROM source_records WHERE deleted_at IS NULL",
    )
    .fetch_one(&pool)
    .await?;
    println!("\nIdentifiers of live records");
    println!(
        "  SNILS          {snils:>9} present, {snils_bad} failing the checksum (kept raw, flagged)"
    );
    println!(
        "  OMS policy     {oms:>9} present, {oms_bad} failing the check digit (kept raw, flagged)"
    );
    println!("  no document    {no_doc:>9} records");

    let changes: Vec<(String, i64)> =
        sqlx::query_as("SELECT op, count(*) FROM record_changes GROUP BY op ORDER BY op")
            .fetch_all(&pool)
            .await?;
    let changes: Vec<String> = changes.iter().map(|(op, n)| format!("{op} {n}")).collect();
    println!(
        "\nChange feed for the matcher (record_changes): {}",
        if changes.is_empty() {
            "empty".into()
        } else {
            changes.join(", ")
        }
    );

    matching(&pool).await?;

    let dead: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT reason_code, status, count(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 3 DESC",
    )
    .fetch_all(&pool)
    .await?;
    println!("\nDead letters (kept with their reason; the rest kept flowing)");
    if dead.is_empty() {
        println!("  none");
    }
    for (code, status, n) in &dead {
        println!("  {code:<24} {status:<8} {n:>6}");
    }

    println!("\nBus");
    match bus_state(settings).await {
        Ok(lines) => lines.iter().for_each(|l| println!("  {l}")),
        Err(error) => println!("  NATS not reachable: {error}"),
    }
    Ok(())
}

async fn bus_state(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let client = settings.nats.connect("etl-summary").await?;
    let js = jetstream::new(client);
    let (s, consumers) = crate::status::bus(&js, &settings.stream.name).await?;
    let mut lines = vec![format!(
        "stream {} ({}): {} messages, {:.1} MiB, sequences {}..{}",
        s.name,
        settings.stream.all_subjects(),
        s.messages,
        s.bytes as f64 / 1048576.0,
        s.first_seq,
        s.last_seq
    )];
    for c in consumers {
        lines.push(format!(
            "consumer {}: {} waiting, {} delivered but not yet acknowledged, last acked stream sequence {}",
            c.name, c.pending, c.unacked, c.ack_floor_seq
        ));
    }
    Ok(lines)
}

/// The matcher's side: persons, cross-system matches, review items.
async fn matching(pool: &PgPool) -> anyhow::Result<()> {
    println!("\nPersons (matcher)");
    let Some(p) = crate::status::person_counts(pool).await? else {
        println!("  the matcher has not run on this database");
        return Ok(());
    };
    let (persons, multi, cross, records, locked) = (
        p.persons,
        p.with_several_records,
        p.cross_system,
        p.records,
        p.locked,
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(pool)
        .await?;
    println!("  persons        {persons:>9} holding {records} live records; {multi} with several records, {locked} locked");
    println!("  cross-system   {cross:>9} persons known to more than one source");
    let rules: Vec<(String, i64)> = sqlx::query_as(
        "SELECT rule, count(*) FROM match_pairs WHERE decision = 'link' GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let rules: Vec<String> = rules.iter().map(|(r, n)| format!("{r} {n}")).collect();
    println!(
        "  links by rule  {}",
        if rules.is_empty() {
            "none".into()
        } else {
            rules.join(", ")
        }
    );
    let reviews: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM review_items WHERE status = 'open' GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let open: i64 = reviews.iter().map(|r| r.1).sum();
    println!(
        "  review items   {open:>9} open{}",
        if reviews.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                reviews
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let decisions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM match_decisions WHERE revoked_at IS NULL")
            .fetch_one(pool)
            .await?;
    println!("  decisions      {decisions:>9} operator decisions in force; {pending} changes waiting for the matcher");
    Ok(())
}
