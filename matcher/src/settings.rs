//! The matcher's configuration. Doc comments here are the user documentation;
//! `deploy/config/matcher.toml` shows every setting with its default.

use std::time::Duration;

use etl_runtime::backoff::Backoff;
use etl_runtime::database::DatabaseSettings;
use etl_runtime::nats::NatsSettings;
use serde::Deserialize;

use crate::model::Thresholds;
use crate::rules::Weights;

etl_runtime::service_settings! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        pub database: DatabaseSettings,
        pub matcher: MatcherSettings,
        /// Person events on the bus (the relay in the matcher service).
        pub events: EventsSettings,
        /// The NATS server the relay publishes person events to (see
        /// runtime/README.md; the matcher's user may publish `persons.>`:
        /// deploy/nats/users.conf).
        pub nats: NatsSettings,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MatcherSettings {
    /// Most change-feed rows claimed and applied in one transaction while
    /// the feed is quiet (one change is applied as soon as it arrives).
    pub batch_size: i64,
    /// Under a backlog, each batch that comes back full makes the next one
    /// four times larger, up to this: fewer, larger transactions spread the
    /// per-statement costs over more records (a 20,000-change batch holds
    /// some 100 MB of memory and commits within seconds). The next batch
    /// that is not full goes back to `batch_size`.
    pub max_batch_size: i64,
    /// A full batch of at least this many changes (a backlog) has the
    /// records of the next batch read, on another pooled connection, and
    /// reduced to blocking keys while it matches; the next batch uses each
    /// row read ahead if it still holds the content of that record's newest
    /// change, and reads the others itself. A quiet feed never reads ahead.
    pub read_ahead_from: usize,
    /// How often to look at the change feed when no notification came (a
    /// missed NOTIFY, e.g. while the LISTEN connection was being re-made).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Sources in order of trust for the golden view: for each field the
    /// value of the first listed source that has one wins, then the most
    /// recently changed record. Unlisted sources come last.
    pub source_priority: Vec<String>,
    /// Blocking keys held by more records than this (a clinic's switchboard
    /// number given for every patient) are not used to find candidates.
    pub max_block_size: i64,
    /// Delays after a transient failure (PostgreSQL down).
    pub retry: Backoff,
    /// How pairs are scored: `model` (the default: the Fellegi–Sunter
    /// model, with the thresholds in `model`) or `rules` (the fixed rules
    /// and `weights`). The model learns from the records: until its first
    /// training the matcher uses the priors shipped in the code, which
    /// link only pairs that share an identifier, phone or e-mail and send
    /// pairs known by names and birth date alone to review. On a fresh
    /// installation run the initial load, let the matcher drain it, then
    /// `etl model train` (as the matcher's role): it stores the model
    /// learned from every record as the version in use and re-matches
    /// every record under it through the normal, audited path. Train again
    /// when the records have grown or changed much (a new source).
    pub scoring: ScoringKind,
    /// Weights and thresholds of the scored rule (`scoring = "rules"`).
    pub weights: Weights,
    /// Probability thresholds of the model (`scoring = "model"`).
    pub model: Thresholds,
}

/// The setting `matcher.scoring`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringKind {
    Rules,
    #[default]
    Model,
}

impl Default for MatcherSettings {
    fn default() -> Self {
        MatcherSettings {
            batch_size: 500,
            max_batch_size: 20_000,
            read_ahead_from: 2_000,
            poll_interval: Duration::from_secs(1),
            source_priority: vec!["qms".into(), "infoclinica".into()],
            max_block_size: 100,
            retry: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            scoring: ScoringKind::default(),
            weights: Weights::default(),
            model: Thresholds::default(),
        }
    }
}

/// `[events]`: the relay that publishes the person events the matcher
/// writes with every change (`person_events`) to NATS, subject
/// `<subject_prefix>.<kind>`, one stream of their own
/// (matcher/README.md, "Person events").
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EventsSettings {
    /// Publish the events (the shipped deploy/config/matcher.toml turns it
    /// on; it needs the matcher's NATS user, deploy/nats/users.conf). Off:
    /// they are still written with every change and pruned after
    /// `retention`, but nothing reaches the bus.
    pub enabled: bool,
    /// The stream of person events (created if missing; an existing one is
    /// used as is).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<kind>` (`persons.created`, …).
    pub subject_prefix: String,
    /// Copies of the stream in a NATS cluster: 3 on a three-node cluster, 1
    /// on a single server (like `stream.replicas` of the other services).
    pub replicas: usize,
    /// How long the stream keeps events for consumers that catch up.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long the server remembers event ids: an event published again
    /// within it (the relay restarted before it recorded the ack) is
    /// dropped, so it reaches consumers once.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long published events stay in PostgreSQL for `etl events
    /// replay` (the relay deletes older ones).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Events read and published per round (their acks awaited together).
    pub batch_size: i64,
    /// How often the relay looks for events when no notification came.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Delays after a failed publish or database read.
    pub retry: Backoff,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            enabled: false,
            stream: "PERSONS".into(),
            subject_prefix: "persons".into(),
            replicas: 1,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(10 * 60),
            retention: Duration::from_secs(7 * 24 * 3600),
            batch_size: 1_000,
            poll_interval: Duration::from_secs(1),
            retry: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
        }
    }
}
