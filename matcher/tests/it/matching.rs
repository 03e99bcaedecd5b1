//! The matcher against a real PostgreSQL: records written through the
//! loader's store, changes applied by the engine as the service does.

use crate::common;

use common::*;
use proto::{Email, EmailKind};

#[tokio::test]
async fn identifier_rules_link_across_sources() {
    let f = Fixture::new().await;
    let s = snils(123_456_789);
    let o = oms(770_000_000_000_001);
    let petrova = |r: proto::PatientRecord| proto::PatientRecord {
        last_name: Some("Петрова".into()),
        first_name: Some("Анна".into()),
        middle_name: Some("Игоревна".into()),
        sex: Some(proto::Sex::Female),
        birth_date: chrono::NaiveDate::from_ymd_opt(1975, 1, 2),
        ..r
    };
    let sidorov = |r: proto::PatientRecord| proto::PatientRecord {
        last_name: Some("Сидоров".into()),
        birth_date: chrono::NaiveDate::from_ymd_opt(1961, 7, 30),
        ..r
    };
    f.write(vec![
        // Same passport written two ways; first name differs (not needed).
        ("qms", "1", Some(with_passport(adult(), "45 06", "012345"))),
        (
            "infoclinica",
            "1",
            Some(with_passport(
                proto::PatientRecord {
                    first_name: Some("Петя".into()),
                    ..adult()
                },
                "",
                "4506 012345",
            )),
        ),
        // Same SNILS; surname with ё/е and in capitals.
        ("qms", "2", Some(with_snils(petrova(adult()), &s))),
        (
            "infoclinica",
            "2",
            Some(with_snils(
                proto::PatientRecord {
                    last_name: Some("ПЕТРОВА".into()),
                    ..petrova(adult())
                },
                &s,
            )),
        ),
        // Same OMS number; birth date with day and month swapped.
        ("qms", "3", Some(with_oms(sidorov(adult()), &o))),
        (
            "infoclinica",
            "3",
            Some(with_oms(
                proto::PatientRecord {
                    birth_date: chrono::NaiveDate::from_ymd_opt(1961, 7, 30),
                    ..sidorov(adult())
                },
                &o,
            )),
        ),
        // An invalid SNILS never links.
        (
            "qms",
            "4",
            Some(proto::PatientRecord {
                last_name: Some("Орлов".into()),
                snils: Some(invalid("12345678900")),
                birth_date: chrono::NaiveDate::from_ymd_opt(2001, 1, 1),
                ..adult()
            }),
        ),
        (
            "infoclinica",
            "4",
            Some(proto::PatientRecord {
                last_name: Some("Орлов".into()),
                first_name: Some("Олег".into()),
                snils: Some(invalid("12345678900")),
                birth_date: chrono::NaiveDate::from_ymd_opt(2001, 1, 1),
                ..adult()
            }),
        ),
    ])
    .await;
    f.drain().await;
    assert!(
        f.same(("qms", "1"), ("infoclinica", "1")).await,
        "document rule"
    );
    assert!(
        f.same(("qms", "2"), ("infoclinica", "2")).await,
        "SNILS rule"
    );
    assert!(f.same(("qms", "3"), ("infoclinica", "3")).await, "OMS rule");
    assert!(
        !f.same(("qms", "4"), ("infoclinica", "4")).await,
        "invalid SNILS"
    );
    assert!(!f.same(("qms", "1"), ("qms", "2")).await);
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 0);
    // The evidence names the rule and the agreements, not the values.
    let (rule, evidence): (String, serde_json::Value) = sqlx::query_as(
        "SELECT rule, evidence FROM match_pairs WHERE a_source_id = '2' AND b_source_id = '2'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(rule, "snils");
    assert_eq!(evidence["last_name"], "exact");
    assert!(!evidence.to_string().contains(&s));
    // "Why" finds the chain.
    let why = matcher::operator::why(
        &f.pool,
        &("qms".into(), "2".into()),
        &("infoclinica".into(), "2".into()),
    )
    .await
    .unwrap();
    assert_eq!(why.path.len(), 1);
    assert_eq!(why.path[0].rule, "snils");
    // The audit log holds every assignment: one row per new record, and
    // each person's creation is told by the rows of the records it first
    // received (no row of its own).
    assert_eq!(
        f.count("SELECT count(*) FROM match_audit WHERE action = 'assigned'")
            .await,
        f.count("SELECT count(*) FROM source_records").await
    );
    assert_eq!(
        f.count(
            "SELECT count(DISTINCT person_id) FROM match_audit
             WHERE action = 'assigned' AND detail @> '{\"new_person\": true}'"
        )
        .await,
        f.count("SELECT count(*) FROM persons").await
    );
}

