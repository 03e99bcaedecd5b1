//! Document-type dictionaries per database, against the real local
//! Firebird 3, NATS JetStream and PostgreSQL (through the real loader).

use crate::common;

use std::collections::BTreeMap;

use common::*;
use infoclinica_extractor::Mode;
use proto::{DocumentType, DocumentTypeMap};

/// Two databases whose `PASPTYPE` dictionaries differ: the same code 3 is a
/// birth certificate in one and an international passport in the other,
/// and each row reaches PostgreSQL with its own database's type, read by
/// that type's format (a `N` label, a whole certificate in one field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_reads_codes_by_its_own_dictionary() {
    let mut north = FbDatabase::create(20, true);
    north.settings.name = "north".into();
    north.settings.source_id_prefix = "north:".into();
    let mut south = FbDatabase::create(20, true);
    south.settings.name = "south".into();
    south.settings.source_id_prefix = "south:".into();
    south.settings.document_types = DocumentTypeMap::try_from(BTreeMap::from(
        [
            ("1", "passport"),
            ("3", "international_passport"),
            ("5", "birth_certificate"),
        ]
        .map(|(code, name)| (code.to_string(), name.to_string())),
    ))
    .unwrap();
    north.exec(
        "UPDATE CLIENTS SET PASPTYPE = 3, PASPSER = NULL, PASPNUM = 'iv-ae 123456' WHERE PCODE = 1",
    );
    south.exec(
        "UPDATE CLIENTS SET PASPTYPE = 3, PASPSER = '75', PASPNUM = 'N 0123456' WHERE PCODE = 1",
    );
    south.exec(
        "UPDATE CLIENTS SET PASPTYPE = 5, PASPSER = 'IV-AE 123456', PASPNUM = NULL WHERE PCODE = 2",
    );
    south.exec(
        "UPDATE CLIENTS SET PASPTYPE = 2, PASPSER = '75', PASPNUM = '0123456' WHERE PCODE = 3",
    );

    let fx = Fixture::new().await;
    let mut settings = fx.settings(&north.settings);
    settings.databases.push(south.settings.clone());
    extract(settings, Mode::InitialLoad).await;
    let mut expected = north.expected(&[]);
    expected.extend(south.expected(&[]));
    wait_for_state(&fx.pool, &expected).await;

    let document = |source_id: &'static str| {
        let pool = fx.pool.clone();
        async move {
            let (doc,): (serde_json::Value,) =
                sqlx::query_as("SELECT documents->0 FROM source_records WHERE source_id = $1")
                    .bind(source_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let doc: proto::IdentityDocument = serde_json::from_value(doc).unwrap();
            (
                doc.doc_type,
                doc.source_type_code,
                doc.series,
                doc.number,
                doc.problem,
            )
        }
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        document("north:1").await,
        (
            DocumentType::BIRTH_CERTIFICATE,
            some("3"),
            some("IV-АЕ"),
            "123456".into(),
            None
        )
    );
    assert_eq!(
        document("south:1").await,
        (
            DocumentType::INTERNATIONAL_PASSPORT,
            some("3"),
            some("75"),
            "0123456".into(),
            None
        )
    );
    assert_eq!(
        document("south:2").await,
        (
            DocumentType::BIRTH_CERTIFICATE,
            some("5"),
            some("IV-АЕ"),
            "123456".into(),
            None
        )
    );
    // Left out of the south dictionary: unknown, not the default's meaning.
    assert_eq!(document("south:3").await.0, DocumentType::UNKNOWN);
    fx.finish().await;
}
