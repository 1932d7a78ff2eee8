//! TLS against the built binary, with a throwaway CA made here:
//!
//! * HTTPS on the hub's own listeners (API and metrics), and a reload (SIGHUP) that puts a
//!   renewed certificate in service without a restart;
//! * TLS to PostgreSQL (`sslmode=verify-ca` / `verify-full` with `sslrootcert`) and to Redis
//!   (`rediss://` with `storage.redis_ca_file`), each against a private server with `ssl = on`
//!   / `--tls-port`: the right CA connects, the wrong CA is refused, and a certificate that
//!   does not name the host is refused.
//!
//! The backend tests start their own PostgreSQL (initdb, pg_ctl) and redis-server, so they are
//! `#[ignore]`d like the other backend suites and run with `--include-ignored`.

mod common;
mod tls_support;

use common::{addr, rt, Served};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_support::{free_port, serve_until_exit, Ca, TlsPostgres, TlsRedis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTPS request with a fresh connection that trusts only `ca`, naming the server
/// `name`: the response text and the DER of the certificate the server presented.
async fn https_get(
    port: u16,
    ca: &str,
    name: &str,
    path: &str,
) -> Result<(String, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    tls.read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok((text, presented))
}

use rustls::pki_types::pem::PemObject;

const ADMIN: &str = "an-admin-secret-for-tls-tests";

fn write_tls_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key).expect("tls.key");
}

#[test]
fn https_on_both_listeners_and_a_reload_renews_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("poolhub test CA");
    let (cert1, key1, der1) = ca.server_cert(&["localhost", "127.0.0.1"]);
    write_tls_pair(dir.path(), &cert1, &key1);
    let metrics_port = free_port();
    std::fs::write(
        dir.path().join("poolhub.toml"),
        "[server]\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n",
    )
    .expect("config");
    let served = Served::start(
        dir.path(),
        &[
            "--config",
            "poolhub.toml",
            "--ephemeral",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            &metrics_port.to_string(),
        ],
        &[("POOLHUB_ADMIN_TOKEN", ADMIN)],
        Stdio::inherit(),
    );
    assert!(served.base.starts_with("https://"), "{}", served.base);
    let port: u16 = served
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let rt = rt();
    rt.block_on(async {
        let (text, presented) = https_get(port, &ca.pem, "localhost", "/health")
            .await
            .expect("HTTPS to the API port");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(presented, der1);
        let (text, _) = https_get(metrics_port, &ca.pem, "localhost", "/metrics")
            .await
            .expect("HTTPS to the metrics port");
        assert!(text.contains("poolhub_config_reloads_total"), "{text}");

        // A client that does not trust this CA is refused; plain HTTP gets no answer.
        let other = Ca::new("some other CA");
        let e = https_get(port, &other.pem, "localhost", "/health")
            .await
            .expect_err("an unknown CA must fail the handshake");
        assert!(e.contains("UnknownIssuer"), "{e}");
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "plain HTTP was answered on the TLS port"
        );

        // The CLI talks HTTPS too: with the CA in POOLHUB_CA_FILE it gets through; with only
        // the system's CAs it refuses the hub's certificate.
        let hub = format!("https://localhost:{port}");
        let ca_file = ca.write(&dir.path().join("ca.pem"));
        let keys = |ca: Option<&Path>| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_poolhub"));
            cmd.args(["keys", "list", "--hub", &hub])
                .env("POOLHUB_ADMIN_TOKEN", ADMIN)
                .env_remove("POOLHUB_CA_FILE");
            if let Some(ca) = ca {
                cmd.env("POOLHUB_CA_FILE", ca);
            }
            cmd.output().expect("poolhub keys")
        };
        let out = keys(Some(&ca_file));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = keys(None);
        assert!(
            !out.status.success(),
            "trusted a private CA without being told"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("UnknownIssuer"), "{err}");

        // Renewal: new files at the same paths, SIGHUP, and the next handshake has them.
        let (cert2, key2, der2) = ca.server_cert(&["localhost"]);
        write_tls_pair(dir.path(), &cert2, &key2);
        served.signal("-HUP");
        let started = Instant::now();
        loop {
            let (_, presented) = https_get(port, &ca.pem, "localhost", "/health")
                .await
                .expect("HTTPS during the reload");
            if presented == der2 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the renewed certificate was not served after SIGHUP"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (text, _) = https_get(metrics_port, &ca.pem, "localhost", "/metrics")
            .await
            .expect("metrics");
        assert!(
            text.contains("poolhub_config_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );

        // A broken certificate file is refused whole: the running certificate stays.
        std::fs::write(dir.path().join("tls.crt"), "not a certificate").expect("write");
        served.signal("-HUP");
        let started = Instant::now();
        loop {
            let (text, _) = https_get(metrics_port, &ca.pem, "localhost", "/metrics")
                .await
                .expect("metrics");
            if text.contains("poolhub_config_reloads_total{result=\"error\"} 1") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the broken certificate was not refused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (text, presented) = https_get(port, &ca.pem, "localhost", "/health")
            .await
            .expect("still serving");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(presented, der2);
    });
    let status = served.sigterm();
    assert!(status.success());
}

#[test]
fn a_key_that_does_not_fit_the_certificate_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("poolhub test CA");
    let (cert, _, _) = ca.server_cert(&["localhost"]);
    let (_, other_key, _) = ca.server_cert(&["localhost"]);
    write_tls_pair(dir.path(), &cert, &other_key);
    std::fs::write(
        dir.path().join("poolhub.toml"),
        "[server]\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n",
    )
    .expect("config");
    let (ok, log) = serve_until_exit(
        dir.path(),
        &["--config", "poolhub.toml", "--ephemeral", "--port", "0"],
        Duration::from_secs(20),
    );
    assert!(!ok, "started with a key that is not the certificate's");
    assert!(log.contains("server.tls_key"), "{log}");
}