#[tokio::test]
async fn scored_rule_links_reviews_and_leaves_alone() {
    let f = Fixture::new().await;
    let phone = "+7 912 000-11-22";
    let email = |a: &str| Email {
        address: proto::normalize::email(a).unwrap(),
        kind: EmailKind::Contact,
    };
    f.write(vec![
        // Typo in the surname, ё/е, shared phone (two formats): link.
        (
            "qms",
            "1",
            Some(with_phone(
                proto::PatientRecord {
                    first_name: Some("Артём".into()),
                    ..adult()
                },
                phone,
            )),
        ),
        (
            "infoclinica",
            "1",
            Some(with_phone(
                proto::PatientRecord {
                    last_name: Some("Иваноф".into()),
                    first_name: Some("Артем".into()),
                    ..adult()
                },
                "89120001122",
            )),
        ),
        // Same full name and birth date, nothing else: review (namesake?).
        (
            "qms",
            "2",
            Some(proto::PatientRecord {
                last_name: Some("Зайцев".into()),
                ..adult()
            }),
        ),
        (
            "infoclinica",
            "2",
            Some(proto::PatientRecord {
                last_name: Some("Зайцев".into()),
                ..adult()
            }),
        ),
        // Twins: same surname, patronymic, birth date, phone and e-mail, other first name: nothing.
        (
            "qms",
            "3",
            Some(with_phone(
                proto::PatientRecord {
                    last_name: Some("Волков".into()),
                    first_name: Some("Илья".into()),
                    emails: vec![email("volkovy@mail.ru")],
                    ..adult()
                },
                "79220000000",
            )),
        ),
        (
            "qms",
            "4",
            Some(with_phone(
                proto::PatientRecord {
                    last_name: Some("Волков".into()),
                    first_name: Some("Иван".into()),
                    emails: vec![email("volkovy@mail.ru")],
                    ..adult()
                },
                "79220000000",
            )),
        ),
        // Double surname against one half, shared e-mail.
        (
            "qms",
            "5",
            Some(proto::PatientRecord {
                last_name: Some("Белова-Орлова".into()),
                first_name: Some("Мария".into()),
                middle_name: Some("Петровна".into()),
                sex: Some(proto::Sex::Female),
                emails: vec![email("m.belova@ya.ru")],
                ..adult()
            }),
        ),
        (
            "infoclinica",
            "5",
            Some(proto::PatientRecord {
                last_name: Some("Белова".into()),
                first_name: Some("Мария".into()),
                middle_name: Some("Петровна".into()),
                sex: Some(proto::Sex::Female),
                emails: vec![email("M.Belova@ya.ru")],
                ..adult()
            }),
        ),
    ])
    .await;
    f.drain().await;
    assert!(
        f.same(("qms", "1"), ("infoclinica", "1")).await,
        "typo + phone"
    );
    assert!(
        !f.same(("qms", "2"), ("infoclinica", "2")).await,
        "namesakes are not guessed"
    );
    assert!(!f.same(("qms", "3"), ("qms", "4")).await, "twins");
    let reviews = f.reviews().await;
    assert!(
        reviews.contains(&(
            "infoclinica".into(),
            "2".into(),
            "qms".into(),
            "2".into(),
            "score_ambiguous".into()
        )),
        "{reviews:?}"
    );
    assert!(
        !reviews.iter().any(|r| r.1 == "3" || r.3 == "4"),
        "twins are not even a review"
    );
    // Double surname: one half plus the rest is at least a review.
    assert!(f.same(("qms", "5"), ("infoclinica", "5")).await || reviews.iter().any(|r| r.1 == "5"));
}

#[tokio::test]
async fn conflicts_are_never_merged_and_chaining_is_refused() {
    let f = Fixture::new().await;
    let (s1, s2) = (snils(111_222_333), snils(444_555_666));
    f.write(vec![
        // Same passport, different SNILS: conflict, review item.
        (
            "qms",
            "1",
            Some(with_snils(with_passport(adult(), "4506", "111111"), &s1)),
        ),
        (
            "infoclinica",
            "1",
            Some(with_snils(with_passport(adult(), "4506", "111111"), &s2)),
        ),
        // Chain: A ~ B by passport, B ~ C by name, birth date and phone; C's
        // SNILS contradicts A's.
        (
            "qms",
            "10",
            Some(with_snils(
                with_passport(
                    proto::PatientRecord {
                        last_name: Some("Гусев".into()),
                        ..adult()
                    },
                    "4510",
                    "222222",
                ),
                &s1,
            )),
        ),
        (
            "infoclinica",
            "10",
            Some(with_phone(
                with_passport(
                    proto::PatientRecord {
                        last_name: Some("Гусев".into()),
                        ..adult()
                    },
                    "4510",
                    "222222",
                ),
                "79330000000",
            )),
        ),
        (
            "infoclinica",
            "11",
            Some(with_snils(
                with_phone(
                    proto::PatientRecord {
                        last_name: Some("Гусев".into()),
                        ..adult()
                    },
                    "79330000000",
                ),
                &s2,
            )),
        ),
        // Same SNILS, clearly different birth date: conflict.
        (
            "qms",
            "20",
            Some(with_snils(
                proto::PatientRecord {
                    last_name: Some("Ким".into()),
                    ..adult()
                },
                &snils(777_888_999),
            )),
        ),
        (
            "infoclinica",
            "20",
            Some(with_snils(
                proto::PatientRecord {
                    last_name: Some("Ким".into()),
                    birth_date: chrono::NaiveDate::from_ymd_opt(1950, 12, 25),
                    ..adult()
                },
                &snils(777_888_999),
            )),
        ),
    ])
    .await;
    f.drain().await;
    assert!(!f.same(("qms", "1"), ("infoclinica", "1")).await);
    assert!(f.same(("qms", "10"), ("infoclinica", "10")).await);
    assert!(
        !f.same(("infoclinica", "10"), ("infoclinica", "11")).await,
        "chain refused"
    );
    assert!(!f.same(("qms", "20"), ("infoclinica", "20")).await);
    let reasons: Vec<String> = f.reviews().await.into_iter().map(|r| r.4).collect();
    assert!(
        reasons.contains(&"document_conflict".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"chain_snils_differs".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"snils_conflict".to_string()),
        "{reasons:?}"
    );
    assert_eq!(
        f.count("SELECT count(*) FROM (SELECT m.person_id FROM person_memberships m JOIN source_records s USING (source, source_id) WHERE m.valid_to IS NULL AND s.snils_valid GROUP BY 1 HAVING count(DISTINCT s.snils) > 1) x").await,
        0
    );
}

