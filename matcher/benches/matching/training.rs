//! How long does training the model take (`etl model train`: every live
//! record read, name frequencies, u from random pairs, m by EM)? Run on
//! the table before the other sections when the scoring is the model, so
//! that they use the model trained on it.

use std::time::Instant;

use matcher::model::train::Options;
use sqlx::PgPool;

/// Trains and stores a model on every live record of `pool`'s table, as
/// `etl model train` does, printing each step with the time since the
/// start.
pub async fn train(pool: &PgPool, records: usize) {
    let started = Instant::now();
    let mut progress = |line: String| {
        println!(
            "training: {:>6.1} s  {line}",
            started.elapsed().as_secs_f64()
        );
    };
    let version = matcher::model::store::train_and_store(pool, &Options::default(), &mut progress)
        .await
        .unwrap();
    println!(
        "training on {records} records: {:.1} s (model version {version})",
        started.elapsed().as_secs_f64()
    );
}
