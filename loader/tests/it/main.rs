//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod cluster;
mod common;
mod docs;
mod endpoints;
mod identity;
mod load;
mod processes;
mod trace;
