//! Certificates made by the test (a CA of its own, server and client
//! certificates signed by it) and servers with TLS on: the nats-server
//! `tls { }` block, PostgreSQL (`TempCluster::start_with_tls`) and an HTTPS
//! front to any plain HTTP server ([`https_front`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority of one test; its files live in a temp dir that
/// goes with it.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA named `name` (its certificate in [`Self::ca_file`]).
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("etl-tls-")
            .tempdir()
            .expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.crt"), issuer.pem()).unwrap();
        TestCa { issuer, dir }
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for `names` (DNS names or IP addresses, e.g.
    /// `127.0.0.1`), files `<stem>.crt` and `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str]) -> CertFiles {
        self.issue(stem, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, stem: &str, name: &str) -> CertFiles {
        self.issue(stem, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: self.dir.path().join(format!("{stem}.crt")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// The `tls { }` block of a nats-server configuration serving `server`;
/// with `client_ca`, clients must present a certificate signed by it.
pub fn nats_tls_block(server: &CertFiles, client_ca: Option<&Path>) -> String {
    let mut block = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 2\n",
        server.cert.display(),
        server.key.display()
    );
    if let Some(ca) = client_ca {
        block += &format!("  ca_file: \"{}\"\n  verify: true\n", ca.display());
    }
    block + "}\n"
}

/// A TLS server configuration of `server` (for [`https_front`]).
pub fn server_config(server: &CertFiles) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    rustls::ServerConfig::builder_with_provider(etl_runtime::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

/// An HTTPS front to the plain HTTP server at `backend`: every TLS
/// connection to the returned address (127.0.0.1) is forwarded to it. Lives
/// as long as the Tokio runtime; a failed handshake just drops the
/// connection.
pub async fn https_front(backend: SocketAddr, server: &CertFiles) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(server)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
