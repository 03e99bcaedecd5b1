//! The crate's integration tests, one binary: each module is one area,
//! each test on its own database, stream and consumer names.

mod compose_secrets;
mod deploy_files;
mod monitoring;
mod nats_permissions;
mod postgres_roles;
mod tls;
mod traces;
