//! Names on the bus: subjects, source names and the message ids the stream
//! deduplicates on. The lowest layer of the crate: the envelope, batches and
//! the publisher all name things through it.

/// Subjects are `patients.<source>` (the prefix is configurable so that
/// tests and staging can share a server with production).
pub const SUBJECT_PREFIX: &str = "patients";

/// `<prefix>.<source>`.
pub fn subject(prefix: &str, source: &str) -> String {
    format!("{prefix}.{source}")
}

/// The source named by a subject under `prefix`, if it is one of ours.
pub fn source_from_subject<'a>(prefix: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(prefix)?
        .strip_prefix('.')
        .filter(|s| is_valid_source_name(s))
}

/// A source name is one subject token: 1–32 of `[a-z0-9_-]`.
pub fn is_valid_source_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The message id (`Nats-Msg-Id`) the stream deduplicates on:
/// `<source>:<source id>:<content hash, hex>`.
///
/// Known limit of content-based ids: if a record goes A → B → A within the
/// duplicate window, the second A is dropped by the server as a duplicate
/// and the record stays at B. The publish ack says so (`duplicate: true`);
/// an extractor that knows it is publishing a new change (not re-publishing
/// after a restart) must then publish again with [`revision_message_id`].
pub fn message_id(source: &str, source_id: &str, content_hash: &[u8; 32]) -> String {
    format!("{source}:{source_id}:{}", hex::encode(content_hash))
}
