//! Upgrading a database that the matcher has already written: migration
//! `20261203120001` moves a placement's reason onto its membership and
//! turns `match_audit` into a view. The history written before it must
//! read the same through the view, once, and new rows must follow it.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

const PLACEMENTS_IN_MEMBERSHIPS: i64 = 20261203120001;

#[tokio::test]
async fn history_written_before_the_placement_fold_reads_the_same_after_it() {
    let db = testkit::fresh_database().await;
    let pool = testkit::pool(&db).await;
    let before = Migrator {
        migrations: Cow::Owned(
            etl_runtime::database::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < PLACEMENTS_IN_MEMBERSHIPS)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
        table_name: etl_runtime::database::MIGRATOR.table_name.clone(),
        create_schemas: etl_runtime::database::MIGRATOR.create_schemas.clone(),
    };
    before.run(&pool).await.expect("migrations before the fold");
    // As the matcher wrote it then: qms:1 assigned to person 1, then moved
    // to person 2, each placement a membership and an audit row.
    for sql in [
        "INSERT INTO persons (locked) VALUES (false), (false)",
        "INSERT INTO person_memberships (source, source_id, person_id, valid_to) VALUES ('qms', '1', 1, now())",
        "INSERT INTO person_memberships (source, source_id, person_id) VALUES ('qms', '1', 2)",
        "INSERT INTO match_audit (actor, action, person_id, source, source_id, detail)
         VALUES ('matcher', 'assigned', 1, 'qms', '1', '{\"rule\": \"operator_or_alone\", \"new_person\": true}')",
        "INSERT INTO match_audit (actor, action, person_id, source, source_id, other_person_id, detail)
         VALUES ('matcher', 'moved', 2, 'qms', '1', 1, '{\"rule\": \"operator_or_alone\", \"new_person\": true}')",
        "INSERT INTO match_audit (actor, action, person_id) VALUES ('matcher', 'person_retired', 1)",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    let ids_before: i64 = sqlx::query_scalar(
        "SELECT greatest((SELECT max(id) FROM person_memberships), (SELECT max(id) FROM match_audit))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    etl_runtime::database::MIGRATOR
        .run(&pool)
        .await
        .expect("the fold");

    let history = || async {
        sqlx::query_as::<_, (i64, String, Option<i64>, Option<i64>)>(
            "SELECT id, action, person_id, other_person_id FROM match_audit ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let old = history().await;
    let actions: Vec<(&str, Option<i64>, Option<i64>)> = old
        .iter()
        .map(|(_, a, p, o)| (a.as_str(), *p, *o))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("assigned", Some(1), None),
            ("moved", Some(2), Some(1)),
            ("person_retired", Some(1), None),
        ],
        "the old rows, once each: the old memberships carry no reason"
    );

    // What the matcher writes now: qms:1 back to person 1 (its membership
    // is its `moved` row), and an event. Both come after the old history.
    for sql in [
        "UPDATE person_memberships SET valid_to = now() WHERE source = 'qms' AND source_id = '1' AND valid_to IS NULL",
        "INSERT INTO person_memberships (source, source_id, person_id, actor, from_person_id, rule, score)
         VALUES ('qms', '1', 1, 'matcher', 2, 'snils', 20)",
        "INSERT INTO match_audit_events (actor, action, person_id) VALUES ('matcher', 'person_retired', 2)",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    let all = history().await;
    assert_eq!(all[..3], old[..]);
    assert!(all[3..].iter().all(|(id, ..)| *id > ids_before));
    let new: Vec<(&str, Option<i64>, Option<i64>)> = all[3..]
        .iter()
        .map(|(_, a, p, o)| (a.as_str(), *p, *o))
        .collect();
    assert_eq!(
        new,
        vec![
            ("moved", Some(1), Some(2)),
            ("person_retired", Some(2), None)
        ]
    );
    // The detail as the audit wrote it (`jsonb` compares 20 and 20.0 as
    // equal numbers).
    let same: bool = sqlx::query_scalar(
        "SELECT detail = '{\"rule\": \"snils\", \"score\": 20.0}'::jsonb FROM match_audit
         WHERE action = 'moved' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(same);
}
