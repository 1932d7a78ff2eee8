//! Shared helpers for the black-box tests: a tiny HTTP client and miner fixtures.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::net::SocketAddr;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A client bound to one hub.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: HttpClient,
}

/// A response: status, headers' content type, and the body parsed as JSON (or Null).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self::from_base(format!("http://{addr}"))
    }

    pub fn from_base(base: String) -> Self {
        Self {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let res = self.client.request(req).await.expect("http request");
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(body.to_string().into_bytes()),
            token,
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Resp {
        self.send(Method::POST, path, Some(body.to_vec()), None)
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::DELETE, path, None, token).await
    }

    /// Registers a miner and returns its token.
    pub async fn register(
        &self,
        address: &str,
        models: &[&str],
        gpu_memory: u64,
        max_jobs: u32,
    ) -> String {
        let r = self
            .post(
                "/api/v1/miners/register",
                &registration(address, models, gpu_memory, max_jobs),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["token"].as_str().expect("token").to_string()
    }

    pub async fn heartbeat(&self, address: &str, token: &str, load: u32) -> Resp {
        self.post(
            &format!("/api/v1/miners/{address}/status"),
            &json!({"available": true, "current_load": load, "gpu_utilization": 0.5, "temperature": 60}),
            Some(token),
        )
        .await
    }

    pub async fn match_model(&self, model: &str, limit: usize) -> Resp {
        self.post(
            "/api/v1/match",
            &json!({"job_type": "inference", "model": model, "limit": limit,
                    "requirements": {"min_gpu_memory": 8192, "max_latency": 5000}}),
            None,
        )
        .await
    }

    pub async fn outcome(
        &self,
        match_id: &str,
        address: &str,
        success: bool,
        latency: f64,
    ) -> Resp {
        self.post(
            "/api/v1/outcomes",
            &json!({"match_id": match_id, "address": address, "success": success, "latency_ms": latency}),
            None,
        )
        .await
    }
}

pub fn registration(address: &str, models: &[&str], gpu_memory: u64, max_jobs: u32) -> Value {
    json!({
        "address": address,
        "endpoint": format!("http://{}.example.com:8080", &address[2..10]),
        "capabilities": {"models": models, "gpu_memory": gpu_memory, "max_concurrent_jobs": max_jobs},
        "stake": 10000
    })
}

/// A distinct valid address for index `i`.
pub fn addr(i: u32) -> String {
    format!("0x{:040x}", u128::from(i) + 0xa000)
}

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_poolhub");

/// A runtime for the tests that drive a child process from synchronous code.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `poolhub serve` child process, killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    /// The address line it printed, made reachable (0.0.0.0 becomes 127.0.0.1).
    pub base: String,
}

impl Served {
    /// Spawns `poolhub serve ARGS` in `dir` and waits for the address line on stdout.
    /// Inherited logging and systemd variables are removed; LOG_LEVEL is `warn` unless
    /// `envs` says otherwise.
    pub fn start(
        dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Self {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("serve").args(args).current_dir(dir);
        for var in [
            "RUST_LOG",
            "LOG_FORMAT",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "DATABASE_URL",
            "REDIS_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn poolhub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("poolhub printed its address");
        let base = line.trim().to_string();
        assert!(
            base.starts_with("http://") || base.starts_with("https://"),
            "first line {base:?}"
        );
        Self {
            child,
            base: base.replace("0.0.0.0", "127.0.0.1"),
        }
    }

    pub fn api(&self) -> Api {
        Api::from_base(self.base.clone())
    }

    /// Sends a signal with kill(1), e.g. "-TERM".
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit, failing after `limit`.
    pub fn wait(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                started.elapsed() < limit,
                "poolhub did not stop in {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (at most 15 s later).
    pub fn sigterm(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.wait(std::time::Duration::from_secs(15))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `personal_sign(message)` with the secp256k1 key `hex_key`, as a wallet returns it:
/// `0x` + r || s || v (v = 27/28), over the EIP-191 hash of `message`.
pub fn personal_sign(hex_key: &str, message: &str) -> String {
    let bytes = hex::decode(hex_key).expect("hex key");
    let key = k256::ecdsa::SigningKey::from_slice(&bytes).expect("secp256k1 key");
    let hash = poolhub::domain::identity::personal_message_hash(message.as_bytes());
    let (sig, recid) = key.sign_prehash_recoverable(&hash).expect("sign");
    let mut out = sig.to_bytes().to_vec();
    out.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(out))
}

/// Polls `check` until it holds, for at most `within` (a bound on a wait, never a measured
/// duration a test asserts).
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