/// A hub configuration on the private PostgreSQL with `url_tail` (the TLS parameters).
fn pg_config(dir: &Path, pg: &TlsPostgres, host: &str, tls: &str) {
    std::fs::write(
        dir.join("poolhub.toml"),
        format!(
            "[storage]\ndurable = \"postgres\"\nconnect_timeout = 1\n\
             database_url = \"postgresql://postgres@{host}:{}/postgres?{tls}\"\n",
            pg.port
        ),
    )
    .expect("config");
}

const SERVE: &[&str] = &[
    "--config",
    "poolhub.toml",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
];

/// Registers a miner through the hub and reads it back: a durable write and a read on the
/// backend.
async fn round_trip(served: &Served, a: &str) -> String {
    let api = served.api();
    let token = api.register(a, &["llama"], 16384, 2).await;
    let m = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(m.status, 200, "{}", m.text);
    token
}

#[test]
#[ignore = "starts its own PostgreSQL with ssl = on (needs initdb and pg_ctl)"]
fn postgres_over_tls_right_ca_works_wrong_ca_and_wrong_host_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("poolhub test CA");
    let (cert, key, _) = ca.server_cert(&["localhost"]);
    let pg = TlsPostgres::start(dir.path(), &cert, &key);
    let hub_dir = dir.path().join("hub");
    std::fs::create_dir_all(&hub_dir).expect("hub dir");
    let right = ca.write(&hub_dir.join("ca.pem"));
    let wrong = Ca::new("not the server's CA").write(&hub_dir.join("wrong-ca.pem"));
    let rt = rt();

    // verify-full with the right CA and the certificate's own name: serves, and the
    // server sees an encrypted connection (pg_hba.conf admits nothing else).
    pg_config(
        &hub_dir,
        &pg,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", right.display()),
    );
    let served = Served::start(&hub_dir, SERVE, &[], Stdio::inherit());
    rt.block_on(round_trip(&served, &addr(1)));
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'poolhub' AND s.ssl",
    );
    assert_ne!(encrypted, "0", "the hub's connections are not encrypted");
    assert!(served.sigterm().success());

    // verify-ca checks the chain but not the name: 127.0.0.1 is not in the certificate,
    // and still connects.
    pg_config(
        &hub_dir,
        &pg,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", right.display()),
    );
    let served = Served::start(&hub_dir, SERVE, &[], Stdio::inherit());
    rt.block_on(round_trip(&served, &addr(2)));
    assert!(served.sigterm().success());

    // The wrong CA: refused, and the log says why.
    pg_config(
        &hub_dir,
        &pg,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
    );
    let (ok, log) = serve_until_exit(&hub_dir, SERVE, Duration::from_secs(60));
    assert!(!ok, "connected to PostgreSQL with the wrong CA");
    assert!(log.contains("UnknownIssuer"), "{log}");

    // verify-full to a host the certificate does not name: refused.
    pg_config(
        &hub_dir,
        &pg,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", right.display()),
    );
    let (ok, log) = serve_until_exit(&hub_dir, SERVE, Duration::from_secs(60));
    assert!(!ok, "verify-full accepted a certificate for another host");
    assert!(log.contains("not valid for name"), "{log}");

    // And without TLS the server itself refuses (so the successes above were encrypted).
    pg_config(&hub_dir, &pg, "127.0.0.1", "sslmode=disable");
    let (ok, log) = serve_until_exit(&hub_dir, SERVE, Duration::from_secs(60));
    assert!(!ok, "connected without TLS to a server that requires it");
    assert!(
        log.contains("no encryption") || log.contains("pg_hba"),
        "{log}"
    );
}

