//! Integration tests of the identity service against a real PostgreSQL
//! (`deploy/local-services.sh`): each test has its own database, records
//! loaded by the loader's store and matched by the matcher's engine, and
//! the service running in-process on a free port.

mod access;
mod docs;
mod fhir;
mod lookup;
mod matching;
mod merges;
mod problems;
mod service;
mod support;
