//! The chaos harness's short form (`testkit::chaos`, binary `chaos`): both
//! extractors, two loaders and the matcher as real processes against a NATS
//! server and a PostgreSQL cluster of the test's own, 20 s of SIGKILLs and
//! server restarts while the qMS export and the Firebird table change;
//! then PostgreSQL must equal the sources record by record, a re-match
//! must move nothing and every person event must be on the bus once, in
//! order, giving the persons PostgreSQL holds. Needs Firebird (deploy/local-services.sh). The
//! binaries are built with cargo first (a no-op when up to date).

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_converges_to_its_sources_after_kills_and_server_restarts() {
    testkit::abort_if_still_running("chaos", Duration::from_secs(600));
    let options = testkit::chaos::Options::short(7);
    let summary = testkit::chaos::run(&options)
        .await
        .expect("the harness runs");
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
}
