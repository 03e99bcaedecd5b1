//! The `document_types` reference table the migrations seed holds exactly
//! the canonical types of `proto::DocumentType::ALL` (a type added in proto
//! needs its migration, and the other way round).

#[tokio::test]
async fn migrations_seed_every_canonical_document_type() {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    etl_runtime::database::MIGRATOR.run(&pool).await.unwrap();
    let table: Vec<(i16, String, String)> =
        sqlx::query_as("SELECT id, code, name FROM document_types ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let canonical: Vec<(i16, String, String)> = proto::DocumentType::ALL
        .iter()
        .map(|(t, code, name)| (t.0 as i16, code.to_string(), name.to_string()))
        .collect();
    assert_eq!(table, canonical);
}
