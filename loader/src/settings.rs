//! The loader's configuration. Doc comments here are the user documentation;
//! `deploy/config/loader.toml` shows every setting with its default.

use std::time::Duration;

use etl_runtime::backoff::Backoff;
use etl_runtime::database::DatabaseSettings;
use etl_runtime::nats::NatsSettings;
use proto::bus::StreamSettings;
use serde::Deserialize;

etl_runtime::service_settings! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        pub nats: NatsSettings,
        pub database: DatabaseSettings,
        pub stream: StreamSettings,
        pub loader: LoaderSettings,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LoaderSettings {
    /// Durable pull consumer shared by every loader instance: instances bound
    /// to the same name share the work.
    pub consumer: String,
    /// Subjects this consumer takes; default every source's
    /// (`<stream.subject_prefix>.*`), e.g. `patients.qms` for one source.
    pub filter_subject: Option<String>,
    /// Most messages fetched in one pull request, and most records written
    /// in one transaction (a batch message's records are never split: a
    /// transaction holds whole messages, at least one).
    pub batch_size: usize,
    /// Most message bytes fetched in one pull request. What bounds the
    /// loader's memory once extractors send batch messages (hundreds of
    /// records each): `batch_size` of those would be a million records.
    /// The default (8 MiB) leaves `batch_size` single-record messages
    /// unconstrained (4 MiB cut some pulls short and cost ~10 % of the
    /// drain rate) and holds about 32 batch messages of 256 KiB, written in
    /// transactions of up to `batch_size` records. Must
    /// be at least the server's `max_payload` (1 MiB by default): a message
    /// larger than this is never delivered.
    pub batch_bytes: usize,
    /// Longest wait of one pull request: a batch is written when it is full
    /// or when this has passed (also the idle polling interval).
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Batches written at once (each on its own connection). The pool must
    /// have at least this many connections.
    pub writers: usize,
    /// How long the server waits for an ack before redelivering; longer than
    /// the slowest batch.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Most unacknowledged messages the consumer hands out across all
    /// instances; keep it at least 2 × instances × writers × batch_size or
    /// deliveries stall.
    pub max_ack_pending: i64,
    /// Delays after a transient failure (PostgreSQL down, pool timeout): the
    /// batch is nak'ed with this delay and this writer pauses as long.
    pub retry: Backoff,
    /// Longest time to finish the batches in hand after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Largest values a record may hold (`[loader.limits]`). A record with
    /// a longer value or more entries is set aside as a dead letter
    /// (`field_too_long`, `too_many_items`) naming the field, never its value.
    pub limits: FieldLimits,
}

/// Largest values a record may hold, in characters (lengths) and entries
/// (lists). The defaults are well above what qMS and Infoclinica can store
/// (their name columns hold 30–60 characters, document numbers 20, e-mails
/// 100), so only a broken or hostile message reaches them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FieldLimits {
    /// Last, first and middle name.
    pub name: usize,
    /// The record's id in its source (`source_id`); the schema allows 128
    /// at most whatever is set here.
    pub source_id: usize,
    /// A document's series, number and the source's own type code.
    pub document: usize,
    /// SNILS and OMS policy as received.
    pub identifier: usize,
    /// One phone number as received (with any text around it).
    pub phone: usize,
    /// One e-mail address as received.
    pub email: usize,
    /// The business unit's code.
    pub business_unit: usize,
    /// Other free text: the raw value and field name of a field issue.
    pub text: usize,
    /// Entries of each list: documents, phones, e-mails, field issues.
    pub items: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            name: 200,
            source_id: proto::envelope::MAX_SOURCE_ID_LEN,
            document: 64,
            identifier: 64,
            phone: 128,
            email: 320,
            business_unit: 128,
            text: 1024,
            items: 64,
        }
    }
}

impl Default for LoaderSettings {
    fn default() -> Self {
        LoaderSettings {
            consumer: "loader".into(),
            filter_subject: None,
            batch_size: 2000,
            batch_bytes: 8 * 1024 * 1024,
            batch_wait: Duration::from_millis(100),
            writers: 2,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 50_000,
            retry: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            shutdown_timeout: Duration::from_secs(30),
            limits: FieldLimits::default(),
        }
    }
}
