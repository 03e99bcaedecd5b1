//! The matcher: resolves patient identities asynchronously — which source
//! records belong to the same person — with evidence, review items, operator
//! decisions and an audit log.
//!
//! * [`candidates`]: the persons a query record may belong to, scored by
//!   the model in use (the identity service's `$match`, the console's search).
//! * [`features`]: a record reduced to comparable forms, and its blocking keys.
//! * [`rules`]: the pairwise rules (identifiers, conflicts, the scored rule).
//! * [`model`]: the Fellegi–Sunter model learned from the data (comparison
//!   levels, m and u by EM, name frequencies) and its guards.
//! * [`cluster`]: from pairwise links to persons, with the chaining guard.
//! * [`engine`]: the PostgreSQL side: claim changes, recompute the affected
//!   persons in one transaction, full re-match.
//! * [`operator`]: operator decisions (link, keep apart, split, lock,
//!   resolve, why).
//! * [`reads`]: reads of persons, members, history, golden view and review
//!   items for the services that show them.
//! * [`evaluate`]: scores the persons against a known truth.
//! * [`service`]: the LISTEN/NOTIFY + poll loop and its shutdown.
//! * [`events`]: the relay that publishes person events to NATS, and their
//!   replay.
//! * [`leader`]: one instance at a time (a session-level advisory lock).
//! * [`gauges`]: backlog, open review items and open dead letters for
//!   `/metrics`, read from PostgreSQL every 15 s.
//! * `queue`: why statements that read the change feed or the outbox are
//!   planned at each run.

// Rows read with `query_as` are tuples of their columns.
#![allow(clippy::type_complexity)]

pub mod candidates;
pub mod cluster;
pub mod engine;
pub mod evaluate;
pub mod events;
pub mod features;
pub mod gauges;
pub mod leader;
mod lock;
pub mod model;
pub mod operator;
mod par;
mod queue;
pub mod reads;
pub mod rules;
pub mod service;
pub mod settings;

pub use engine::{Applied, Engine};
pub use service::run;
pub use settings::Settings;