#[tokio::test]
async fn a_document_change_splits_and_a_delete_leaves_nothing_destroyed() {
    let f = Fixture::new().await;
    f.write(vec![
        ("qms", "1", Some(with_passport(adult(), "4510", "333333"))),
        (
            "infoclinica",
            "1",
            Some(with_passport(adult(), "4510", "333333")),
        ),
        (
            "infoclinica",
            "2",
            Some(with_passport(adult(), "4510", "333333")),
        ),
    ])
    .await;
    f.drain().await;
    let person = f.person("qms", "1").await.unwrap();
    assert!(f.same(("qms", "1"), ("infoclinica", "1")).await);
    assert!(f.same(("qms", "1"), ("infoclinica", "2")).await);
    // infoclinica:2 gets another passport of the same period: it leaves.
    f.write(vec![(
        "infoclinica",
        "2",
        Some(with_passport(adult(), "4511", "444444")),
    )])
    .await;
    f.drain().await;
    assert_eq!(
        f.person("qms", "1").await,
        Some(person),
        "the person id is stable"
    );
    assert_eq!(f.person("infoclinica", "1").await, Some(person));
    let moved = f.person("infoclinica", "2").await.unwrap();
    assert_ne!(moved, person);
    assert_eq!(
        f.count("SELECT count(*) FROM match_audit WHERE action = 'moved' AND source_id = '2'")
            .await,
        1
    );
    // The old membership is kept as history.
    assert_eq!(
        f.count("SELECT count(*) FROM person_memberships WHERE source = 'infoclinica' AND source_id = '2'").await,
        2
    );
    // Deleting infoclinica:2 closes its membership and retires its person.
    f.write(vec![("infoclinica", "2", None)]).await;
    f.drain().await;
    assert_eq!(f.person("infoclinica", "2").await, None);
    let retired: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT retired_at FROM persons WHERE person_id = $1")
            .bind(moved)
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert!(retired.is_some(), "retired, not deleted");
    // Coming back with the shared passport rejoins.
    f.write(vec![(
        "infoclinica",
        "2",
        Some(with_passport(adult(), "4510", "333333")),
    )])
    .await;
    f.drain().await;
    assert_eq!(f.person("infoclinica", "2").await, Some(person));
    // The record's whole history, in order: its placements come from its
    // memberships, the removal from the audit's own rows (the view
    // `match_audit` reads both).
    let history: Vec<(String, Option<i64>, Option<i64>, bool)> = sqlx::query_as(
        "SELECT action, person_id, other_person_id, detail ? 'rule' FROM match_audit
         WHERE source = 'infoclinica' AND source_id = '2' ORDER BY id",
    )
    .fetch_all(&f.pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![
            ("assigned".into(), Some(person), None, true),
            ("moved".into(), Some(moved), Some(person), true),
            ("record_removed".into(), Some(moved), None, false),
            ("assigned".into(), Some(person), None, true),
        ]
    );
    // The audit log is append-only; a membership, part of it, can only be
    // closed, once; persons are retired, never deleted (memberships refer
    // to them without a foreign key); operator decisions are revoked,
    // never deleted.
    for sql in [
        "DELETE FROM match_audit",
        "DELETE FROM match_audit_events",
        "TRUNCATE match_audit_events",
        "DELETE FROM person_memberships",
        "TRUNCATE person_memberships",
        "UPDATE person_memberships SET person_id = person_id + 1",
        "UPDATE person_memberships SET rule = 'operator_or_alone' WHERE valid_to IS NULL",
        "UPDATE person_memberships SET valid_to = now() WHERE valid_to IS NOT NULL",
        "UPDATE person_memberships SET valid_to = NULL WHERE valid_to IS NOT NULL",
        "DELETE FROM persons WHERE person_id = 1",
        "TRUNCATE persons CASCADE",
        "DELETE FROM match_decisions",
        "TRUNCATE match_decisions",
    ] {
        assert!(sqlx::query(sql).execute(&f.pool).await.is_err(), "{sql}");
    }
}

