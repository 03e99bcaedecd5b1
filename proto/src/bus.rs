//! Subjects, the stream, message ids and publishing.
//!
//! One stream holds every source's records, one subject per source:
//! `patients.<source>`. It uses Limits retention so that it can be replayed
//! after a failure (WorkQueue or Interest retention would delete what was
//! acked), and a duplicate window that covers an extractor's restart, so that
//! re-publishing the same content is dropped by the server.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use serde::Deserialize;

use crate::batch::{self, Encoded};
use crate::envelope::Envelope;
use crate::trace::{self, TraceParent};

pub use crate::naming::{
    is_valid_source_name, message_id, source_from_subject, subject, SUBJECT_PREFIX,
};

/// A message id that also names the version: for a new change whose content
/// equals an earlier one still inside the duplicate window.
pub fn revision_message_id(envelope: &Envelope) -> String {
    format!("{}:{}", envelope.message_id(), envelope.version)
}

/// The stream, as operators configure it (`[stream]` in every service's
/// configuration file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Subjects are `<subject_prefix>.<source>`.
    pub subject_prefix: String,
    /// How long messages are kept for replay (e.g. "30d"). 0 keeps them until
    /// `max_bytes` is reached.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Largest size of the stream in bytes; oldest messages go first. -1: no limit.
    pub max_bytes: i64,
    /// How long the server remembers message ids to drop re-published
    /// content. Must cover an extractor's restart and re-run of its last page.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Copies of the stream in a NATS cluster: 3 on a three-node cluster
    /// (the stream survives the loss of one node), 1 on a single server.
    /// The buckets an extractor creates (checkpoints, sync status, the
    /// Infoclinica snapshots) take the same number; an existing stream or
    /// bucket keeps the replicas it was created with.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "PATIENTS".into(),
            subject_prefix: SUBJECT_PREFIX.into(),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: -1,
            duplicate_window: Duration::from_secs(10 * 60),
            replicas: 1,
        }
    }
}

impl StreamSettings {
    /// The subject of one source's records.
    pub fn subject(&self, source: &str) -> String {
        subject(&self.subject_prefix, source)
    }

    /// The wildcard of every source's subjects.
    pub fn all_subjects(&self) -> String {
        format!("{}.*", self.subject_prefix)
    }

    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![self.all_subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        }
    }
}

/// Creates the stream if it does not exist; an existing stream is used as is
/// (changing limits of a live stream is an operator's decision).
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    js.get_or_create_stream(settings.config()).await
}

/// Publishes an envelope on its source's subject with its message id; await
/// the returned future for the server's ack (keep many in flight).
pub async fn publish(
    js: &jetstream::Context,
    stream: &StreamSettings,
    envelope: &Envelope,
) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
    publish_with_id(js, stream, envelope, envelope.message_id()).await
}

/// Publishes with an explicit message id (see [`revision_message_id`]),
/// in a fresh trace.
pub async fn publish_with_id(
    js: &jetstream::Context,
    stream: &StreamSettings,
    envelope: &Envelope,
    message_id: String,
) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
    publish_traced(js, stream, envelope, message_id, &TraceParent::fresh()).await
}

/// Publishes with an explicit message id and a `traceparent` header, which
/// the loader stores with the change it makes.
pub async fn publish_traced(
    js: &jetstream::Context,
    stream: &StreamSettings,
    envelope: &Envelope,
    message_id: String,
    traceparent: &TraceParent,
) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
    let publish = jetstream::message::PublishMessage::build()
        .payload(envelope.encode().into())
        .message_id(message_id)
        .header(trace::HEADER, traceparent.to_string().as_str());
    js.send_publish(stream.subject(&envelope.source), publish)
        .await
}

/// Why publishing failed: the message was not sent, or the stream did not
/// acknowledge it. Either way it may not be stored: publish it again.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailed {
    #[error("publishing failed: {0}")]
    Send(#[from] async_nats::jetstream::context::PublishError),
    #[error("the stream did not acknowledge a publish: {0}")]
    Ack(async_nats::jetstream::context::PublishError),
}

