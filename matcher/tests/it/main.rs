//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod common;
mod docs;
mod document_types;
mod endpoints;
mod events;
mod failover;
mod gauges;
mod matching;
mod migrations;
mod model;
mod quarantine;
mod service;
