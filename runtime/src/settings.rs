//! Layered configuration: built-in defaults, then an optional TOML file, then
//! environment variables `ETL__<SECTION>__<KEY>` (e.g.
//! `ETL__DATABASE__HOST=db`, `ETL__LOADER__BATCH_SIZE=2000`), so every
//! setting can be overridden in a container without a file.
//!
//! Settings are strict: a key the service does not know is an error naming
//! it (`database.databse_name`) and where it came from (the file, or the
//! variable `ETL__DATABASE__DATABSE_NAME`), never its value. One exception
//! lets several services share one environment (a compose file's common
//! block, one `.env` for a host): a variable of a whole section this service
//! does not have but another service of the suite has ([`SUITE_SECTIONS`],
//! e.g. `ETL__DATABASE__HOST` given to the qMS extractor) is skipped, named
//! in a debug line. In a file, every unknown key is an error.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Prefix of environment overrides: `ETL__DATABASE__PORT=5433`.
pub const ENV_PREFIX: &str = "ETL";

/// Every top-level section of every service of the suite (the loader, the
/// matcher, both extractors, the `etl` tool). A variable of one of these
/// that a service lacks is skipped; any other unknown section is an error.
/// `etl`'s settings have all of them (a test keeps this list and the
/// services' settings in step).
pub const SUITE_SECTIONS: &[&str] = &[
    "api",
    "auth",
    "console",
    "database",
    "databases",
    "events",
    "extractor",
    "http",
    "loader",
    "log",
    "matcher",
    "nats",
    "qms",
    "shutdown",
    "stream",
    "telemetry",
];

/// Why settings could not be loaded. No message holds a setting's value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file is unreadable or not TOML, or a value has the wrong type.
    #[error("settings: {0}")]
    Config(#[from] config::ConfigError),
    /// Keys this service does not know (misspelled, or of another service's
    /// file).
    #[error("{}", unknown_message(.0))]
    Unknown(Vec<UnknownSetting>),
}

/// A key no setting of this service has, and where it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSetting {
    /// Dotted path, e.g. `database.databse_name` or `databases[0].tabel`.
    pub key: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// The variables that gave it (a whole unknown section may have several).
    Environment(Vec<String>),
}

impl fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(path) => write!(f, "`{}` in {}", self.key, path.display()),
            Origin::Environment(vars) => {
                write!(f, "`{}` (environment: {})", self.key, vars.join(", "))
            }
        }
    }
}

fn unknown_message(unknown: &[UnknownSetting]) -> String {
    let list: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
    format!(
        "unknown setting{} {} (misspelled, or not a setting of this service; \
         the reference is deploy/config/*.toml)",
        if list.len() == 1 { "" } else { "s" },
        list.join("; ")
    )
}

/// Loaded settings and the sections of other services' variables that were
/// skipped (see the module's documentation).
#[derive(Debug)]
pub struct Loaded<T> {
    pub settings: T,
    /// Sections of the suite given by environment variables that this
    /// service has not, e.g. `database` for the qMS extractor.
    pub skipped_sections: Vec<String>,
}

impl<T> Loaded<T> {
    /// One debug line naming the skipped sections (once logging is set up).
    pub fn log_skipped(&self) {
        if !self.skipped_sections.is_empty() {
            tracing::debug!(
                sections = %self.skipped_sections.join(", "),
                "environment variables of sections this service does not have were skipped"
            );
        }
    }
}

/// Loads `T` from defaults, the file at `path` (required when given) and the
/// environment, refusing unknown keys.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, SettingsError> {
    load_reporting(path).map(|loaded| loaded.settings)
}

/// As [`load`], also telling which environment sections were skipped.
pub fn load_reporting<T: DeserializeOwned>(
    path: Option<&Path>,
) -> Result<Loaded<T>, SettingsError> {
    let env = env_keys(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
    let mut builder = config::Config::builder();
    // The file alone: where an unknown key came from.
    let mut file_only = None;
    if let Some(path) = path {
        let file = config::File::from(path).required(true);
        file_only = Some(config::Config::builder().add_source(file.clone()).build()?);
        builder = builder.add_source(file);
    }
    let merged = builder
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()?;
    let mut ignored = Vec::new();
    let settings: T = serde_ignored::deserialize(merged, |p| ignored.push(dotted(&p)))?;
    let mut unknown = Vec::new();
    let mut skipped_sections = Vec::new();
    for key in ignored {
        let vars: Vec<String> = env
            .iter()
            .filter(|(dotted, _)| *dotted == key || dotted.starts_with(&format!("{key}.")))
            .map(|(_, var)| var.clone())
            .collect();
        let whole_section = !key.contains(['.', '[']);
        let in_file = file_only
            .as_ref()
            .is_some_and(|f| f.get::<config::Value>(&key).is_ok());
        if whole_section && SUITE_SECTIONS.contains(&key.as_str()) && !in_file {
            skipped_sections.push(key);
        } else if let (true, Some(path)) = (vars.is_empty() || in_file, path) {
            unknown.push(UnknownSetting {
                key,
                origin: Origin::File(path.to_path_buf()),
            });
        } else {
            unknown.push(UnknownSetting {
                key,
                origin: Origin::Environment(vars),
            });
        }
    }
    // The merged table is a hash map: a stable order for people and tests.
    unknown.sort_by(|a, b| a.key.cmp(&b.key));
    skipped_sections.sort();
    if unknown.is_empty() {
        Ok(Loaded {
            settings,
            skipped_sections,
        })
    } else {
        Err(SettingsError::Unknown(unknown))
    }
}

/// The settings' dotted keys of the `ETL__` variables among `names`, each
/// with its variable's name (the same mapping as `config::Environment`:
/// prefix and separators `__`, lower case).
fn env_keys(names: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let prefix = format!("{}__", ENV_PREFIX.to_lowercase());
    names
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let rest = lower.strip_prefix(&prefix)?;
            Some((rest.replace("__", "."), name))
        })
        .collect()
}