/// What a [`Publisher`] has had acknowledged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Messages stored by the stream.
    pub stored: u64,
    /// Messages dropped by the stream as duplicates of a message id inside
    /// the window.
    pub duplicates: u64,
    /// New changes whose content id was a duplicate (the A → B → A case), so
    /// published again under [`revision_message_id`] and stored (counted in
    /// `stored` as well).
    pub republished: u64,
    /// Envelopes in the messages acknowledged (stored or duplicate): more
    /// than the messages when batches were sent.
    pub records: u64,
}

/// How a [`Publisher`] treats an ack that says "duplicate".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateMode {
    /// A duplicate is a re-publish of something already stored (a page of an
    /// initial load re-read after a restart): count it and move on.
    Drop,
    /// Every envelope is a new change the extractor has just observed. A
    /// duplicate means the content equals an earlier message still inside the
    /// window (A → B → A), so it is published again under
    /// [`revision_message_id`]; that id is itself a duplicate only if this
    /// very change (same version) was already stored.
    Republish,
}

struct InFlight {
    ack: PublishAckFuture,
    /// Envelopes the message carries (more than one: a batch).
    records: u64,
    /// Kept only in [`DuplicateMode::Republish`], to publish it again.
    envelope: Option<Envelope>,
}

/// Publishes with up to `window` acks in flight (pipelining is ~20× faster
/// than awaiting each ack). Call [`Publisher::settle`] before advancing a
/// checkpoint: only then is every message sent so far acknowledged.
pub struct Publisher<'a> {
    js: &'a jetstream::Context,
    stream: &'a StreamSettings,
    window: usize,
    mode: DuplicateMode,
    in_flight: VecDeque<InFlight>,
    published: Published,
    /// The trace every message joins; `None`: a fresh trace per message.
    traceparent: Option<TraceParent>,
}

impl<'a> Publisher<'a> {
    /// A publisher that drops duplicates ([`DuplicateMode::Drop`]).
    pub fn new(js: &'a jetstream::Context, stream: &'a StreamSettings, window: usize) -> Self {
        Self::with_mode(js, stream, window, DuplicateMode::Drop)
    }

    pub fn with_mode(
        js: &'a jetstream::Context,
        stream: &'a StreamSettings,
        window: usize,
        mode: DuplicateMode,
    ) -> Self {
        Publisher {
            js,
            stream,
            window: window.max(1),
            mode,
            in_flight: VecDeque::new(),
            published: Published::default(),
            traceparent: None,
        }
    }

    /// Every message from now on carries `traceparent` (the caller's trace,
    /// e.g. one per extractor page) instead of a fresh one each; `None`
    /// keeps a fresh one each (traces not exported).
    pub fn with_traceparent(mut self, traceparent: impl Into<Option<TraceParent>>) -> Self {
        self.traceparent = traceparent.into();
        self
    }

    /// Messages from now on carry `traceparent` (`None`: a fresh trace per
    /// message), e.g. one trace per page of a bulk load.
    pub fn set_traceparent(&mut self, traceparent: Option<TraceParent>) {
        self.traceparent = traceparent;
    }

    fn traceparent(&self) -> TraceParent {
        self.traceparent.unwrap_or_else(TraceParent::fresh)
    }

