//! The `etl` tool's PostgreSQL connection. Only `etl migrate` changes the
//! schema (as its owner); every other command connects through [`connect`],
//! which checks that the schema is the one this binary was built for and
//! stops with a clear message otherwise, so an operator's role needs no
//! schema rights at all.

use std::collections::BTreeSet;

use sqlx::PgPool;

use crate::Settings;

/// Why the database's schema is not the one this `etl` expects.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaMismatch {
    Empty,
    Behind { pending: usize, first: i64 },
    Ahead { version: i64 },
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaMismatch::Empty => write!(
                f,
                "the database has no ETL schema yet: the schema owner runs `etl migrate` first \
                 (this command never migrates)"
            ),
            SchemaMismatch::Behind { pending, first } => write!(
                f,
                "the database schema is behind this etl ({pending} migration(s) pending, the \
                 first {first}): the schema owner runs `etl migrate` first (this command never \
                 migrates)"
            ),
            SchemaMismatch::Ahead { version } => write!(
                f,
                "the database schema is newer than this etl (migration {version} is unknown to \
                 it): use the etl of the version that migrated the database"
            ),
        }
    }
}

impl std::error::Error for SchemaMismatch {}

/// A pool on the configured database, once its schema is checked.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = PgPool::connect_with(settings.database.fitting_server().await).await?;
    check_schema(&pool).await?;
    Ok(pool)
}

/// Compares the applied migrations with the ones built into this binary.
pub async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(versions) => versions,
            // No migration table: never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => anyhow::bail!(
                "reading the applied migrations: {}",
                etl_runtime::database::describe(&e)
            ),
        };
    let expected: Vec<i64> = etl_runtime::database::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    compare(&applied, &expected).map_err(Into::into)
}

fn compare(applied: &[i64], expected: &[i64]) -> Result<(), SchemaMismatch> {
    if applied.is_empty() {
        return Err(SchemaMismatch::Empty);
    }
    let known: BTreeSet<i64> = expected.iter().copied().collect();
    if let Some(&version) = applied.iter().find(|v| !known.contains(v)) {
        return Err(SchemaMismatch::Ahead { version });
    }
    let pending: Vec<i64> = expected
        .iter()
        .copied()
        .filter(|v| !applied.contains(v))
        .collect();
    match pending.first() {
        None => Ok(()),
        Some(&first) => Err(SchemaMismatch::Behind {
            pending: pending.len(),
            first,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions() {
        assert_eq!(compare(&[1, 2], &[1, 2]), Ok(()));
        assert_eq!(compare(&[], &[1, 2]), Err(SchemaMismatch::Empty));
        assert_eq!(
            compare(&[1], &[1, 2, 3]),
            Err(SchemaMismatch::Behind {
                pending: 2,
                first: 2
            })
        );
        assert_eq!(
            compare(&[1, 2, 9], &[1, 2]),
            Err(SchemaMismatch::Ahead { version: 9 })
        );
    }
}
