//! NATS connection settings.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// A `.creds` file (JWT + NKey), if the server uses decentralized auth.
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    /// Never printed.
    pub password: Option<SecretString>,
    /// Never printed.
    pub token: Option<SecretString>,
    /// How long to wait for a JetStream API answer or a publish ack.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            user: None,
            password: None,
            token: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl NatsSettings {
    /// Connects, retrying the initial connection in the background: a service
    /// started before NATS waits for it instead of crash-looping.
    pub async fn connect(&self, client_name: &str) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name(client_name)
            .retry_on_initial_connect()
            .request_timeout(Some(self.request_timeout))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_string());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose_secret().to_string());
        }
        Ok(options.connect(self.url.as_str()).await?)
    }
}
