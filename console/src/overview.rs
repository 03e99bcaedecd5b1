//! The overview: queue size over the last days, items resolved per day and
//! by whom, persons, the cross-system share, the matcher's lag (changes
//! waiting and the oldest one's age) and dead letters waiting. Figures
//! only, no personal data.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::NaiveDate;
use maud::html;
use sqlx::PgPool;

use crate::i18n::Msg;
use crate::page::{self, frame, weight_bar};
use crate::session::Steward;
use crate::Shared;

/// Days the overview looks back.
const DAYS: i32 = 14;

pub fn routes() -> Router<Shared> {
    Router::new().route("/overview", get(overview))
}

#[derive(sqlx::FromRow)]
struct QueueDay {
    day: NaiveDate,
    open: i64,
}

#[derive(sqlx::FromRow)]
struct Resolved {
    day: NaiveDate,
    steward: String,
    items: i64,
}

#[derive(sqlx::FromRow)]
struct Figures {
    persons: i64,
    cross_system: i64,
    changes_waiting: i64,
    oldest_change_secs: Option<f64>,
    dead_letters: i64,
}

async fn figures(pool: &PgPool) -> sqlx::Result<(Vec<QueueDay>, Vec<Resolved>, Figures)> {
    let queue = sqlx::query_as(
        "SELECT d::date AS day,
                (SELECT count(*) FROM review_items
                 WHERE created_at < d + interval '1 day'
                   AND (closed_at IS NULL OR closed_at >= d + interval '1 day')) AS open
         FROM generate_series(current_date - ($1 - 1), current_date, interval '1 day') AS d
         ORDER BY 1",
    )
    .bind(DAYS)
    .fetch_all(pool)
    .await?;
    let resolved = sqlx::query_as(
        "SELECT closed_at::date AS day, coalesce(resolved_by, '') AS steward, count(*) AS items
         FROM review_items WHERE status = 'resolved' AND closed_at >= current_date - ($1 - 1)
         GROUP BY 1, 2 ORDER BY 1 DESC, 2",
    )
    .bind(DAYS)
    .fetch_all(pool)
    .await?;
    let figures = sqlx::query_as(
        "SELECT (SELECT count(*) FROM persons WHERE retired_at IS NULL) AS persons,
                (SELECT count(*) FROM (SELECT person_id FROM person_memberships WHERE valid_to IS NULL
                   GROUP BY person_id HAVING count(DISTINCT source) > 1) x) AS cross_system,
                (SELECT count(*) FROM record_changes) AS changes_waiting,
                (SELECT extract(epoch FROM now() - min(committed_at))::float8 FROM record_changes) AS oldest_change_secs,
                (SELECT count(*) FROM dead_letters WHERE status = 'open') AS dead_letters",
    )
    .fetch_one(pool)
    .await?;
    Ok((queue, resolved, figures))
}

async fn overview(State(app): State<Shared>, Extension(s): Extension<Steward>) -> Response {
    let (queue, resolved, f) = match figures(&app.pool).await {
        Ok(x) => x,
        Err(e) => return page::unavailable(&e),
    };
    let l = s.lang;
    let max = queue.iter().map(|d| d.open).max().unwrap_or(0) as f64;
    let share = if f.persons > 0 {
        100.0 * f.cross_system as f64 / f.persons as f64
    } else {
        0.0
    };
    let body = html! {
        // Ids on every figure: the tests read them.
        table #figures {
            tr { th { (l.t(Msg::Persons)) } td #persons { (f.persons) } }
            tr { th { (l.t(Msg::CrossSystem)) } td { span #cross-system { (f.cross_system) } " (" (format!("{share:.1}")) "%)" } }
            tr { th { (l.t(Msg::MatcherLag)) } td { span #changes-waiting { (f.changes_waiting) } @if let Some(secs) = f.oldest_change_secs { ", " (format!("{secs:.0}")) " s" } } }
            tr { th { (l.t(Msg::DeadLetters)) } td #dead-letters { (f.dead_letters) } }
        }
        h2 { (l.t(Msg::QueueOverTime)) }
        table.chart #queue-days {
            @for d in &queue { tr data-day=(d.day) { th { (d.day.format("%d.%m")) } td { (weight_bar(d.open as f64, max)) } td.num { (d.open) } } }
        }
        h2 { (l.t(Msg::ResolvedPerDay)) }
        table #resolved {
            tr { th { (l.t(Msg::Day)) } th { (l.t(Msg::Steward)) } th { (l.t(Msg::Items)) } }
            @for r in &resolved { tr.resolved { td { (r.day.format("%d.%m.%Y")) } td.steward { (r.steward) } td.num { (r.items) } } }
        }
    };
    page::ok(frame(l, Some(&s), l.t(Msg::Overview), body))
}
