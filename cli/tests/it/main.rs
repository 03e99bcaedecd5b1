//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod common;
mod console_users;
mod dlq;
mod docs;
mod evaluate_sets;
mod events;
mod identity_clients;
mod ops;
mod persons;
mod replay;
mod status;