#[tokio::test]
async fn operator_decisions_override_rules_and_survive_rematches() {
    let f = Fixture::new().await;
    let rec = |s: &str, i: &str| (s.to_string(), i.to_string());
    f.write(vec![
        ("qms", "1", Some(with_passport(adult(), "4510", "555555"))),
        (
            "infoclinica",
            "1",
            Some(with_passport(adult(), "4510", "555555")),
        ),
        (
            "qms",
            "2",
            Some(proto::PatientRecord {
                last_name: Some("Лебедев".into()),
                ..adult()
            }),
        ),
        (
            "infoclinica",
            "2",
            Some(proto::PatientRecord {
                last_name: Some("Лебедев".into()),
                ..adult()
            }),
        ),
        (
            "qms",
            "3",
            Some(with_snils(
                proto::PatientRecord {
                    last_name: Some("Егоров".into()),
                    ..adult()
                },
                &snils(222_333_444),
            )),
        ),
        (
            "infoclinica",
            "3",
            Some(proto::PatientRecord {
                last_name: Some("Сорокин".into()),
                ..adult()
            }),
        ),
    ])
    .await;
    f.drain().await;
    assert!(f.same(("qms", "1"), ("infoclinica", "1")).await);
    let e = &f.engine;
    // Keep apart what a rule linked.
    matcher::operator::decide(
        e,
        &f.pool,
        "keep_apart",
        &rec("qms", "1"),
        &rec("infoclinica", "1"),
        "tester",
        None,
    )
    .await
    .unwrap();
    assert!(!f.same(("qms", "1"), ("infoclinica", "1")).await);
    // Resolve the namesake review item as "link".
    let item: i64 = sqlx::query_scalar(
        "SELECT id FROM review_items WHERE status = 'open' AND a_source_id = '2'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    matcher::operator::resolve(e, &f.pool, item, "link", "tester")
        .await
        .unwrap();
    assert!(f.same(("qms", "2"), ("infoclinica", "2")).await);
    assert_eq!(
        f.count("SELECT count(*) FROM review_items WHERE status = 'open'")
            .await,
        0
    );
    // Lock the person of qms:3, then change infoclinica:3 so that a rule
    // would link it: the lock holds.
    let locked = f.person("qms", "3").await.unwrap();
    matcher::operator::set_lock(e, &f.pool, locked, true, "tester")
        .await
        .unwrap();
    f.write(vec![(
        "infoclinica",
        "3",
        Some(with_snils(
            proto::PatientRecord {
                last_name: Some("Егоров".into()),
                ..adult()
            },
            &snils(222_333_444),
        )),
    )])
    .await;
    f.drain().await;
    assert!(!f.same(("qms", "3"), ("infoclinica", "3")).await, "locked");
    assert!(f.reviews().await.iter().any(|r| r.4 == "locked_person"));

    // Changes to the records and a full re-match keep every decision.
    f.write(vec![
        (
            "qms",
            "1",
            Some(with_phone(
                with_passport(adult(), "4510", "555555"),
                "79001112233",
            )),
        ),
        (
            "infoclinica",
            "2",
            Some(with_phone(
                proto::PatientRecord {
                    last_name: Some("Лебедев".into()),
                    ..adult()
                },
                "79001112299",
            )),
        ),
    ])
    .await;
    f.drain().await;
    let before = f.partition().await;
    let reviews = f.reviews().await;
    let applied = e.rematch_all(&f.pool).await.unwrap();
    assert_eq!(applied.moved, 0, "a full re-match moves nothing");
    assert_eq!(f.partition().await, before);
    assert_eq!(f.reviews().await, reviews);
    assert!(!f.same(("qms", "1"), ("infoclinica", "1")).await);
    assert!(f.same(("qms", "2"), ("infoclinica", "2")).await);
    assert_eq!(f.person("qms", "3").await, Some(locked));
    // Unlocking lets the rule apply.
    matcher::operator::set_lock(e, &f.pool, locked, false, "tester")
        .await
        .unwrap();
    assert!(f.same(("qms", "3"), ("infoclinica", "3")).await);
    assert!(
        f.count("SELECT count(*) FROM match_audit WHERE actor = 'tester'")
            .await
            >= 4
    );
}

/// Two persons whose records are namesakes of each other pair by pair (four
/// review pairs) are one question for a steward: one item, the strongest
/// pair; kept apart, no item between them any more, also after a re-match.
#[tokio::test]
async fn one_review_item_per_pair_of_persons() {
    let f = Fixture::new().await;
    let namesake = || proto::PatientRecord {
        last_name: Some("Зайцев".into()),
        ..adult()
    };
    let by_passport = || with_passport(namesake(), "4510", "555555");
    let by_snils = || with_snils(namesake(), &snils(222_333_444));
    f.write(vec![
        ("qms", "1", Some(by_passport())),
        ("qms", "2", Some(by_passport())),
        ("infoclinica", "1", Some(by_snils())),
        ("infoclinica", "2", Some(by_snils())),
    ])
    .await;
    f.drain().await;
    assert!(f.same(("qms", "1"), ("qms", "2")).await);
    assert!(f.same(("infoclinica", "1"), ("infoclinica", "2")).await);
    assert!(!f.same(("qms", "1"), ("infoclinica", "1")).await);
    let pairs = f
        .count("SELECT count(*) FROM match_pairs WHERE decision = 'review'")
        .await;
    assert_eq!(pairs, 4, "every namesake pair is scored and kept");
    let reviews = f.reviews().await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    f.assert_equals_a_rematch().await;

    let item: i64 = sqlx::query_scalar("SELECT id FROM review_items WHERE status = 'open'")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    matcher::operator::resolve(&f.engine, &f.pool, item, "keep_apart", "tester")
        .await
        .unwrap();
    assert!(f.reviews().await.is_empty());
    // A new namesake record of the second person brings no new question.
    f.write(vec![("infoclinica", "3", Some(by_snils()))]).await;
    f.drain().await;
    assert!(f.same(("infoclinica", "1"), ("infoclinica", "3")).await);
    assert!(!f.same(("qms", "1"), ("infoclinica", "3")).await);
    assert!(f.reviews().await.is_empty());
    f.assert_equals_a_rematch().await;
}

#[tokio::test]
async fn incremental_matching_equals_a_full_rematch() {
    let f = Fixture::new().await;
    let records = truth(11, 1500);
    // In three rounds, then changes and deletes of some records.
    for chunk in records.chunks(records.len() / 3 + 1) {
        f.write(
            chunk
                .iter()
                .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
                .collect(),
        )
        .await;
        f.drain().await;
    }
    let mut changes = Vec::new();
    for t in records.iter().step_by(37) {
        let mut r = t.record.clone();
        r.documents.clear();
        r.phones.clear();
        changes.push((t.source, t.source_id.as_str(), Some(r)));
    }
    for t in records.iter().skip(5).step_by(53) {
        changes.push((t.source, t.source_id.as_str(), None));
    }
    changes.sort_by_key(|c| (c.0, c.1));
    changes.dedup_by_key(|c| (c.0, c.1));
    f.write(changes).await;
    f.drain().await;
    let incremental = f.partition().await;
    let reviews = f.reviews().await;
    let live = f
        .count("SELECT count(*) FROM source_records WHERE deleted_at IS NULL")
        .await;
    assert_eq!(
        incremental.iter().map(|p| p.len() as i64).sum::<i64>(),
        live,
        "every live record has a person"
    );

    let applied = f.engine.rematch_all(&f.pool).await.unwrap();
    assert_eq!(f.partition().await, incremental);
    assert_eq!(f.reviews().await, reviews);
    assert_eq!(applied.moved, 0);
    assert_eq!(applied.persons_created, 0);

    // And from scratch in another database: the same persons.
    let g = Fixture::new().await;
    let rows: Vec<_> = records
        .iter()
        .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
        .collect();
    g.write(rows).await;
    g.engine.rematch_all(&g.pool).await.unwrap();
    let fresh = g.partition().await;
    let h = Fixture::new().await;
    h.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    h.drain().await;
    assert_eq!(
        h.partition().await,
        fresh,
        "incremental from scratch = full re-match"
    );
}

/// Applies every pending change in batches of at most `limit`.
async fn drain_by(f: &Fixture, limit: i64) -> u64 {
    let mut batches = 0;
    while f
        .engine
        .process_batch(&f.pool, limit)
        .await
        .unwrap()
        .unwrap()
        .changes
        > 0
    {
        batches += 1;
    }
    batches
}

#[tokio::test]
async fn large_and_small_batches_equal_a_full_rematch() {
    let records = truth(13, 1500);
    let mut changes = Vec::new();
    for t in records.iter().step_by(29) {
        let mut r = t.record.clone();
        r.documents.clear();
        r.snils = None;
        changes.push((t.source, t.source_id.as_str(), Some(r)));
    }
    for t in records.iter().skip(3).step_by(41) {
        changes.push((t.source, t.source_id.as_str(), None));
    }
    changes.sort_by_key(|c| (c.0, c.1));
    changes.dedup_by_key(|c| (c.0, c.1));
    let first = || {
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect::<Vec<_>>()
    };

    // The backlog path: everything in one batch, then every change in one.
    let large = Fixture::new().await;
    large.write(first()).await;
    assert_eq!(drain_by(&large, 1_000_000).await, 1);
    large.write(changes.clone()).await;
    assert_eq!(drain_by(&large, 1_000_000).await, 1);
    // The idle path: a few records per batch.
    let small = Fixture::new().await;
    small.write(first()).await;
    drain_by(&small, 25).await;
    small.write(changes.clone()).await;
    drain_by(&small, 25).await;
    assert!(
        small.engine.prepared_used() > 0,
        "small full batches take their pairs prepared while the one before wrote"
    );
    // A full re-match of the final records in a third database.
    let full = Fixture::new().await;
    full.write(first()).await;
    full.write(changes.clone()).await;
    full.engine.rematch_all(&full.pool).await.unwrap();

    let expected = full.partition().await;
    let live = full
        .count("SELECT count(*) FROM source_records WHERE deleted_at IS NULL")
        .await;
    assert_eq!(expected.iter().map(|p| p.len() as i64).sum::<i64>(), live);
    for f in [&large, &small] {
        assert_eq!(f.partition().await, expected);
        let reviews = f.reviews().await;
        let applied = f.engine.rematch_all(&f.pool).await.unwrap();
        assert_eq!(applied.moved, 0);
        assert_eq!(f.reviews().await, reviews);
    }
    assert_eq!(large.reviews().await, small.reviews().await);
    assert_eq!(large.reviews().await, full.reviews().await);
}

#[tokio::test]
async fn evaluation_of_a_generated_set() {
    let f = Fixture::new().await;
    let records = truth(42, 2000);
    f.write(
        records
            .iter()
            .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
            .collect(),
    )
    .await;
    f.drain().await;
    let report = matcher::evaluate::evaluate(&f.pool, &truth_rows(&records))
        .await
        .unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.twin_pairs_merged, 0);
    assert_eq!(report.namesake_pairs_merged, 0);
    assert_eq!(report.persons_with_conflicting_snils, 0);
    assert!(report.precision >= 0.99, "{report:?}");
    assert!(report.recall >= 0.95, "{report:?}");
    assert!(report.review_queue_percent < 2.0, "{report:?}");
    // Same seed, same figures.
    let again = matcher::evaluate::evaluate(&f.pool, &truth_rows(&truth(42, 2000)))
        .await
        .unwrap();
    assert_eq!(again, report);
}

