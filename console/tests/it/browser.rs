//! A steward signs in, clears three review items with the keyboard, splits
//! a merged person and undoes a decision; each effect is checked in
//! PostgreSQL, the audit and the access log. A viewer sees no actions.
//! Screenshots of the queue, an item and a person go to console/docs/.

use std::time::Duration;

use fantoccini::{Client, Locator};

use crate::support::{Browser, Console, PASSWORD, STEWARD, VIEWER};

async fn sign_in(c: &Client, console: &Console, name: &str) {
    c.goto(&console.url("/signin")).await.expect("sign-in page");
    c.find(Locator::Css("#name"))
        .await
        .expect("name")
        .send_keys(name)
        .await
        .expect("typed");
    c.find(Locator::Css("#password"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("typed");
    c.find(Locator::Css("#signin"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#queue"))
        .await
        .expect("the queue after sign-in");
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&dir).expect("docs dir");
    std::fs::write(dir.join(name), png).expect("screenshot written");
}

/// The text of the element `css` selects.
async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css}'s text: {e}"))
}

async fn press(c: &Client, key: &str) {
    c.find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys(key)
        .await
        .expect("key sent");
}

/// Waits until `n` rows of the queue are done.
async fn wait_done(c: &Client, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let done = c
            .find_all(Locator::Css("#queue tr.item.done"))
            .await
            .expect("rows")
            .len();
        if done >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {n} items done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(console: &Console, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&console.pool)
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_clears_the_queue_splits_a_merge_and_undoes_a_decision() {
    testkit::abort_if_still_running("console browser test", Duration::from_secs(120));
    let console = Console::start().await;
    let browser = Browser::start().await;
    let c = &browser.client;
    sign_in(c, &console, STEWARD).await;
    screenshot(c, "queue.png").await;

    // The item page, for its screenshot (and its access-log line).
    let first = console.pairs[0].clone();
    c.goto(&console.url(&format!("/items/{}", first.item)))
        .await
        .expect("item page");
    c.find(Locator::Css("#compare mark"))
        .await
        .expect("the typo is marked");
    // The matcher's codes in the page's language (Russian by default).
    let summary = text_of(c, "p.summary").await;
    assert!(
        summary.contains("неоднозначная пара") && summary.contains("открыт"),
        "{summary}"
    );
    assert_eq!(
        text_of(c, "tr[data-field=last_name] td.level").await,
        "одна опечатка"
    );
    screenshot(c, "item.png").await;

    // Keyboard triage: link, keep apart, link (most probable first).
    c.goto(&console.url("/queue")).await.expect("queue");
    c.find(Locator::Css("#queue tr.item.current"))
        .await
        .expect("a selected row");
    press(c, "l").await;
    wait_done(c, 1).await;
    press(c, "a").await;
    wait_done(c, 2).await;
    press(c, "l").await;
    wait_done(c, 3).await;

    let open = count(
        &console,
        "SELECT count(*) FROM review_items WHERE status = 'open'",
    )
    .await;
    assert_eq!(open, 0);
    let resolutions: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, resolution, resolved_by FROM review_items ORDER BY id")
            .fetch_all(&console.pool)
            .await
            .unwrap();
    let kinds: Vec<&str> = resolutions.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(kinds, ["link", "keep_apart", "link"]);
    assert!(resolutions.iter().all(|r| r.2 == STEWARD));
    let [p0, p1, p2] = &console.pairs[..] else {
        panic!("three pairs")
    };
    assert_eq!(
        console.person_of(&p0.a).await,
        console.person_of(&p0.b).await
    );
    assert_ne!(
        console.person_of(&p1.a).await,
        console.person_of(&p1.b).await
    );
    assert_eq!(
        console.person_of(&p2.a).await,
        console.person_of(&p2.b).await
    );
    let audited = count(
        &console,
        "SELECT count(*) FROM match_audit_events WHERE action = 'decision' AND actor = 'anna'",
    )
    .await;
    assert_eq!(audited, 3);

    // Split the first merge: its Infoclinica record leaves.
    let merged = console.person_of(&p0.a).await;
    c.goto(&console.url(&format!("/persons/{merged}")))
        .await
        .expect("person page");
    screenshot(c, "person.png").await;
    let leaving = format!("{}:{}", p0.b.0, p0.b.1);
    c.find(Locator::Css(&format!(
        "input[name=leave][value='{leaving}']"
    )))
    .await
    .expect("the record's checkbox")
    .click()
    .await
    .expect("checked");
    c.find(Locator::Css("#split-preview"))
        .await
        .expect("split")
        .click()
        .await
        .expect("clicked");
    let consequence = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#consequence"))
        .await
        .expect("the consequence before confirming")
        .text()
        .await
        .unwrap();
    assert!(consequence.ends_with('1'), "{consequence}");
    c.find(Locator::Css("#split-confirm"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("clicked");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#golden"))
        .await
        .expect("person page");
    assert_ne!(
        console.person_of(&p0.a).await,
        console.person_of(&p0.b).await
    );
    let split = count(&console, "SELECT count(*) FROM match_decisions WHERE kind = 'keep_apart' AND actor = 'anna' AND note LIKE 'split of person %' AND revoked_at IS NULL").await;
    assert_eq!(split, 1);

    // Undo the third item's link on its person's page.
    let linked: i64 = sqlx::query_scalar(
        "SELECT id FROM match_decisions WHERE kind = 'link' AND a_source || ':' || a_source_id IN ($1, $2)
         AND revoked_at IS NULL",
    )
    .bind(format!("{}:{}", p2.a.0, p2.a.1))
    .bind(format!("{}:{}", p2.b.0, p2.b.1))
    .fetch_one(&console.pool)
    .await
    .expect("the link decision");
    c.goto(&console.url(&format!("/persons/{}", console.person_of(&p2.a).await)))
        .await
        .expect("person page");
    c.find(Locator::Css(&format!(
        "button.undo[data-decision='{linked}']"
    )))
    .await
    .expect("the undo button")
    .click()
    .await
    .expect("clicked");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#golden"))
        .await
        .expect("person page");
    // The person page was already shown: wait for the decision itself.
    let sql = format!(
        "SELECT count(*) FROM match_decisions WHERE id = {linked} AND revoked_at IS NOT NULL"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&console, &sql).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "decision {linked} not revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let undone = count(&console, "SELECT count(*) FROM match_audit_events WHERE action = 'decision_revoked' AND actor = 'anna'").await;
    assert_eq!(undone, 1);

    // Every page with personal data was logged: by whom, which records.
    let views: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT client, subject, records FROM personal_data_access WHERE client IS NOT NULL ORDER BY id",
    )
    .fetch_all(&console.pool)
    .await
    .unwrap();
    assert!(views.iter().all(|v| v.0 == "console:anna"), "{views:?}");
    assert!(views
        .iter()
        .any(|v| v.1 == format!("review item {}", first.item)
            && v.2.contains(&format!("{}:{}", first.a.0, first.a.1))));
    assert!(views.iter().any(|v| v.1 == format!("person {merged}")));

    // Sign out: the queue sends to sign-in again.
    c.goto(&console.url("/queue")).await.unwrap();
    c.find(Locator::Css("#signout"))
        .await
        .expect("sign-out")
        .click()
        .await
        .expect("clicked");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#signin"))
        .await
        .expect("sign-in page");
    c.goto(&console.url("/queue")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/signin"));

    // A viewer reads but has no actions.
    sign_in(c, &console, VIEWER).await;
    c.goto(&console.url(&format!("/persons/{merged}")))
        .await
        .unwrap();
    c.find(Locator::Css("#golden"))
        .await
        .expect("the viewer reads the person");
    assert!(c
        .find_all(Locator::Css("button.undo, #split-preview, #lock"))
        .await
        .unwrap()
        .is_empty());
    browser
        .client
        .clone()
        .close()
        .await
        .expect("browser closed");
}
