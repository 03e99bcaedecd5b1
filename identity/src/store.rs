//! Reads of the matcher's tables: persons and where merged ones went,
//! members, history, the golden view, records by identifier. They live in
//! the matcher (`matcher::reads`), which owns the tables, so that the steward
//! console shares them.

pub use matcher::reads::*;
