//! HTTPS on the hub's own listeners (`server.tls_cert`, `server.tls_key`), for operators with
//! no proxy in front. The certificate sits behind an [`ArcSwap`]: a reload reads the files
//! again and the next handshake uses the new pair, while open connections keep theirs.

use super::{provider, read_certs, read_key, TlsFileError};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

/// The listeners' certificate and the acceptor that serves it.
pub struct ServerTls {
    current: Arc<Current>,
    acceptor: tokio_rustls::TlsAcceptor,
}

#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain and its key. Both files are PEM; the chain starts with
    /// the server's own certificate, and the key must belong to it.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsFileError> {
        let current = Arc::new(Current(ArcSwap::from_pointee(certified_key(cert, key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ServerConfig::builder())
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The hub speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again (a renewed certificate, or new paths). On an error the running
    /// certificate stays in use.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsFileError> {
        let fresh = certified_key(cert, key)?;
        self.current.0.store(Arc::new(fresh));
        Ok(())
    }

    /// The DER bytes of the certificate handshakes present now.
    pub fn certificate(&self) -> Vec<u8> {
        self.current
            .0
            .load()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsFileError> {
    let chain = read_certs(cert)?;
    let key_der = read_key(key)?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| TlsFileError {
        path: key.to_path_buf(),
        message: format!("does not fit {} ({e})", cert.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, written to `dir` as `name`.crt / `name`.key.
    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&crt, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (crt, key, ck.cert.der().to_vec())
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1, der1) = pair(dir.path(), "one");
        let (c2, k2, der2) = pair(dir.path(), "two");
        let tls = ServerTls::load(&c1, &k1).unwrap();
        assert_eq!(tls.certificate(), der1);
        tls.reload(&c2, &k2).unwrap();
        assert_eq!(tls.certificate(), der2);
        // A key of another certificate, a missing file, a file that is not PEM: refused,
        // naming the file, and the running certificate stays.
        let e = tls.reload(&c1, &k2).unwrap_err();
        assert_eq!(e.path, k2);
        assert!(e.message.contains("does not fit"), "{e}");
        let e = tls
            .reload(&dir.path().join("missing.crt"), &k2)
            .unwrap_err();
        assert!(e.to_string().contains("missing.crt"), "{e}");
        std::fs::write(dir.path().join("junk.crt"), "junk").unwrap();
        let e = tls.reload(&dir.path().join("junk.crt"), &k2).unwrap_err();
        assert!(e.message.contains("no PEM certificate"), "{e}");
        assert_eq!(tls.certificate(), der2);
    }
}
