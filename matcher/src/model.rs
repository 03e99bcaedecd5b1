//! The Fellegi–Sunter model: how much each field's agreement says about
//! two records being one person, learned from the data.
//!
//! * [`compare`]: each field of a pair reduced to one of a few ordered
//!   comparison levels (or missing: no evidence). Pure.
//! * [`params`]: m and u per level, the prior, name frequencies; the match
//!   weight and probability of a pair, and the decision with the guards
//!   that keep false merges out. Pure.
//! * [`train`]: u from random record pairs, m by EM on blocked pairs, name
//!   frequencies. Pure.
//! * `text`: cheap bounds that settle most name and document comparisons
//!   before an edit distance is computed. Pure.
//! * [`store`]: the versioned model in PostgreSQL (`match_models`).

pub mod compare;
pub mod params;
pub mod store;
mod text;
pub mod train;

pub use compare::{Field, Levels, FIELDS};
pub use params::{Model, ModelOutcome, Thresholds};

#[cfg(test)]
pub(crate) mod tests;
