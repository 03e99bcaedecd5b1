//! What every service of the bus shares: layered [`settings`], connections
//! to [`nats`] and the [`database`], [`tls`] for every client, [`telemetry`]
//! (logs), [`backoff`] and the one [`retry`] loop, graceful [`shutdown`],
//! the start-up and exit every service's `main` shares ([`service`]),
//! the deletion [`brake`], [`observe`] (metrics, health, readiness,
//! systemd), [`progress`] of long work, [`check`]s of the configured
//! servers (`--check-config`), and the personal-data [`access_log`].

pub mod access_log;
pub mod backoff;
pub mod brake;
pub mod check;
pub mod checkpoint;
pub mod database;
pub mod nats;
pub mod observe;
pub mod progress;
pub mod retry;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod sync_status;
pub mod telemetry;
pub mod tls;
