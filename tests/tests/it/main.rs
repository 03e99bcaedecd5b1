//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod chaos;
mod postgres_connections;
