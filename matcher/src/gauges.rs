//! Gauges of what operators watch in PostgreSQL, refreshed by the matcher
//! every [`EVERY`]: the matcher's backlog (changes loaded, not yet matched),
//! open review items, person events not yet published and open dead
//! letters by reason code. Counts only:
//! labels are fixed reason codes, never personal data.
//!
//! Every instance refreshes them (a standby too), so they are there while
//! any matcher runs; dashboards take the maximum over instances.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the counts are read: often enough for a 1-minute alert, cheap
/// enough at a million rows (three counts over indexed or small sets).
pub const EVERY: Duration = Duration::from_secs(15);

/// Refreshes the gauges every [`EVERY`] until `shutdown`.
pub fn spawn(pool: &PgPool, shutdown: &CancellationToken) {
    let (pool, shutdown) = (pool.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut codes = BTreeSet::new();
        loop {
            if let Err(error) = refresh(&pool, &mut codes).await {
                // `/readyz` reports a database that does not answer.
                tracing::debug!(%error, "refreshing the matcher's gauges failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}

/// One refresh. `codes`: the dead-letter reason codes shown so far, set to
/// 0 once none is open (a gauge left at its last value would lie).
pub async fn refresh(pool: &PgPool, codes: &mut BTreeSet<String>) -> sqlx::Result<()> {
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM record_changes")
        .fetch_one(pool)
        .await?;
    metrics::gauge!("matcher_backlog").set(backlog as f64);
    let reviews: i64 =
        sqlx::query_scalar("SELECT count(*) FROM review_items WHERE status = 'open'")
            .fetch_one(pool)
            .await?;
    metrics::gauge!("matcher_review_items_open").set(reviews as f64);
    // Person events the relay has not published yet (a range of the
    // primary key).
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM person_events
         WHERE event_id > (SELECT published_up_to FROM person_event_relay)",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("matcher_person_events_pending").set(events as f64);
    let open: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason_code, count(*) FROM dead_letters WHERE status = 'open' GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    for code in codes.iter() {
        if !open.iter().any(|(c, _)| c == code) {
            metrics::gauge!("etl_dead_letters_open", "kind" => code.clone()).set(0.0);
        }
    }
    // The total, so that an alert and a dashboard need no sum over kinds
    // that may not exist yet.
    let total: i64 = open.iter().map(|(_, n)| n).sum();
    metrics::gauge!("etl_dead_letters_open", "kind" => "all").set(total as f64);
    for (code, n) in open {
        metrics::gauge!("etl_dead_letters_open", "kind" => code.clone()).set(n as f64);
        codes.insert(code);
    }
    Ok(())
}