/// Some records, then `qms:b` turned from one person into another (its
/// blocking keys all change), with the change left pending.
async fn b_becomes_someone_else(f: &Fixture) {
    f.write_b_and_others(17).await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "b2")).await);
    f.write(vec![("qms", "b", Some(other_adult()))]).await;
}

#[tokio::test]
async fn a_rematch_by_another_process_makes_the_instance_rebuild_its_index() {
    let f = Fixture::new().await;
    b_becomes_someone_else(&f).await;
    // Another process re-matches: it consumes b's change, which this
    // instance's index has not seen (b is still under its old keys there).
    let other = matcher::service::engine(&rules_settings());
    other.rematch_all(&f.pool).await.unwrap();
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 0);
    // A new record of b's new person must find b.
    f.write(vec![("infoclinica", "a", Some(other_adult()))])
        .await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "a")).await);
    assert!(!f.same(("qms", "b"), ("infoclinica", "b2")).await);
    f.assert_equals_a_rematch().await;
}

#[tokio::test]
async fn a_standby_taking_over_rebuilds_its_index() {
    let f = Fixture::new().await;
    b_becomes_someone_else(&f).await;
    // The other instance applies b's change (this one is standing by)...
    let other = matcher::service::engine(&rules_settings());
    f.drain_with(&other).await;
    // ...then this one takes over again: its index is a generation behind.
    f.write(vec![("infoclinica", "a", Some(other_adult()))])
        .await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "a")).await);
    // And back: the other one rebuilds too.
    f.write(vec![(
        "infoclinica",
        "b3",
        Some(with_passport(adult(), "4510", "111111")),
    )])
    .await;
    f.drain_with(&other).await;
    assert!(f.same(("infoclinica", "b2"), ("infoclinica", "b3")).await);
    f.assert_equals_a_rematch().await;
}

