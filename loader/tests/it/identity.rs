//! The hashes of the records' identifier keys the loader writes
//! (`loader::identity`) are those PostgreSQL computes from the stored
//! columns (`identity_key_hashes_of(…)`, over `identity_keys(…)`): a key
//! hashed or named differently would hide its record from the identity
//! service's lookups.

use chrono::{TimeZone, Utc};
use proto::Envelope;
use sqlx::PgPool;

/// Rows whose stored hashes differ from what SQL computes.
async fn differing(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM source_records
         WHERE identity_key_hashes IS DISTINCT FROM
               identity_key_hashes_of(documents, snils, snils_valid, oms_policy,
                                      oms_policy_valid, phones, emails)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn written_key_hashes_are_those_sql_computes() {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let store = loader::store::Store::new(pool.clone(), "PATIENTS");
    store.migrate().await.unwrap();
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    // Records with every kind of identifier, valid and not, clerks' typos,
    // foreign documents and records without any.
    let records = synth::truth::TruthGenerator::new(5).records(2_000);
    let upserts: Vec<Envelope> = records
        .iter()
        .map(|t| Envelope::upsert(t.source, t.source_id.clone(), 1, at, t.record.clone()))
        .collect();
    for chunk in upserts.chunks(1_000) {
        store.write_envelopes(chunk, 1).await.unwrap();
    }
    // Newer content for some (another record's identifiers), deletes of
    // others: a delete keeps the last content and its hashes.
    let changed: Vec<Envelope> = records
        .iter()
        .zip(records.iter().skip(1))
        .step_by(7)
        .map(|(t, other)| {
            Envelope::upsert(t.source, t.source_id.clone(), 2, at, other.record.clone())
        })
        .chain(
            records
                .iter()
                .skip(3)
                .step_by(11)
                .map(|t| Envelope::delete(t.source, t.source_id.clone(), 3, at)),
        )
        .collect();
    let mut seen = std::collections::HashSet::new();
    let changed: Vec<Envelope> = changed
        .into_iter()
        .filter(|e| seen.insert((e.source.clone(), e.source_id.clone())))
        .collect();
    store.write_envelopes(&changed, 10_000).await.unwrap();
    let with_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM source_records WHERE cardinality(identity_key_hashes) > 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(with_keys > 1_000, "{with_keys} records with identifiers");
    assert_eq!(differing(&pool).await, 0);

    // Another writer (an operator's SQL, a test) that leaves the column
    // out gets it computed by the table's triggers.
    sqlx::query(
        "INSERT INTO source_records (source, source_id, snils, snils_valid, phones,
                                     schema_version, source_version, content_hash,
                                     observed_at, stream_seq)
         VALUES ('qms', 'by-hand', '11223344595', true,
                 '[{\"number\": {\"value\": \"79251234567\"}}]', 1, 1, '\\x00', now(), 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE source_records SET snils_valid = NOT coalesce(snils_valid, false)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(differing(&pool).await, 0);
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT source_id FROM source_records
         WHERE identity_key_hashes @> ARRAY[identity_key_hash('p:79251234567')]",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(found.contains(&"by-hand".to_string()), "{found:?}");
}
