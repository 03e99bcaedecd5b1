//! Helpers of the matcher's integration tests: records are written through
//! the real loader's store (the same upsert and change feed as in
//! production), or through NATS and the in-process loader.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{NaiveDate, TimeZone, Utc};
use etl_runtime::database::DatabaseSettings;
use loader::store::Store;
use matcher::engine::{Engine, Rec};
use proto::{Checked, DocumentType, Envelope, IdentityDocument, PatientRecord, Phone, Sex};
use sqlx::PgPool;

pub struct Fixture {
    pub db: DatabaseSettings,
    pub pool: PgPool,
    pub store: Store,
    pub engine: Engine,
    version: AtomicU64,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = testkit::fresh_database().await;
        let pool = testkit::pool(&db).await;
        etl_runtime::database::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        let store = Store::new(pool.clone(), "TEST");
        Fixture {
            db,
            store,
            pool,
            engine: {
                // Every full batch reads the next one ahead (the service
                // does from 2,000 changes on): the tests with more than
                // one batch of changes go through it. The fixed rules,
                // which most tests describe (`scoring = "rules"`; the
                // model's tests use their own fixture).
                let mut e = matcher::service::engine(&rules_settings());
                e.read_ahead_from = 1;
                e
            },
            version: AtomicU64::new(1),
        }
    }

    pub fn settings(&self) -> matcher::Settings {
        let mut s = matcher::Settings {
            database: self.db.clone(),
            ..rules_settings()
        };
        s.matcher.poll_interval = std::time::Duration::from_millis(200);
        s
    }

    /// Writes upserts (and deletes for `None`) as the loader would.
    pub async fn write(&self, records: Vec<(&str, &str, Option<PatientRecord>)>) {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let envelopes: Vec<Envelope> = records
            .into_iter()
            .map(|(s, id, r)| {
                let v = self.version.fetch_add(1, Ordering::Relaxed) as i64;
                match r {
                    Some(r) => Envelope::upsert(s, id, v, at, r),
                    None => Envelope::delete(s, id, v, at),
                }
            })
            .collect();
        for chunk in envelopes.chunks(1000) {
            self.store.write_envelopes(chunk, 1).await.expect("write");
        }
    }

    /// Applies every pending change.
    pub async fn drain(&self) {
        loop {
            let applied = self
                .engine
                .process_batch(&self.pool, 500)
                .await
                .expect("batch")
                .expect("lock free");
            if applied.changes == 0 {
                break;
            }
        }
    }

    pub async fn person(&self, source: &str, id: &str) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT person_id FROM person_memberships WHERE source = $1 AND source_id = $2 AND valid_to IS NULL",
        )
        .bind(source)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    pub async fn same(&self, a: (&str, &str), b: (&str, &str)) -> bool {
        let (x, y) = (self.person(a.0, a.1).await, self.person(b.0, b.1).await);
        x.is_some() && x == y
    }

    /// The persons as sets of records (ids left out), for comparisons.
    pub async fn partition(&self) -> BTreeSet<BTreeSet<Rec>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT person_id, source, source_id FROM person_memberships WHERE valid_to IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut by: BTreeMap<i64, BTreeSet<Rec>> = BTreeMap::new();
        for (p, s, i) in rows {
            by.entry(p).or_default().insert((s, i));
        }
        by.into_values().collect()
    }

    /// Open review items as (pair, reason).
    pub async fn reviews(&self) -> BTreeSet<(String, String, String, String, String)> {
        sqlx::query_as(
            "SELECT a_source, a_source_id, b_source, b_source_id, reason FROM review_items WHERE status = 'open'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// The default settings with `scoring = "rules"`.
pub fn rules_settings() -> matcher::Settings {
    let mut settings = matcher::Settings::default();
    settings.matcher.scoring = matcher::settings::ScoringKind::Rules;
    settings
}

/// A plain adult: Иванов Пётр Сергеевич, 1990-05-03, no identifiers.
pub fn adult() -> PatientRecord {
    PatientRecord {
        business_unit: Some("main".into()),
        last_name: Some("Иванов".into()),
        first_name: Some("Пётр".into()),
        middle_name: Some("Сергеевич".into()),
        birth_date: NaiveDate::from_ymd_opt(1990, 5, 3),
        sex: Some(Sex::Male),
        ..Default::default()
    }
}

pub fn with_passport(mut r: PatientRecord, series: &str, number: &str) -> PatientRecord {
    r.documents = vec![proto::normalize::document(
        DocumentType::PASSPORT,
        Some("1"),
        Some(series),
        Some(number),
    )
    .unwrap()];
    r
}

pub fn passport_doc(series: &str, number: &str) -> IdentityDocument {
    proto::normalize::document(DocumentType::PASSPORT, None, Some(series), Some(number)).unwrap()
}

pub fn with_snils(mut r: PatientRecord, snils: &str) -> PatientRecord {
    r.snils = proto::normalize::snils(snils);
    r
}

pub fn with_phone(mut r: PatientRecord, phone: &str) -> PatientRecord {
    r.phones = vec![Phone {
        number: proto::normalize::phone(phone).unwrap(),
        preferred: true,
    }];
    r
}

pub fn with_oms(mut r: PatientRecord, oms: &str) -> PatientRecord {
    r.oms_policy = proto::normalize::oms_policy(oms);
    r
}

/// A valid SNILS from nine digits.
pub fn snils(body: u32) -> String {
    let digits: Vec<u8> = format!("{body:09}").bytes().map(|b| b - b'0').collect();
    format!("{body:09}{:02}", proto::normalize::snils_checksum(&digits))
}

/// A valid OMS number from fifteen digits.
pub fn oms(body: u64) -> String {
    let digits: Vec<u8> = format!("{body:015}").bytes().map(|b| b - b'0').collect();
    format!("{body:015}{}", proto::normalize::oms_check_digit(&digits))
}

pub fn invalid(value: &str) -> Checked {
    Checked::invalid(value, proto::Problem::BadChecksum)
}

/// Truth-generator records as envelopes (version 1).
pub fn truth(seed: u64, persons: u64) -> Vec<synth::truth::TruthRecord> {
    synth::truth::TruthGenerator::new(seed).records(persons)
}

pub fn truth_rows(records: &[synth::truth::TruthRecord]) -> Vec<matcher::evaluate::TruthRow> {
    records
        .iter()
        .map(|t| matcher::evaluate::TruthRow {
            source: t.source.into(),
            source_id: t.source_id.clone(),
            person: t.person.clone(),
            group: t.group.clone(),
        })
        .collect()
}

/// Another person than [`adult`]: Петрова Анна Ивановна, 1985-02-17, with
/// a passport (two records of her link by the document rule).
pub fn other_adult() -> PatientRecord {
    with_passport(
        PatientRecord {
            business_unit: Some("main".into()),
            last_name: Some("Петрова".into()),
            first_name: Some("Анна".into()),
            middle_name: Some("Ивановна".into()),
            birth_date: NaiveDate::from_ymd_opt(1985, 2, 17),
            sex: Some(Sex::Female),
            ..Default::default()
        },
        "4606",
        "222222",
    )
}

impl Fixture {
    /// 200 generated persons' records, plus `qms:b` and `infoclinica:b2`:
    /// two records of [`adult`] with one passport (one person once matched).
    pub async fn write_b_and_others(&self, seed: u64) {
        let mut rows: Vec<_> = truth(seed, 200)
            .into_iter()
            .map(|t| (t.source, t.source_id, Some(t.record)))
            .collect();
        for (source, id) in [("qms", "b"), ("infoclinica", "b2")] {
            rows.push((
                source,
                id.into(),
                Some(with_passport(adult(), "4510", "111111")),
            ));
        }
        self.write(
            rows.iter()
                .map(|(s, i, r)| (*s, i.as_str(), r.clone()))
                .collect(),
        )
        .await;
    }

    /// Applies every pending change with `engine` (another instance).
    pub async fn drain_with(&self, engine: &Engine) {
        while engine
            .process_batch(&self.pool, 500)
            .await
            .expect("batch")
            .expect("lock free")
            .changes
            > 0
        {}
    }

    /// A full re-match moves nothing and keeps the review items: the
    /// incremental state is the re-match's.
    pub async fn assert_equals_a_rematch(&self) {
        let persons = self.partition().await;
        let reviews = self.reviews().await;
        let applied = self.engine.rematch_all(&self.pool).await.unwrap();
        assert_eq!(applied.moved, 0);
        assert_eq!(self.partition().await, persons);
        assert_eq!(self.reviews().await, reviews);
    }
}
