//! Logs through `tracing`, human or JSON. Records are identified by source
//! and source id only: never put a name, birth date, document, SNILS, phone
//! or e-mail into a span or event.

use serde::Deserialize;
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `loader=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
