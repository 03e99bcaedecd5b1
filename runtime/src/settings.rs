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