/// Makes every batch fail (or pass again) after the index was changed, at
/// the memberships, with an error no change is blamed for (XX000: the whole
/// batch fails; a data error would set the changes aside,
/// `tests/quarantine.rs`).
async fn fail_batches(f: &Fixture, fail: bool) {
    let sql: &[&'static str] = if fail {
        &[
            "CREATE OR REPLACE FUNCTION fail_batch() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected failure' USING ERRCODE = 'XX000'; END $$",
            "CREATE TRIGGER fail_batch BEFORE INSERT ON person_memberships
             FOR EACH STATEMENT EXECUTE FUNCTION fail_batch()",
        ]
    } else {
        &["DROP TRIGGER fail_batch ON person_memberships"]
    };
    for &sql in sql {
        sqlx::query(sql).execute(&f.pool).await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_batch_leaves_the_index_equal_to_the_database() {
    let f = Fixture::new().await;
    b_becomes_someone_else(&f).await;
    f.write(vec![("infoclinica", "a", Some(other_adult()))])
        .await;
    fail_batches(&f, true).await;
    assert!(f.engine.process_batch(&f.pool, 500).await.is_err());
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 2);
    fail_batches(&f, false).await;
    // Only a's change now (b's is applied by another instance): this
    // instance's index must not keep what the failed batch did.
    let other = matcher::service::engine(&rules_settings());
    other.process_batch(&f.pool, 1).await.unwrap().unwrap();
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "a")).await);
    // The same after a failure with nobody else in between.
    f.write(vec![
        ("qms", "b", Some(with_passport(adult(), "4510", "111111"))),
        ("infoclinica", "a", None),
    ])
    .await;
    fail_batches(&f, true).await;
    assert!(f.engine.process_batch(&f.pool, 500).await.is_err());
    fail_batches(&f, false).await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "b2")).await);
    assert_eq!(f.person("infoclinica", "a").await, None);
    f.assert_equals_a_rematch().await;
}

