//! `--check-config`, shared by every service: the settings are loaded as
//! the service would (unknown keys refused), then each configured server is
//! reached once, and a line per check says what was found or why it
//! failed. Exit status 0 when every check passed, 1 otherwise. Lines name
//! servers, sections, tables and columns, never a password or a record.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Longest wait for one check (a server that does not answer fails it).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of each check so far, in order.
#[derive(Debug, Default)]
pub struct Checks {
    results: Vec<CheckResult>,
}

#[derive(Debug)]
pub struct CheckResult {
    pub name: String,
    /// What was found, or why it failed.
    pub outcome: Result<String, String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records the outcome of check `name` and prints its line.
    pub fn record(&mut self, name: impl Into<String>, outcome: Result<String, String>) {
        let result = CheckResult {
            name: name.into(),
            outcome,
        };
        println!("{}", line(&result));
        self.results.push(result);
    }

    /// Checks PostgreSQL: reachable, and its schema at this build's
    /// migrations.
    pub async fn postgresql(&mut self, database: &crate::database::DatabaseSettings) {
        let check = database.check(Some(&crate::database::MIGRATOR));
        self.run("postgresql", check).await
    }

    /// Runs check `name` (failed if it takes longer than [`TIMEOUT`]).
    pub async fn run<F, E>(&mut self, name: impl Into<String>, check: F)
    where
        F: Future<Output = Result<String, E>>,
        E: Display,
    {
        self.run_within(name, TIMEOUT, check).await
    }

    async fn run_within<F, E>(&mut self, name: impl Into<String>, limit: Duration, check: F)
    where
        F: Future<Output = Result<String, E>>,
        E: Display,
    {
        let outcome = match tokio::time::timeout(limit, check).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        self.record(name, outcome);
    }

    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_ok())
    }

    pub fn results(&self) -> &[CheckResult] {
        &self.results
    }

    /// Prints the verdict and exits: 0 if every check passed, 1 if not.
    pub fn exit(self) -> ! {
        let failed = self.results.iter().filter(|r| r.outcome.is_err()).count();
        if failed == 0 {
            println!("configuration OK: {} checks passed", self.results.len());
            std::process::exit(0);
        }
        println!(
            "configuration NOT OK: {failed} of {} checks failed",
            self.results.len()
        );
        std::process::exit(1);
    }
}

fn line(result: &CheckResult) -> String {
    match &result.outcome {
        Ok(found) => format!("ok    {:<24} {found}", result.name),
        Err(why) => format!("FAIL  {:<24} {why}", result.name),
    }
}

/// The first check: the settings of `path` and the environment. `None`
/// (after printing why, and the verdict) if they do not load: nothing else
/// can be checked.
pub fn settings<T: DeserializeOwned>(checks: &mut Checks, path: Option<&Path>) -> Option<T> {
    let source = match path {
        Some(path) => format!("{} and ETL__ variables", path.display()),
        None => "defaults and ETL__ variables (no file)".to_string(),
    };
    match crate::settings::load_reporting::<T>(path) {
        Ok(loaded) => {
            let skipped = if loaded.skipped_sections.is_empty() {
                String::new()
            } else {
                format!(
                    "; variables of other services' sections skipped: {}",
                    loaded.skipped_sections.join(", ")
                )
            };
            checks.record("settings", Ok(format!("{source}{skipped}")));
            Some(loaded.settings)
        }
        Err(e) => {
            checks.record("settings", Err(e.to_string()));
            None
        }
    }
}

/// `--check-config` of a service whose only server is PostgreSQL: the
/// settings, then the database `database_of` names; exits.
pub async fn database_service<T: DeserializeOwned>(
    path: Option<&Path>,
    database_of: fn(&T) -> &crate::database::DatabaseSettings,
) -> ! {
    let mut checks = Checks::new();
    if let Some(settings) = self::settings::<T>(&mut checks, path) {
        checks.postgresql(database_of(&settings)).await;
    }
    checks.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_verdict() {
        let mut checks = Checks::new();
        checks.record("nats", Ok("JetStream".into()));
        assert!(checks.passed());
        checks.record("postgresql", Err("refused".into()));
        assert!(!checks.passed());
        assert_eq!(
            line(&checks.results()[1]),
            format!("FAIL  {:<24} refused", "postgresql")
        );
    }

    #[tokio::test]
    async fn a_check_without_an_answer_fails() {
        let mut checks = Checks::new();
        checks
            .run_within("silent", Duration::from_millis(20), async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, String>(String::new())
            })
            .await;
        assert!(checks.results()[0]
            .outcome
            .as_ref()
            .is_err_and(|e| e.contains("no answer")));
    }
}
