//! TLS to the backends: PostgreSQL with libpq's `sslmode`/`sslrootcert`, Redis with
//! `rediss://` and a CA file.

use super::{provider, read_certs, read_roots, system_roots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// libpq's `sslmode`, as poolhub honours it (see the README's PostgreSQL section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default). `allow` means the same.
    Prefer,
    /// TLS or no connection. The certificate is checked only when `sslrootcert` is given
    /// (libpq's behaviour): then as `verify-ca`.
    Require,
    /// TLS, and the server's certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must also name the host connected to.
    VerifyFull,
}

/// Where the CA certificates that vouch for a server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (`sslrootcert=/etc/poolhub/pg-ca.pem`).
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`, as libpq 16 spells it).
    System,
}

/// The TLS half of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: PgSslMode,
    pub root_cert: Option<RootCert>,
}

/// A PostgreSQL URL taken apart: tokio-postgres's connection settings, and the TLS settings
/// it does not know (it has no `verify-ca`, `verify-full` or `sslrootcert`).
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

impl PgTarget {
    /// Parses a `postgresql://` URL, its TLS parameters included. The error names the
    /// parameter at fault.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut rest: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value: String = url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            match key {
                "sslmode" => {
                    mode = Some(match value.as_str() {
                        "disable" => PgSslMode::Disable,
                        "allow" | "prefer" => PgSslMode::Prefer,
                        "require" => PgSslMode::Require,
                        "verify-ca" => PgSslMode::VerifyCa,
                        "verify-full" => PgSslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other} is not one of disable, allow, prefer, require, \
                                 verify-ca, verify-full"
                            ))
                        }
                    })
                }
                "sslrootcert" if value == "system" => root_cert = Some(RootCert::System),
                "sslrootcert" if value.is_empty() => {
                    return Err("sslrootcert= names no file".into())
                }
                "sslrootcert" => root_cert = Some(RootCert::File(PathBuf::from(value))),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(format!(
                        "{key}= is not supported (client certificates and revocation lists)"
                    ))
                }
                _ => rest.push(pair),
            }
        }
        let mode = mode.unwrap_or(PgSslMode::Prefer);
        if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) && root_cert.is_none() {
            return Err(format!(
                "sslmode={} needs sslrootcert=FILE (the CA that signed the server's \
                 certificate, PEM) or sslrootcert=system",
                if mode == PgSslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ));
        }
        let plain = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = plain.parse().map_err(|e| format!("{e}"))?;
        config.ssl_mode(match mode {
            PgSslMode::Disable => tokio_postgres::config::SslMode::Disable,
            PgSslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(Self {
            config,
            tls: PgTls { mode, root_cert },
        })
    }

    /// The rustls client settings this URL asks for, or `None` for `sslmode=disable`. Reads
    /// the CA file, so a missing or broken one is an error here, at start.
    pub fn client_config(&self) -> Result<Option<ClientConfig>, super::TlsFileError> {
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.tls.mode, &self.tls.root_cert) {
            (PgSslMode::Disable, _) => return Ok(None),
            (PgSslMode::Prefer | PgSslMode::Require, None) => Arc::new(Unverified(provider())),
            (PgSslMode::VerifyFull, Some(root)) => {
                let roots = Arc::new(roots(root)?);
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| super::TlsFileError::new(root.path(), e.to_string()))?
            }
            (_, Some(root)) => Arc::new(ChainOnly {
                roots: roots(root)?,
                provider: provider(),
            }),
            // `parse` refuses verify-* without a root certificate.
            (PgSslMode::VerifyCa | PgSslMode::VerifyFull, None) => {
                return Err(super::TlsFileError::new(
                    Path::new("sslrootcert"),
                    "verify-ca and verify-full need sslrootcert",
                ))
            }
        };
        Ok(Some(with_verifier(verifier)))
    }
}

impl RootCert {
    fn path(&self) -> &Path {
        match self {
            RootCert::File(p) => p,
            RootCert::System => Path::new("system"),
        }
    }
}

fn roots(root: &RootCert) -> Result<RootCertStore, super::TlsFileError> {
    match root {
        RootCert::File(p) => read_roots(p),
        RootCert::System => Ok(system_roots()),
    }
}

fn with_verifier(verifier: Arc<dyn ServerCertVerifier>) -> ClientConfig {
    // The builder fails only on a provider with no cipher suite for the default versions;
    // ring has them all, so the plain builder (which cannot fail) is used instead.
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| ClientConfig::builder())
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// The handshake-signature checks every verifier here makes, with the provider's
/// algorithms (`$p`: how the impl reaches its provider).
macro_rules! signature_checks {
    ($($p:tt)+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let p: &CryptoProvider = &self.$($p)+;
            rustls::crypto::verify_tls12_signature(message, cert, dss, &p.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let p: &CryptoProvider = &self.$($p)+;
            rustls::crypto::verify_tls13_signature(message, cert, dss, &p.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            let p: &CryptoProvider = &self.$($p)+;
            p.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// libpq's `sslmode=require` without a root certificate: the connection is encrypted, but
/// who answers is not checked. The handshake's signatures still are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!(0);
}

/// libpq's `sslmode=verify-ca`: the certificate must chain to the given CA and be valid now;
/// the name in it is not compared with the host.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!(provider);
}

/// A Redis client for `url`. `rediss://` is TLS: the server's certificate is checked against
/// `ca_file` when one is given, else against the operating system's store, and must name the
/// host (a `#insecure` URL, which skips that, is refused by the configuration check).
pub fn redis_client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, String> {
    match ca_file {
        None => redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}")),
        Some(path) => {
            // Parsed here for a clear error; the redis crate parses it again.
            read_certs(path).map_err(|e| e.to_string())?;
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| format!("Redis TLS settings: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_taken_out_of_the_url() {
        let t = PgTarget::parse(
            "postgresql://u:p@db.example:5433/pool?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(t.tls.mode, PgSslMode::VerifyFull);
        assert_eq!(t.tls.root_cert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.config.get_dbname(), Some("pool"));
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn the_default_is_prefer_and_disable_needs_no_tls() {
        let t = PgTarget::parse("postgresql://u@h/db").unwrap();
        assert_eq!(t.tls.mode, PgSslMode::Prefer);
        assert!(t.client_config().unwrap().is_some());
        let t = PgTarget::parse("postgresql://u@h/db?sslmode=disable").unwrap();
        assert!(t.client_config().unwrap().is_none());
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn verification_without_a_root_certificate_is_refused() {
        for mode in ["verify-ca", "verify-full"] {
            let e = PgTarget::parse(&format!("postgresql://u@h/db?sslmode={mode}")).unwrap_err();
            assert!(e.contains("sslrootcert"), "{e}");
        }
        let e = PgTarget::parse("postgresql://u@h/db?sslmode=secure").unwrap_err();
        assert!(e.contains("sslmode=secure"), "{e}");
        let e = PgTarget::parse("postgresql://u@h/db?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslcert"), "{e}");
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let t = PgTarget::parse(
            "postgresql://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let e = t.client_config().unwrap_err();
        assert_eq!(e.path, PathBuf::from("/nonexistent/ca.pem"));
    }
}
