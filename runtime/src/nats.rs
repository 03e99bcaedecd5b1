//! NATS connection settings.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsSettings {
    /// Server URL; a cluster's members comma-separated
    /// (`nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222`), so a
    /// service starts while any one of them is up.
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
    /// Refuse a server that does not offer TLS (a `tls://` URL does the
    /// same). Whenever TLS is used, the server's certificate is verified:
    /// it must chain to `ca_file` (or the system's store) and name the
    /// URL's host.
    pub require_tls: bool,
    /// PEM file of the CA that signed the server's certificate (a private
    /// CA). Unset: the system's store.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate this service presents to a server that verifies
    /// clients (`verify: true` in its `tls { }` block); with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`. Keep it readable by the service's
    /// user only.
    pub client_key: Option<PathBuf>,
    /// Subject prefix of this client's reply inboxes (JetStream answers,
    /// fetched messages, acks of publishes). The shipped server permissions
    /// let each user subscribe to its own prefix only (`_INBOX.<user>.>` in
    /// deploy/nats/users.conf): no service can read the replies meant for
    /// another, such as the records delivered to the loader's fetches.
    /// Unset: `_INBOX.<user>` when `user` is set, else `_INBOX`.
    pub inbox_prefix: Option<String>,
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
            require_tls: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            inbox_prefix: None,
        }
    }
}

impl NatsSettings {
    /// Connects, retrying the initial connection in the background: a service
    /// started before NATS waits for it instead of crash-looping.
    pub async fn connect(&self, client_name: &str) -> anyhow::Result<async_nats::Client> {
        self.connect_with(client_name, true).await
    }

    /// Connects once: an unreachable server or a refused login is an error
    /// at once (`--check-config`).
    pub async fn connect_once(&self, client_name: &str) -> anyhow::Result<async_nats::Client> {
        self.connect_with(client_name, false).await
    }

    async fn connect_with(
        &self,
        client_name: &str,
        retry: bool,
    ) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name(client_name)
            .custom_inbox_prefix(self.inbox_prefix()?)
            .request_timeout(Some(self.request_timeout))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    // A refused certificate shows here ("TLS error"), retried
                    // like an unreachable server.
                    async_nats::Event::ClientError(error) => {
                        tracing::warn!(%error, "connecting to NATS failed; retrying")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        if retry {
            options = options.retry_on_initial_connect();
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_string());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose_secret().to_string());
        }
        // Built here, not by async-nats at connect time: a missing or bad
        // file is a configuration error now, not a retry loop in the
        // background.
        options = options
            .tls_client_config(self.tls_config()?)
            .require_tls(self.require_tls);
        Ok(options.connect(self.servers()?).await?)
    }

    /// The servers of `url`: async-nats parses one URL per string, so a
    /// cluster's list is split here (the client also learns the other
    /// members from the servers it reaches).
    pub fn servers(&self) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse()
                    .map_err(|e| anyhow::anyhow!("nats.url {u:?}: {e}"))
            })
            .collect()
    }

    /// `--check-config`: connects once, checks that JetStream answers and
    /// says whether `stream` exists (the extractors create it on their
    /// first start, so its absence is no failure).
    pub async fn check(&self, stream: &str) -> anyhow::Result<String> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        use async_nats::jetstream::ErrorCode;
        let servers: Vec<String> = self
            .servers()?
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect();
        let client = self
            .connect_once("check-config")
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", servers.join(",")))?;
        let js = async_nats::jetstream::new(client);
        // A server without JetStream answers this with an error too.
        let stream = match js.get_stream(stream).await {
            Ok(mut s) => {
                let messages = s.info().await?.state.messages;
                format!("stream {stream} holds {messages} messages")
            }
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                format!("stream {stream} does not exist yet (an extractor creates it)")
            }
            Err(e) => anyhow::bail!("JetStream, stream {stream}: {e}"),
        };
        Ok(format!(
            "{}: JetStream answers; {stream}",
            servers.join(",")
        ))
    }

    /// The prefix of this client's inboxes: `inbox_prefix`, else
    /// `_INBOX.<user>`, else `_INBOX`.
    pub fn inbox_prefix(&self) -> anyhow::Result<String> {
        let prefix = match (&self.inbox_prefix, &self.user) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(user)) => format!("_INBOX.{user}"),
            (None, None) => "_INBOX".to_string(),
        };
        let token_ok = |t: &str| {
            !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
        };
        anyhow::ensure!(
            prefix.split('.').all(token_ok),
            "nats.inbox_prefix (or nats.user) {prefix:?} is not a subject without wildcards"
        );
        Ok(prefix)
    }

    fn tls_config(&self) -> anyhow::Result<async_nats::rustls::ClientConfig> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(crate::tls::Identity { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("nats.client_cert and nats.client_key go together"),
        };
        Ok(crate::tls::client_config(
            self.ca_file.as_deref(),
            identity,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_prefix_follows_the_user() {
        let mut s = NatsSettings::default();
        assert_eq!(s.inbox_prefix().unwrap(), "_INBOX");
        s.user = Some("loader".into());
        assert_eq!(s.inbox_prefix().unwrap(), "_INBOX.loader");
        s.inbox_prefix = Some("_INBOX_loader_2".into());
        assert_eq!(s.inbox_prefix().unwrap(), "_INBOX_loader_2");
        s.inbox_prefix = Some("_INBOX.>".into());
        assert!(s.inbox_prefix().is_err(), "no wildcards");
        s.inbox_prefix = None;
        s.user = Some("bad user".into());
        assert!(s.inbox_prefix().is_err(), "no spaces");
    }
}