/// `a.b[0].c` for a path serde_ignored reports (the wrappers of `Option`
/// and newtypes add nothing to it).
fn dotted(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        P::Map { parent, key } => {
            let parent = dotted(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            dotted(parent)
        }
    }
}

/// The top-level sections (fields) of a settings struct `T`, as its
/// `Deserialize` derive names them.
pub fn sections<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture(&'static [&'static str]);
    #[derive(Debug)]
    struct Done;
    impl fmt::Display for Done {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("fields captured")
        }
    }
    impl std::error::Error for Done {}
    impl serde::de::Error for Done {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Done
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Capture {
        type Error = Done;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Done> {
            self.0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut capture = Capture(&[]);
    let _ = T::deserialize(&mut capture);
    capture.0
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
        items: Vec<Section>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Section {
        batch_size: usize,
        name: String,
        nested: Option<Nested>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Nested {
        depth: u32,
    }

    /// Environment variables are process-wide: each test uses variables of
    /// its own (`ETL__<TEST>_...` would be an unknown section to the others,
    /// so the tests run one at a time).
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("etl-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    fn with_env<R>(vars: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let result = f();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        result
    }

    #[test]
    fn file_then_environment() {
        let file = file(
            "example.toml",
            "[section]\nbatch_size = 10\nname = \"from-file\"\n[database]\nport = 6543\n",
        );
        let loaded: Example = with_env(
            &[
                ("ETL__SECTION__BATCH_SIZE", "2000"),
                ("ETL__DATABASE__PASSWORD", "s3cret"),
            ],
            || load(Some(&file)).unwrap(),
        );
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

    #[test]
    fn a_misspelled_variable_is_named_without_its_value() {
        let err = with_env(
            &[
                ("ETL__DATABASE__DATABSE_NAME", "elsewhere"),
                ("ETL__DATABASE__PASWORD", "s3cret"),
            ],
            || load::<Example>(None).unwrap_err(),
        );
        let message = err.to_string();
        assert!(
            message.contains("`database.databse_name` (environment: ETL__DATABASE__DATABSE_NAME)"),
            "{message}"
        );
        assert!(message.contains("`database.pasword`"), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("elsewhere"),
            "{message}"
        );
        // With a file too, the variable is named, not the file.
        let file = file("plain.toml", "[database]\nport = 6543\n");
        let err = with_env(&[("ETL__DATABASE__PORTT", "1")], || {
            load::<Example>(Some(&file)).unwrap_err()
        });
        assert!(
            err.to_string()
                .contains("`database.portt` (environment: ETL__DATABASE__PORTT)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_in_a_file_are_named_with_their_path() {
        let file = file(
            "typos.toml",
            "[section]\nbatch_sise = 10\n[section.nested]\ndepht = 2\n\
             [[items]]\nname = \"a\"\n[[items]]\nnmae = \"b\"\n[nats]\nurl = \"x\"\n",
        );
        let err = with_env(&[], || load::<Example>(Some(&file)).unwrap_err());
        let SettingsError::Unknown(unknown) = err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = unknown.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "items[1].nmae",
                // Another service's section is no excuse in a file.
                "nats",
                "section.batch_sise",
                "section.nested.depht",
            ]
        );
        assert!(unknown
            .iter()
            .all(|u| u.origin == Origin::File(file.clone())));
    }

    #[test]
    fn another_services_section_in_the_environment_is_skipped() {
        let loaded = with_env(
            &[
                ("ETL__NATS__URL", "nats://elsewhere:4222"),
                ("ETL__QMS__URL", "http://qms"),
            ],
            || load_reporting::<Example>(None).unwrap(),
        );
        assert_eq!(loaded.skipped_sections, ["nats", "qms"]);
        // A section no service has is a typo.
        let err = with_env(&[("ETL__DATABSE__HOST", "db")], || {
            load::<Example>(None).unwrap_err()
        });
        assert!(
            err.to_string()
                .contains("`databse` (environment: ETL__DATABSE__HOST)"),
            "{err}"
        );
    }

    #[test]
    fn sections_of_a_settings_struct() {
        assert_eq!(sections::<Example>(), ["database", "section", "items"]);
    }
}