/// A record without matching state (no pair, review item or person: a new
/// one, mostly) is matched without looking that state up; the blocking
/// index knows which records may have some. These are records that do
/// have state, which must be looked up: records whose change waits while
/// the index is rebuilt (a person of one record; one deleted, then written
/// again after the rebuild; a namesake's review partner); and new records
/// an operator named before they were matched (by `etl persons link`,
/// which gives them a person at once, and by SQL). Debug builds check in
/// every batch that the records it did not look up have no state.
#[tokio::test]
async fn records_with_state_are_looked_up() {
    let f = Fixture::new().await;
    let alone = || {
        with_passport(
            proto::PatientRecord {
                last_name: Some("Сидоров".into()),
                first_name: Some("Игорь".into()),
                birth_date: chrono::NaiveDate::from_ymd_opt(1961, 7, 9),
                ..adult()
            },
            "4001",
            "333333",
        )
    };
    f.write(vec![("qms", "s1", Some(alone()))]).await;
    f.write_b_and_others(23).await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "b2")).await);
    let s1 = f.person("qms", "s1").await.expect("a person of its own");

    // b2 deleted; the index rebuilt (another instance worked) while that
    // delete is still pending: the test holds a row lock on the change, so
    // the batch that rebuilds claims only x1.
    // s1 (a person of one record) changes at the same time.
    f.write(vec![
        ("infoclinica", "b2", None),
        ("qms", "s1", Some(with_phone(alone(), "+79161234567"))),
    ])
    .await;
    f.write(vec![("infoclinica", "x1", Some(other_adult()))])
        .await;
    stale_index(&f).await;
    assert_eq!(one_batch_while_waiting(&f, &["b2", "s1"]).await, 1);
    // b2 back: still b's person (found through its old membership).
    f.write(vec![(
        "infoclinica",
        "b2",
        Some(with_passport(adult(), "4510", "111111")),
    )])
    .await;
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "b2")).await);
    assert_eq!(f.person("qms", "s1").await, Some(s1), "s1 keeps its person");

    // New records named by an operator before the matcher saw them: n1
    // linked (it has a person at once), n2 (which the document rule would
    // link) kept apart by SQL.
    let b_again = || Some(with_passport(adult(), "4510", "111111"));
    f.write(vec![
        ("infoclinica", "n1", b_again()),
        ("infoclinica", "n2", b_again()),
    ])
    .await;
    matcher::operator::decide(
        &f.engine,
        &f.pool,
        "link",
        &("infoclinica".into(), "n1".into()),
        &("qms".into(), "b".into()),
        "test",
        None,
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO match_decisions (kind, a_source, a_source_id, b_source, b_source_id, actor)
         VALUES ('keep_apart', 'infoclinica', 'n2', 'qms', 'b', 'test')",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    f.drain().await;
    assert!(f.same(("qms", "b"), ("infoclinica", "n1")).await);
    assert!(!f.same(("qms", "b"), ("infoclinica", "n2")).await);

    // A record with a pair and no person: z2's change waits while z1's
    // batch (with an index rebuilt when both were stored) finds it as a
    // namesake (a review pair); the index is rebuilt again before z2's
    // change is matched.
    let zaytsev = || proto::PatientRecord {
        last_name: Some("Зайцев".into()),
        ..adult()
    };
    f.write(vec![
        ("qms", "z1", Some(zaytsev())),
        ("infoclinica", "z2", Some(zaytsev())),
    ])
    .await;
    stale_index(&f).await;
    assert_eq!(one_batch_while_waiting(&f, &["z2"]).await, 1);
    assert_eq!(f.person("infoclinica", "z2").await, None);
    assert_eq!(
        f.count("SELECT count(*) FROM match_pairs WHERE b_source_id = 'z2' OR a_source_id = 'z2'")
            .await,
        1
    );
    stale_index(&f).await;
    f.drain().await;
    assert!(!f.same(("qms", "z1"), ("infoclinica", "z2")).await);
    assert_eq!(f.count("SELECT count(*) FROM record_changes").await, 0);
    assert_eq!(f.count("SELECT count(*) FROM dead_letters").await, 0);
    f.assert_equals_a_rematch().await;
}

/// Makes this instance's index stale, as another instance's work would:
/// its next batch rebuilds it.
async fn stale_index(f: &Fixture) {
    sqlx::query("UPDATE match_state SET generation = generation + 1")
        .execute(&f.pool)
        .await
        .unwrap();
}

