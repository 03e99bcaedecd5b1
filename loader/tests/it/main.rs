//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod common;
mod cluster;
mod docs;
mod endpoints;
mod load;
mod processes;
mod trace;
