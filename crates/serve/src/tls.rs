//! TLS for both endpoints from a PEM certificate chain and key (rustls with the ring provider,
//! chosen explicitly so the build's other crypto provider never makes the choice ambiguous).

use crate::{Result, ServeError};
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Clone)]
pub struct Tls {
    /// For HTTP: ALPN `http/1.1`.
    pub http: TlsAcceptor,
    /// For the PostgreSQL wire protocol (ALPN `postgresql` for direct TLS).
    pub pg: TlsAcceptor,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ServeError::Io {
        context: format!("reading the TLS {what} {}", path.display()),
        source: e,
    })
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> Result<Tls> {
        let cert_pem = read(cert, "certificate")?;
        let certs = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(ServeError::Tls(format!(
                "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                cert.display()
            )));
        }
        let key_pem = read(key, "key")?;
        let key_der = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
            .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
            .ok_or_else(|| {
                ServeError::Tls(format!(
                    "{} holds no PEM private key (PKCS#8, RSA or EC)",
                    key.display()
                ))
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let build = |alpn: &[u8]| -> Result<TlsAcceptor> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| ServeError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key_der.clone_key())
                .map_err(|e| {
                    ServeError::Tls(format!(
                        "{} and {} do not make a usable pair: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Tls {
            http: build(b"http/1.1")?,
            pg: build(b"postgresql")?,
        })
    }
}