    /// Publishes `envelope`; when `window` acks are in flight, first waits
    /// for the oldest (a sliding window: the stream acks in order).
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), PublishFailed> {
        while self.in_flight.len() >= self.window {
            self.next_ack().await?;
        }
        let traceparent = self.traceparent();
        let ack = publish_traced(
            self.js,
            self.stream,
            envelope,
            envelope.message_id(),
            &traceparent,
        )
        .await?;
        let envelope = (self.mode == DuplicateMode::Republish).then(|| envelope.clone());
        self.in_flight.push_back(InFlight {
            ack,
            records: 1,
            envelope,
        });
        Ok(())
    }

    /// Publishes a message already encoded (a batch from
    /// [`crate::batch::BatchBuilder`], or a single envelope's bytes) on
    /// `source`'s subject, with its own message id and, for a batch, the
    /// [`crate::batch::RECORDS_HEADER`]. Re-publishable content only: a
    /// duplicate is counted as one, never published again, whatever the
    /// mode (an A → B → A change must go through [`Publisher::send`]).
    pub async fn send_encoded(
        &mut self,
        source: &str,
        message: Encoded,
    ) -> Result<(), PublishFailed> {
        while self.in_flight.len() >= self.window {
            self.next_ack().await?;
        }
        let is_batch = batch::shape(&message.payload) == batch::Shape::Batch;
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(message.payload)
            .message_id(message.message_id)
            .header(trace::HEADER, self.traceparent().to_string().as_str());
        if is_batch {
            publish = publish.header(batch::RECORDS_HEADER, message.records.to_string().as_str());
        }
        let ack = self
            .js
            .send_publish(self.stream.subject(source), publish)
            .await?;
        self.in_flight.push_back(InFlight {
            ack,
            records: message.records as u64,
            envelope: None,
        });
        Ok(())
    }

    /// Waits for every ack in flight; returns the totals so far.
    pub async fn settle(&mut self) -> Result<Published, PublishFailed> {
        while !self.in_flight.is_empty() {
            self.next_ack().await?;
        }
        Ok(self.published)
    }

    /// Waits until at most `in_flight` messages await their ack (the most
    /// recent ones): e.g. after sending a page, for every ack of the pages
    /// before it, while the page itself is under way.
    pub async fn settle_all_but(&mut self, in_flight: usize) -> Result<Published, PublishFailed> {
        while self.in_flight.len() > in_flight {
            self.next_ack().await?;
        }
        Ok(self.published)
    }

    /// The totals acknowledged so far (without waiting).
    pub fn published(&self) -> Published {
        self.published
    }

    async fn next_ack(&mut self) -> Result<(), PublishFailed> {
        let Some(InFlight {
            ack,
            records,
            envelope,
        }) = self.in_flight.pop_front()
        else {
            return Ok(());
        };
        if !ack.await.map_err(PublishFailed::Ack)?.duplicate {
            self.published.stored += 1;
            self.published.records += records;
            return Ok(());
        }
        self.published.records += records;
        match envelope {
            Some(envelope) => {
                // Rare (content flipped back inside the window): awaited
                // on its own, behind the acks already in flight.
                let again = publish_traced(
                    self.js,
                    self.stream,
                    &envelope,
                    revision_message_id(&envelope),
                    &self.traceparent(),
                )
                .await?;
                if again.await.map_err(PublishFailed::Ack)?.duplicate {
                    self.published.duplicates += 1;
                } else {
                    self.published.stored += 1;
                    self.published.republished += 1;
                }
            }
            None => self.published.duplicates += 1,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        assert_eq!(subject("patients", "qms"), "patients.qms");
        assert_eq!(
            source_from_subject("patients", "patients.infoclinica"),
            Some("infoclinica")
        );
        assert_eq!(source_from_subject("patients", "patients.Bad"), None);
        assert_eq!(source_from_subject("patients", "other.qms"), None);
        assert_eq!(source_from_subject("patients", "patientsx.qms"), None);
        assert!(!is_valid_source_name(""));
        assert!(!is_valid_source_name("a.b"));
        assert!(is_valid_source_name("branch-7_lab"));
    }

    #[test]
    fn message_id_is_source_id_and_hash() {
        let id = message_id("qms", "41449/A22", &[0xab; 32]);
        assert!(id.starts_with("qms:41449/A22:abab"));
        assert_eq!(id.len(), "qms:41449/A22:".len() + 64);
    }
}
