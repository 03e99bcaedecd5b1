//! What every service's `main` does around its own work, written once:
//! read the settings strictly, install logs and traces, start the signal
//! handlers (with the shutdown deadline) and the observability endpoint;
//! at the end, flush the traces within what is left of the deadline.
//!
//! A service's `main` is then: parse its arguments, [`start`], run its work
//! with the settings and the shutdown token, [`Finisher::finish`].

use std::path::Path;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::observe::HttpSettings;
use crate::shutdown::ShutdownSettings;
use crate::telemetry::{LogSettings, Telemetry, TelemetrySettings};

/// The sections every service's settings have.
pub trait ServiceSettings: DeserializeOwned {
    fn log(&self) -> &LogSettings;
    fn telemetry(&self) -> &TelemetrySettings;
    fn shutdown(&self) -> &ShutdownSettings;
    fn http(&self) -> &HttpSettings;
}

/// Declares a service's settings struct with the sections every service
/// has — `log`, `http` (`/metrics`, `/healthz`, `/readyz`), `shutdown` and
/// `telemetry` — after the service's own, and implements
/// [`ServiceSettings`] for it. The common sections are written here once;
/// they are plain fields (not a flattened struct), so the check that
/// refuses unknown keys still sees every one of them.
#[macro_export]
macro_rules! service_settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $type:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $type,)*
            /// Logs: `format` (`human` or `json`), `level` (or `RUST_LOG`),
            /// `progress_interval` (see runtime/README.md).
            pub log: $crate::telemetry::LogSettings,
            /// `/metrics`, `/healthz`, `/readyz` (see runtime/README.md).
            pub http: $crate::observe::HttpSettings,
            /// How long the service may take to stop after SIGTERM.
            pub shutdown: $crate::shutdown::ShutdownSettings,
            /// OpenTelemetry traces over OTLP/HTTP (off unless
            /// `otlp_endpoint` is set; see runtime/README.md).
            pub telemetry: $crate::telemetry::TelemetrySettings,
        }

        impl $crate::service::ServiceSettings for $name {
            fn log(&self) -> &$crate::telemetry::LogSettings {
                &self.log
            }
            fn telemetry(&self) -> &$crate::telemetry::TelemetrySettings {
                &self.telemetry
            }
            fn shutdown(&self) -> &$crate::shutdown::ShutdownSettings {
                &self.shutdown
            }
            fn http(&self) -> &$crate::observe::HttpSettings {
                &self.http
            }
        }
    };
}

/// A started service: its settings, the token every task watches, and what
/// must happen before the process exits.
pub struct Started<S> {
    pub settings: S,
    pub shutdown: CancellationToken,
    pub finisher: Finisher,
}

/// Flushes the traces before exit (see [`Finisher::finish`]).
#[must_use = "call finish() before exiting, or the last spans are lost"]
pub struct Finisher {
    telemetry: Telemetry,
    shutdown: ShutdownSettings,
}

impl Finisher {
    /// Flushes the trace exporter within what is left of the shutdown
    /// deadline, then hands back the work's result.
    pub async fn finish<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        let left = crate::shutdown::time_left(&self.shutdown);
        self.telemetry.shutdown(left).await;
        result
    }
}

/// Loads `S` from the file at `config` and the `ETL__…` variables (unknown
/// keys refused), installs logging and traces under the service's `name`,
/// starts the signal handlers and the metrics and health endpoint.
pub async fn start<S: ServiceSettings>(
    name: &'static str,
    config: Option<&Path>,
) -> anyhow::Result<Started<S>> {
    let loaded = crate::settings::load_reporting::<S>(config)?;
    let settings = &loaded.settings;
    let telemetry = crate::telemetry::init_with_traces(settings.log(), settings.telemetry(), name)?;
    loaded.log_skipped();
    let settings = loaded.settings;
    let shutdown = crate::shutdown::on_signals_with_deadline(settings.shutdown());
    crate::observe::start(settings.http(), &shutdown).await?;
    let finisher = Finisher {
        telemetry,
        shutdown: settings.shutdown().clone(),
    };
    Ok(Started {
        settings,
        shutdown,
        finisher,
    })
}
