//! TLS for the services' clients: rustls with the `ring` crypto provider,
//! the server's certificate always verified (its chain against a CA file or
//! the system's store, its name against the host connected to).
//!
//! PostgreSQL's TLS is sqlx's own (see [`crate::database::SslMode`]); NATS
//! and HTTPS (qMS, the OTLP collector) take the client configuration made
//! here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// A CA file, certificate or key that cannot be used: a configuration
/// error, not worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS client configuration: {0}")]
    Config(String),
}

/// A client certificate and its private key (PEM files), for servers that
/// require clients to authenticate by certificate.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The crypto provider of every TLS connection (builds without cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a CA bundle or a certificate chain).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The CAs a server's certificate must chain to: those of `ca_file` only
/// when given (a private CA), else the system's store
/// (`/etc/ssl/certs`, where `update-ca-certificates` installs a CA).
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path, "CA file")? {
                store.add(cert).map_err(|e| TlsError::File {
                    what: "CA file",
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            // Unreadable entries of the store are skipped, as every TLS
            // client does. An empty store is no error: plain connections
            // need none, and a TLS server is then refused as untrusted.
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
        }
    }
    Ok(store)
}

/// A client configuration that verifies the server against [`roots`] and
/// presents `identity` when given.
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<Identity<'_>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca_file)?);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => builder
            .with_client_auth_cert(
                load_certs(identity.cert, "client certificate")?,
                load_key(identity.key)?,
            )
            .map_err(|e| TlsError::Config(e.to_string())),
    }
}

/// An HTTP client builder for `http://` and `https://` URLs, HTTPS servers
/// verified against `ca_file` (or the system's store).
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(ca_file, None)?))
}

/// The blocking variant of [`http_client`] (the OTLP exporter's thread).
pub fn blocking_http_client(
    ca_file: Option<&Path>,
) -> Result<reqwest::blocking::ClientBuilder, TlsError> {
    Ok(reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(client_config(ca_file, None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let missing = Path::new("/nonexistent/ca.pem");
        let error = client_config(Some(missing), None).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

        let empty = tempfile_path("empty.pem", b"not a certificate\n");
        let error = roots(Some(&empty)).unwrap_err();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }

    #[test]
    fn http_clients_build_without_a_process_default_provider() {
        http_client(None).unwrap().build().unwrap();
    }

    fn tempfile_path(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("etl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}