/// Applies one batch while the changes of the records `waiting` wait (the
/// test sets their rows aside and puts them back, ids unchanged); the
/// changes applied.
async fn one_batch_while_waiting(f: &Fixture, waiting: &[&str]) -> u64 {
    sqlx::query("CREATE TABLE IF NOT EXISTS waiting_changes (LIKE record_changes)")
        .execute(&f.pool)
        .await
        .unwrap();
    sqlx::query(
        "WITH w AS (DELETE FROM record_changes WHERE source_id = ANY($1) RETURNING *)
         INSERT INTO waiting_changes SELECT * FROM w",
    )
    .bind(waiting)
    .execute(&f.pool)
    .await
    .unwrap();
    let applied = f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    sqlx::query(
        "WITH w AS (DELETE FROM waiting_changes RETURNING *)
         INSERT INTO record_changes OVERRIDING SYSTEM VALUE SELECT * FROM w",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    applied.changes
}

/// A row read ahead (outside the batch) is used only if it holds the
/// content of the newest change the batch claimed for its record: a record
/// changed or deleted after the read-ahead is read again in the batch.
#[tokio::test]
async fn records_changed_after_the_read_ahead_are_read_again() {
    let f = Fixture::new().await;
    let mut rows: Vec<(&str, String, Option<proto::PatientRecord>)> = common::truth(41, 60)
        .into_iter()
        .map(|t| (t.source, t.source_id, Some(t.record)))
        .collect();
    rows.push((
        "qms",
        "a".into(),
        Some(with_passport(adult(), "4510", "777777")),
    ));
    rows.push((
        "infoclinica",
        "b".into(),
        Some(with_passport(adult(), "4510", "777777")),
    ));
    rows.push((
        "qms",
        "c".into(),
        Some(with_passport(adult(), "4512", "888888")),
    ));
    f.write(
        rows.iter()
            .map(|(s, i, r)| (*s, i.as_str(), r.clone()))
            .collect(),
    )
    .await;
    // Read ahead as the rows are now; then b takes another passport (as a
    // stale row it would join a) and c is deleted.
    f.engine.read_ahead(&f.pool, 0, 10_000).await;
    f.write(vec![
        (
            "infoclinica",
            "b",
            Some(with_passport(adult(), "4510", "999999")),
        ),
        ("qms", "c", None),
    ])
    .await;
    f.drain().await;
    assert!(f.person("qms", "a").await.is_some());
    assert_ne!(
        f.person("qms", "a").await,
        f.person("infoclinica", "b").await
    );
    assert_eq!(f.person("qms", "c").await, None);
    let unchanged = rows.len() as u64 - 2;
    assert_eq!(
        f.engine.read_ahead_used(),
        unchanged,
        "the unchanged records come from the read-ahead"
    );
    // And the result is the full re-match's.
    assert_eq!(f.engine.rematch_all(&f.pool).await.unwrap().moved, 0);
}

/// Ten new truth records as rows to write.
fn rows_of(
    records: &[synth::truth::TruthRecord],
) -> Vec<(&str, &str, Option<proto::PatientRecord>)> {
    records
        .iter()
        .map(|t| (t.source, t.source_id.as_str(), Some(t.record.clone())))
        .collect()
}

/// While a full batch writes, the next batch's pairs are computed from its
/// records read ahead. The next batch uses them only if it claimed exactly
/// those records, each with the content that was read: here `b` changed
/// again before the read-ahead, so the row read holds a newer content than
/// the change the batch claims, and the batch computes its pairs itself.
#[tokio::test]
async fn prepared_pairs_are_used_only_when_they_fit_the_claim() {
    let f = Fixture::new().await;
    let records = truth(29, 40);
    // Changes 1–10, then a, b and 8 more (11–20), then b again (21).
    f.write(rows_of(&records[..10])).await;
    let mut second = rows_of(&records[10..18]);
    second.push(("qms", "a", Some(with_passport(adult(), "4510", "777777"))));
    second.push((
        "infoclinica",
        "b",
        Some(with_passport(other_adult(), "4512", "888888")),
    ));
    f.write(second).await;
    f.write(vec![(
        "infoclinica",
        "b",
        Some(with_passport(adult(), "4510", "777777")),
    )])
    .await;
    // Batch 1 prepares 11–20 with b's newest row; batch 2 claims b's older
    // change: not used.
    f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    assert_eq!(f.engine.prepared_used(), 0);
    assert!(f.same(("qms", "a"), ("infoclinica", "b")).await);
    drain_by(&f, 10).await;
    assert!(f.same(("qms", "a"), ("infoclinica", "b")).await);
    // Nothing changes in between: used.
    f.write(rows_of(&records[18..])).await;
    drain_by(&f, 10).await;
    assert!(f.engine.prepared_used() >= 10);
    f.assert_equals_a_rematch().await;
}

/// While the loader writes, a read-ahead often finds fewer changes than a
/// batch claims. The next batch then claims only the changes read ahead,
/// so that the pairs prepared for them are used, and the batch after it
/// is read ahead again.
#[tokio::test]
async fn a_batch_stops_at_the_changes_its_prepared_half_read() {
    let f = Fixture::new().await;
    let records = truth(37, 40);
    // Changes 1–10, and 11–15 before batch 1 reads ahead.
    f.write(rows_of(&records[..15])).await;
    let first = f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    assert_eq!((first.changes, first.backlog), (10, true));
    // 16–25 arrive after the read-ahead.
    f.write(rows_of(&records[15..25])).await;
    let second = f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    assert_eq!(
        (second.changes, second.backlog),
        (5, true),
        "the batch claimed the five changes read ahead, and reads on"
    );
    assert_eq!(f.engine.prepared_used(), 5);
    let third = f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    assert_eq!(third.changes, 10);
    assert_eq!(f.engine.prepared_used(), 15);
    drain_by(&f, 10).await;
    f.assert_equals_a_rematch().await;
}

/// The change feed is read by statements planned at each run, never by a
/// plan the session cached while the feed was empty (a sequential scan and
/// a sort of the whole backlog: `matcher::queue`): after idle polls and
/// batches, no session of the pool holds a prepared statement that reads
/// `record_changes` (the loader's insert into it may be).
#[tokio::test]
async fn the_change_feed_is_never_read_by_a_cached_plan() {
    let f = Fixture::new().await;
    for _ in 0..8 {
        f.engine.process_batch(&f.pool, 10).await.unwrap().unwrap();
    }
    let records = truth(41, 60);
    f.write(rows_of(&records[..30])).await;
    drain_by(&f, 10).await;
    f.write(rows_of(&records[30..])).await;
    drain_by(&f, 10).await;
    let mut sessions = Vec::new();
    while let Ok(Ok(conn)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), f.pool.acquire()).await
    {
        sessions.push(conn);
    }
    assert!(!sessions.is_empty());
    for conn in &mut sessions {
        // The pattern is split so that this statement does not match itself.
        let cached: Vec<String> = sqlx::query_scalar(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%FROM record' || '_changes%'",
        )
        .fetch_all(&mut **conn)
        .await
        .unwrap();
        assert!(cached.is_empty(), "cached plans over the feed: {cached:?}");
    }
}

/// A batch that fails while the next one's pairs were being prepared
/// undoes both in the blocking index, the next one's first (they were made
/// on top of the failed one's).
#[tokio::test]
async fn a_failed_batch_undoes_the_next_batch_prepared_on_it() {
    let f = Fixture::new().await;
    let records = truth(31, 40);
    f.write(rows_of(&records[..20])).await;
    f.drain().await;
    let (_, keys_before, _) = f.engine.index_size().await;
    f.write(rows_of(&records[20..])).await;
    assert!(f.count("SELECT count(*) FROM record_changes").await >= 20);
    fail_batches(&f, true).await;
    assert!(f.engine.process_batch(&f.pool, 10).await.is_err());
    assert_eq!(
        f.engine.index_size().await.1,
        keys_before,
        "the index holds no key of the failed batch or of the next one"
    );
    fail_batches(&f, false).await;
    drain_by(&f, 10).await;
    assert!(f.engine.prepared_used() > 0);
    f.assert_equals_a_rematch().await;
}
