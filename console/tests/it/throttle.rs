//! Failed sign-ins: five for one name refuse that name (429 with
//! `Retry-After`, even with the right password) while another account
//! still signs in; twenty from one address refuse every name.

use crate::support::{client, Console, PASSWORD, STEWARD, VIEWER};

async fn sign_in(console: &Console, name: &str, password: &str) -> reqwest::Response {
    client()
        .post(console.url("/signin"))
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .expect("sign-in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_per_account_and_per_address() {
    let console = Console::start().await;
    for _ in 0..5 {
        let r = sign_in(&console, STEWARD, "not the password").await;
        assert_eq!(r.status(), 401);
    }
    let r = sign_in(&console, STEWARD, PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("set-cookie").is_none());
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 15 * 60, "{wait}");
    assert!(r.text().await.unwrap().contains("id=\"signin-failed\""));

    // Another account from the same address signs in (and stays counted
    // per address: 5 failures so far).
    assert_eq!(sign_in(&console, VIEWER, PASSWORD).await.status(), 303);
    for n in 0..15 {
        let r = sign_in(&console, &format!("nobody{n}"), "not the password").await;
        assert_eq!(r.status(), 401, "attempt {n}");
    }
    let r = sign_in(&console, VIEWER, PASSWORD).await;
    assert_eq!(r.status(), 429);
}
