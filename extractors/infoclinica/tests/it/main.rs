//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod brake;
mod common;
mod docs;
mod doctypes;
mod endpoints;
mod extractor;
