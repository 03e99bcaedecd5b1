//! The overview shows the figures it claims: known review items resolved
//! today and yesterday by named stewards, dead letters and waiting changes
//! seeded, persons and cross-system persons as the test's pairs give them.

use crate::support::{text_of, Console, STEWARD, VIEWER};

/// The open items the queue chart shows for `day` (`YYYY-MM-DD`).
fn open_on(page: &str, day: &str) -> Option<i64> {
    let at = page.find(&format!("data-day=\"{day}\""))?;
    let num = at + page[at..].find("class=\"num\">")? + 12;
    page[num..].split('<').next()?.trim().parse().ok()
}

async fn exec(console: &Console, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&console.pool)
        .await
        .expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_seeded_figures() {
    let console = Console::start().await;
    let (cookie, csrf) = console.session(STEWARD).await;

    // Item 0 resolved in the console today by the steward; item 1 closed
    // yesterday by another steward (as the matcher's operator records it);
    // item 2 stays open.
    let [p0, p1, _] = &console.pairs[..] else {
        panic!("three pairs")
    };
    let r = console
        .post(
            &cookie,
            &format!("/items/{}/resolve", p0.item),
            &[("resolution", "keep_apart"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    exec(
        &console,
        &format!(
            "UPDATE review_items SET status = 'resolved', resolution = 'link', resolved_by = 'boris',
             created_at = now() - interval '2 days', closed_at = now() - interval '1 day' WHERE id = {}",
            p1.item
        ),
    )
    .await;
    // Two dead letters waiting, one already dropped.
    for (seq, status) in [(1, "open"), (2, "open"), (3, "dropped")] {
        exec(
            &console,
            &format!(
                "INSERT INTO dead_letters (stream, stream_seq, subject, reason_code, reason, payload, delivered, status)
                 VALUES ('T', {seq}, 't', 'x', 'x', '', 1, '{status}')"
            ),
        )
        .await;
    }
    let waiting_before: i64 = sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(&console.pool)
        .await
        .unwrap();
    for n in 0..3 {
        exec(
            &console,
            &format!(
                "INSERT INTO record_changes (source, source_id, op, source_version, content_hash, committed_at)
                 VALUES ('qms', 'lag-{n}', 'update', 1, '\\x00', now() - interval '90 seconds')"
            ),
        )
        .await;
    }

    // The test's pairs are the only records: a pair in one person is a
    // cross-system person, every other record a person of its own.
    let mut merged = 0;
    for p in &console.pairs {
        if console.person_of(&p.a).await == console.person_of(&p.b).await {
            merged += 1;
        }
    }
    let (today, yesterday, before): (chrono::NaiveDate, chrono::NaiveDate, chrono::NaiveDate) =
        sqlx::query_as("SELECT current_date, current_date - 1, current_date - 2")
            .fetch_one(&console.pool)
            .await
            .unwrap();

    // A viewer reads the overview as well.
    let (viewer, _) = console.session(VIEWER).await;
    for cookie in [&cookie, &viewer] {
        let (status, page) = console.get(cookie, "/overview").await;
        assert_eq!(status, 200);
        let figure = |id: &str| text_of(&page, id).unwrap_or_else(|| panic!("#{id} in {page}"));
        assert_eq!(figure("persons"), (6 - merged).to_string());
        assert_eq!(figure("cross-system"), merged.to_string());
        assert_eq!(figure("dead-letters"), "2");
        assert_eq!(figure("changes-waiting"), (waiting_before + 3).to_string());
        // At the end of each day: item 2 today (0 and 2 came today, 0 is
        // resolved); none yesterday (item 1 was closed then); item 1 the
        // day before (it came two days ago).
        assert_eq!(open_on(&page, &today.to_string()), Some(1));
        assert_eq!(open_on(&page, &yesterday.to_string()), Some(0));
        assert_eq!(open_on(&page, &before.to_string()), Some(1));
        let resolved = figure("resolved");
        assert!(
            resolved.contains(&format!("{}{STEWARD}1", today.format("%d.%m.%Y"))),
            "{resolved}"
        );
        assert!(
            resolved.contains(&format!("{}boris1", yesterday.format("%d.%m.%Y"))),
            "{resolved}"
        );
    }
}
