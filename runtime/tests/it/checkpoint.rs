//! Checkpoints against the real NATS server (127.0.0.1:4222, or
//! `TEST_NATS_URL`), each test in a bucket of its own.

use async_nats::jetstream;
use etl_runtime::checkpoint::{CheckpointError, Checkpoints};

async fn bucket(test: &str) -> (jetstream::Context, String, Checkpoints) {
    let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url)
        .await
        .expect("NATS must be running: deploy/local-services.sh");
    let js = jetstream::new(client);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("ck_{test}_{}_{nanos}", std::process::id());
    let checkpoints = Checkpoints::open(&js, &name, 1).await.unwrap();
    (js, name, checkpoints)
}

/// A write applied by the server whose reply never arrived (NATS restarted,
/// the request timed out): the caller retries it with the same expected
/// revision and the same value. That is success, at the key's current
/// revision; the same retry with another value is still a conflict.
#[tokio::test]
async fn retry_of_an_applied_write_is_success() {
    let (js, name, checkpoints) = bucket("retry").await;
    let first = checkpoints.save("main", "page 1", None).await.unwrap();
    let second = checkpoints
        .save("main", "page 2", Some(first))
        .await
        .unwrap();

    // The reply of the second write was lost: the same write again.
    let again = checkpoints.save("main", "page 2", Some(first)).await;
    assert_eq!(again.unwrap(), second, "its own write, at its revision");
    let next = checkpoints.save("main", "page 3", Some(second)).await;
    assert!(next.is_ok(), "the next write goes on from that revision");

    // Another writer's value at that point is a conflict.
    let other = checkpoints.save("main", "page 9", Some(first)).await;
    assert!(
        matches!(other, Err(CheckpointError::Conflict { .. })),
        "{other:?}"
    );
    let _ = js.delete_key_value(&name).await;
}

/// The same for the first write of a key (a create).
#[tokio::test]
async fn retry_of_an_applied_create_is_success() {
    let (js, name, checkpoints) = bucket("create").await;
    let created = checkpoints.save("main", "page 1", None).await.unwrap();
    let again = checkpoints.save("main", "page 1", None).await;
    assert_eq!(again.unwrap(), created);
    let other = checkpoints.save("main", "page 2", None).await;
    assert!(
        matches!(other, Err(CheckpointError::Conflict { .. })),
        "{other:?}"
    );
    let _ = js.delete_key_value(&name).await;
}
