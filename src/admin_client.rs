//! The CLI's client for a running hub's admin API (`poolhub keys …`), so an operator never
//! needs curl. One HTTP/1.1 request per call over TCP, or TLS for an `https://` hub (checked
//! against the system's CAs or a given CA file), with the admin secret as a bearer token; the
//! answer's JSON body and status are handed back for the command to print.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Why a call to the hub did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "--hub must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:8000): {0}"
    )]
    BadUrl(String),
    #[error("CA file: {0}")]
    BadCa(#[from] crate::tls::TlsFileError),
    #[error("TLS with the hub at {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot reach the hub at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the hub at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("HTTP error talking to the hub: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request built for the hub: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("cannot write what the hub sent: {0}")]
    Write(std::io::Error),
}

/// A hub's base URL and the secret to present.
pub struct AdminClient {
    host: String,
    port: u16,
    base_path: String,
    token: String,
    timeout: Duration,
    /// For an `https://` hub.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// The hub's answer: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl AdminClient {
    /// `hub` is the base URL (`http://host:port` or `https://host:port`, optionally with a
    /// path prefix). An `https://` hub's certificate is checked against the system's CAs.
    pub fn new(hub: &str, token: String) -> Result<Self, ClientError> {
        let url = url::Url::parse(hub).map_err(|e| ClientError::BadUrl(e.to_string()))?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => Some(connector(crate::tls::system_roots())),
            other => {
                return Err(ClientError::BadUrl(format!(
                    "scheme {other:?} is not supported"
                )))
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| ClientError::BadUrl("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Self {
            host,
            port: url.port_or_known_default().unwrap_or(80),
            base_path: url.path().trim_end_matches('/').to_string(),
            token,
            timeout: Duration::from_secs(10),
            tls,
        })
    }

    /// Trusts only the CA certificates in `ca_file` (PEM) for an `https://` hub: a hub with a
    /// certificate from a private CA.
    pub fn trusting(mut self, ca_file: &std::path::Path) -> Result<Self, ClientError> {
        if self.tls.is_some() {
            self.tls = Some(connector(crate::tls::read_roots(ca_file)?));
        }
        Ok(self)
    }

    /// Sends one request and answers the response, its body not yet read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let addr = format!("{}:{}", self.host, self.port);
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let mut sender = match &self.tls {
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(conn);
                sender
            }
            Some(tls) => {
                let tls_err = |source| ClientError::Tls {
                    addr: addr.clone(),
                    source,
                };
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
                        tls_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                    })?;
                let stream = tls.connect(name, stream).await.map_err(tls_err)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(conn);
                sender
            }
        };
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_path, path))
            .header(hyper::header::HOST, addr.as_str());
        // No secret, no header: open routes (an explanation on an open hub) need none.
        if !self.token.is_empty() {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        Ok(sender
            .send_request(req.body(Full::new(Bytes::from(payload)))?)
            .await?)
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// One request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let work = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(self.addr(), self.timeout))?
    }

    /// A `POST` whose answer is a file: a 2xx body is written to `out` as it arrives (the
    /// headers are answered; the body is `Value::Null`); any other answer is read as JSON.
    /// The hub must start answering within the usual timeout, and then never pause longer.
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<(Answer, hyper::HeaderMap), ClientError> {
        let resp = tokio::time::timeout(self.timeout, self.send(Method::POST, path, None))
            .await
            .map_err(|_| ClientError::Timeout(self.addr(), self.timeout))??;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = tokio::time::timeout(self.timeout, body.collect())
                .await
                .map_err(|_| ClientError::Timeout(self.addr(), self.timeout))??
                .to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok((Answer { status, body }, headers));
        }
        while let Some(frame) = tokio::time::timeout(self.timeout, body.frame())
            .await
            .map_err(|_| ClientError::Timeout(self.addr(), self.timeout))?
        {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).map_err(ClientError::Write)?;
            }
        }
        Ok((
            Answer {
                status,
                body: Value::Null,
            },
            headers,
        ))
    }
}

fn connector(roots: rustls::RootCertStore) -> tokio_rustls::TlsConnector {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("http://127.0.0.1:8000", "t".into()).is_ok());
        let c = AdminClient::new("http://[::1]:9/prefix/", "t".into()).expect("v6");
        assert_eq!(
            (c.host.as_str(), c.port, c.base_path.as_str()),
            ("::1", 9, "/prefix")
        );
        let c = AdminClient::new("https://hub.example", "t".into()).expect("https");
        assert_eq!((c.port, c.tls.is_some()), (443, true));
        assert!(matches!(
            AdminClient::new("ftp://hub", "t".into()),
            Err(ClientError::BadUrl(_))
        ));
        let e = c
            .trusting(std::path::Path::new("/nonexistent/ca.pem"))
            .err()
            .expect("a missing CA file is an error");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(matches!(
            AdminClient::new("not a url", "t".into()),
            Err(ClientError::BadUrl(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_hub_is_named() {
        // Port 9 (discard) on loopback is closed here: the connect is refused at once.
        let c = AdminClient::new("http://127.0.0.1:9", "t".into()).expect("url");
        let e = c
            .call(Method::GET, "/api/v1/admin/keys", None)
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    }
}
