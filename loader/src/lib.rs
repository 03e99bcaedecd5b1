//! The loader: consumes `patients.*` through one durable pull consumer and
//! writes PostgreSQL.
//!
//! * [`settings`]: its configuration.
//! * [`batch`]: decoding, validation and collapsing of a batch.
//! * [`limits`]: the largest value each field may hold.
//! * [`validity`]: identifiers' validity computed from their values.
//! * [`identity`]: the hashes of a record's identifier keys, stored for
//!   the identity service's lookups.
//! * [`store`]: the PostgreSQL writes (upsert, change feed, dead letters).
//! * [`split`]: a batch PostgreSQL rejects, written message by message.
//! * [`service`]: the consume → write → ack loop and its shutdown.
//! * `testing` (feature `testing`): an in-process loader for integration
//!   tests.
//!
//! Guarantees: a message is acked only after its effect is committed (or its
//! dead letter is); every write is idempotent and ordered by the record's
//! version, so redeliveries, duplicates, several loader instances and a kill
//! at any moment all converge on the same state.

pub mod batch;
pub mod identity;
pub mod limits;
pub mod service;
pub mod settings;
pub mod split;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validity;

pub use service::{run, Summary};
pub use settings::Settings;
