//! The guard without a browser: a signed-out request goes to sign-in, a
//! form without the CSRF token is refused, a viewer cannot decide, a wrong
//! password signs nobody in.

use crate::support::{client, Console, STEWARD, VIEWER};

async fn open_items(console: &Console) -> i64 {
    let ids: Vec<i64> = console.pairs.iter().map(|p| p.item).collect();
    sqlx::query_scalar("SELECT count(*) FROM review_items WHERE status = 'open' AND id = ANY($1)")
        .bind(ids)
        .fetch_one(&console.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_the_signed_out_the_forged_and_the_viewer() {
    let console = Console::start().await;
    let http = client();
    let item = console.pairs[0].item;
    let resolve_path = format!("/items/{item}/resolve");
    let resolve = console.url(&resolve_path);

    // `/console/` and `/console` lead to the queue.
    for path in ["/", ""] {
        let r = http.get(console.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/console/queue");
    }

    // Signed out: to sign-in, for pages and for actions.
    for r in [
        http.get(console.url("/queue")).send().await.unwrap(),
        http.get(console.url("/persons/1")).send().await.unwrap(),
        http.post(&resolve)
            .form(&[("resolution", "link")])
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/console/signin");
    }
    let wrong = http
        .post(console.url("/signin"))
        .form(&[("name", STEWARD), ("password", "not the password")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // A forged form: the steward's cookie, no or a wrong CSRF token.
    let (cookie, csrf) = console.session(STEWARD).await;
    for form in [
        vec![("resolution", "link")],
        vec![
            ("resolution", "link"),
            ("csrf", "0".repeat(64).leak() as &str),
        ],
    ] {
        let r = console.post(&cookie, &resolve_path, &form).await;
        assert_eq!(r.status(), 403);
    }
    assert_eq!(open_items(&console).await, 3);

    // A viewer, with its own valid token, cannot decide.
    let (viewer_cookie, viewer_csrf) = console.session(VIEWER).await;
    let r = console
        .post(
            &viewer_cookie,
            &resolve_path,
            &[("resolution", "link"), ("csrf", &viewer_csrf)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(open_items(&console).await, 3);

    // The steward with the token decides.
    let r = console
        .post(
            &cookie,
            &resolve_path,
            &[("resolution", "keep_apart"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(open_items(&console).await, 2);
}
