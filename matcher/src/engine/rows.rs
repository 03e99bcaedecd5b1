//! Records read from `source_records` by name.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::types::{split, Rec};
use crate::features::SourceRow;

/// The rows of `recs` in `source_records` (deleted ones included).
pub(super) async fn load_rows(
    tx: &mut PgConnection,
    recs: &[Rec],
) -> sqlx::Result<HashMap<Rec, SourceRow>> {
    if recs.is_empty() {
        return Ok(HashMap::new());
    }
    let (s, i) = split(recs);
    let rows: Vec<SourceRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::row_columns!(),
        " FROM UNNEST($1::text[], $2::text[]) AS f(s, i)
           JOIN source_records r ON r.source = f.s AND r.source_id = f.i"
    ))
    .bind(&s)
    .bind(&i)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.source.clone(), r.source_id.clone()), r))
        .collect())
}