/// A hub configuration with its hot store on the private Redis at `host`, trusting `ca`.
fn redis_config(dir: &Path, redis: &TlsRedis, host: &str, ca: &Path) {
    std::fs::write(
        dir.join("poolhub.toml"),
        format!(
            "[storage]\nhot = \"redis\"\nredis_url = \"rediss://{host}:{}\"\n\
             redis_ca_file = \"{}\"\n",
            redis.port,
            ca.display()
        ),
    )
    .expect("config");
}

/// The hub's /health status code once it has tried Redis.
async fn health(served: &Served) -> u16 {
    served.api().get("/health").await.status.as_u16()
}

#[test]
#[ignore = "starts its own redis-server with --tls-port"]
fn redis_over_tls_right_ca_works_wrong_ca_and_wrong_host_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("poolhub test CA");
    let (cert, key, _) = ca.server_cert(&["localhost"]);
    let redis = TlsRedis::start(dir.path(), &cert, &key, &ca.pem);
    let hub_dir = dir.path().join("hub");
    std::fs::create_dir_all(&hub_dir).expect("hub dir");
    let right = ca.write(&hub_dir.join("ca.pem"));
    let wrong = Ca::new("not the server's CA").write(&hub_dir.join("wrong-ca.pem"));
    let rt = rt();
    let mut args = SERVE.to_vec();
    args.push("--ephemeral");

    // The right CA, the certificate's own name: healthy, and the live status (held in
    // Redis, which listens on its TLS port only) makes the miner matchable.
    redis_config(&hub_dir, &redis, "localhost", &right);
    let served = Served::start(&hub_dir, &args, &[], Stdio::inherit());
    rt.block_on(async {
        common::eventually(Duration::from_secs(10), "healthy over TLS", || async {
            health(&served).await == 200
        })
        .await;
        let token = round_trip(&served, &addr(1)).await;
        let api = served.api();
        let r = api.heartbeat(&addr(1), &token, 0).await;
        assert!(r.status.is_success(), "{}", r.text);
        let m = api.match_model("llama", 1).await;
        assert_eq!(m.status, 200, "{}", m.text);
        assert_eq!(
            m.json["miners"][0]["address"].as_str(),
            Some(addr(1).as_str()),
            "{}",
            m.text
        );
    });
    assert!(served.sigterm().success());

    // The wrong CA, and a host the certificate does not name: the hub starts (Redis may
    // come back) but reports Redis unhealthy, with the certificate error in its log.
    for (host, ca_file, why) in [
        ("localhost", &wrong, "UnknownIssuer"),
        ("127.0.0.1", &right, "not valid for name"),
    ] {
        redis_config(&hub_dir, &redis, host, ca_file);
        let log = hub_dir.join("hub.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let served = Served::start(&hub_dir, &args, &[], Stdio::from(log_file));
        rt.block_on(async {
            for _ in 0..3 {
                assert_eq!(
                    health(&served).await,
                    503,
                    "{host} with {}",
                    ca_file.display()
                );
            }
        });
        assert!(served.sigterm().success());
        let text = std::fs::read_to_string(&log).expect("read log");
        assert!(text.contains(why), "{host}: no {why} in the log:\n{text}");
    }
}
