//! Layered configuration: built-in defaults, then an optional TOML file, then
//! environment variables `ETL__<SECTION>__<KEY>` (e.g.
//! `ETL__DATABASE__HOST=db`, `ETL__LOADER__BATCH_SIZE=2000`), so every
//! setting can be overridden in a container without a file.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Prefix of environment overrides: `ETL__DATABASE__PORT=5433`.
pub const ENV_PREFIX: &str = "ETL";

/// Loads `T` from defaults, the file at `path` (required when given) and the
/// environment.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, config::ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        builder = builder.add_source(config::File::from(path).required(true));
    }
    builder
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Example {
        database: crate::database::DatabaseSettings,
        section: Section,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Section {
        batch_size: usize,
        name: String,
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("etl-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("example.toml");
        std::fs::write(
            &file,
            "[section]\nbatch_size = 10\nname = \"from-file\"\n[database]\nport = 6543\n",
        )
        .unwrap();
        // Unique keys: other tests of this process do not read them.
        std::env::set_var("ETL__SECTION__BATCH_SIZE", "2000");
        std::env::set_var("ETL__DATABASE__PASSWORD", "s3cret");
        let loaded: Example = load(Some(&file)).unwrap();
        std::env::remove_var("ETL__SECTION__BATCH_SIZE");
        std::env::remove_var("ETL__DATABASE__PASSWORD");
        assert_eq!(
            loaded.section.batch_size, 2000,
            "environment overrides the file"
        );
        assert_eq!(loaded.section.name, "from-file");
        assert_eq!(loaded.database.port, 6543);
        assert_eq!(loaded.database.host, "127.0.0.1", "defaults fill the rest");
        assert!(loaded.database.password.is_some());
        assert!(
            !format!("{loaded:?}").contains("s3cret"),
            "secrets are never printed"
        );
    }
}
