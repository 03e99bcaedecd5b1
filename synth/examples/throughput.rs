//! Generation throughput, single-threaded:
//!
//! ```text
//! cargo run --release -p synth --example throughput [-- COUNT [SEED]]
//! ```
//!
//! The benchmark generates a million records, so generation must stay well
//! above 500k records/s in release builds or it would dominate what is being
//! measured.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("COUNT is a number"));
    let seed: u64 = args
        .next()
        .map_or(1, |a| a.parse().expect("SEED is a number"));
    let generator = synth::Generator::new(seed);

    // Warm up caches and the allocator.
    for i in 0..10_000 {
        black_box(generator.patient(i));
    }

    let start = Instant::now();
    for i in 0..count {
        black_box(generator.patient(i));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{count} records in {secs:.3}s: {:.0} records/s, {:.0} ns/record",
        count as f64 / secs,
        secs * 1e9 / count as f64
    );
}
