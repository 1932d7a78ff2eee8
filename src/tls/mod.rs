//! TLS, with rustls on the ring provider: no OpenSSL anywhere, so the musl binary stays static.
//!
//! * [`client`]: the connections to PostgreSQL (libpq's `sslmode` and `sslrootcert`) and to
//!   Redis (`rediss://` with a CA file);
//! * [`server`]: optional HTTPS on the API and metrics listeners, with a certificate that a
//!   configuration reload (SIGHUP) reads again, so a renewed certificate needs no restart.

pub mod client;
pub mod server;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate, key or CA file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub message: String,
}

impl TlsFileError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The one crypto provider every TLS connection uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, in order; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    // Read first, so a missing or unreadable file says so rather than "no certificate".
    let pem = std::fs::read(path).map_err(|e| TlsFileError::new(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::new(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(TlsFileError::new(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = std::fs::read(path).map_err(|e| TlsFileError::new(path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsFileError::new(path, format!("holds no usable PEM private key ({e})")))
}

/// A trust store of the certificates in a PEM file (a CA bundle).
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsFileError::new(path, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

/// The operating system's trust store (`/etc/ssl/certs` and the like).
pub fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("system CA store: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    roots
}
