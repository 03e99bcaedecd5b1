//! `--check-config` for one Infoclinica database: log in, find the patients
//! table and every column the mapping reads (and the change log's, in
//! change-log mode), and read one row of them (the SELECT privilege). Says
//! which names are missing; never shows a value.

use rsfbclient::prelude::*;

use crate::firebird::{Source, SourceError};
use crate::settings::{DatabaseSettings, ExtractorSettings, SyncMode};

/// The change log's columns the delta pass reads.
const CHANGELOG_COLUMNS: &[&str] = &["ID", "PCODE", "PROCESSED"];

/// Why a database fails its check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("table {0} does not exist (or this user may not see it)")]
    NoTable(String),
    #[error("table {table} has no column(s) {}", .missing.join(", "))]
    NoColumns { table: String, missing: Vec<String> },
}

/// Checks `db` as the extractor would read it; what was found.
pub async fn database(
    db: &DatabaseSettings,
    extractor: &ExtractorSettings,
) -> Result<String, CheckError> {
    let mut source = Source::new(
        db.clone(),
        extractor.connect_timeout,
        extractor.query_timeout,
    );
    let table = db.table.name.clone();
    let columns: Vec<String> = db.mapped_columns().into_iter().map(String::from).collect();
    require_columns(&mut source, &table, &columns).await?;
    // The mapped columns can be read (the user's SELECT privilege).
    let sql = format!("SELECT FIRST 1 {} FROM {table}", columns.join(", "));
    source
        .call(move |conn| conn.stream_raw(&sql, |_| Ok(())))
        .await?;
    let mut found = format!(
        "{}:{} {}: table {table}, {} mapped columns",
        db.host,
        db.port,
        db.database,
        columns.len()
    );
    if db.sync == SyncMode::Changelog {
        let log = db.changelog.table.clone();
        let needed: Vec<String> = CHANGELOG_COLUMNS.iter().map(|c| c.to_string()).collect();
        require_columns(&mut source, &log, &needed).await?;
        found.push_str(&format!(", change log {log}"));
    }
    Ok(found)
}

/// Fails unless `table` exists with every one of `columns`.
async fn require_columns(
    source: &mut Source,
    table: &str,
    columns: &[String],
) -> Result<(), CheckError> {
    // Unquoted identifiers are stored in upper case.
    let name = table.to_ascii_uppercase();
    let sql = format!(
        "SELECT TRIM(RDB$FIELD_NAME) FROM RDB$RELATION_FIELDS WHERE RDB$RELATION_NAME = '{name}'"
    );
    let present: Vec<(String,)> = source.call(move |conn| conn.query(&sql, ())).await?;
    if present.is_empty() {
        return Err(CheckError::NoTable(table.to_string()));
    }
    let missing: Vec<String> = columns
        .iter()
        .filter(|c| !present.iter().any(|(p,)| p.eq_ignore_ascii_case(c)))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CheckError::NoColumns {
            table: table.to_string(),
            missing,
        })
    }
}
