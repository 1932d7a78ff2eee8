//! What the TLS tests stand on: a throwaway certificate authority made in the test, and
//! private PostgreSQL and Redis servers that speak TLS with its certificates.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA of its own: its certificate, and a way to sign server certificates with it.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses): (certificate PEM,
    /// private key PEM, certificate DER).
    pub fn server_cert(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write CA");
        path.to_path_buf()
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when the test runs as root (PostgreSQL refuses to
/// run as root), as the test's own user otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown postgres {}", path.display());
    }
}

/// The newest installed PostgreSQL's server programs (Debian: /usr/lib/postgresql/N/bin).
fn pg_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "the TLS suite starts its own PostgreSQL: install the server (apt-get install \
             postgresql) so initdb and pg_ctl are found"
        ),
    }
}

/// A PostgreSQL cluster of its own with `ssl = on`, accepting TLS connections only
/// (`hostssl` in pg_hba.conf) on localhost, stopped when dropped.
pub struct TlsPostgres {
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
}

impl TlsPostgres {
    /// Starts it in `dir` (which must outlive it) with `cert`/`key` (PEM).
    pub fn start(dir: &Path, cert: &str, key: &str) -> Self {
        let bindir = pg_bindir();
        let root = dir.join("pg");
        let data = root.join("data");
        let socket_dir = root.join("run");
        std::fs::create_dir_all(&socket_dir).expect("pg dirs");
        // The server reads its certificate as its own user; the key must be private to it.
        std::fs::write(root.join("server.crt"), cert).expect("server.crt");
        std::fs::write(root.join("server.key"), key).expect("server.key");
        set_mode(&root.join("server.key"), 0o600);
        set_mode(dir, 0o755);
        chown_postgres(&root);
        let out = as_postgres(&bindir.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TLS or nothing from the network; the unix socket (for the checks here) stays plain.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("pg_hba.conf");
        chown_postgres(&data);
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=localhost -c ssl=on -c ssl_cert_file={} \
             -c ssl_key_file={} -c fsync=off -c max_connections=50",
            socket_dir.display(),
            root.join("server.crt").display(),
            root.join("server.key").display()
        );
        let out = as_postgres(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output()
            .expect("pg_ctl start");
        let server = Self {
            port,
            bindir,
            data,
            socket_dir,
        };
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(root.join("log")).unwrap_or_default()
        );
        server
    }

    /// A query over the unix socket (plain, as the server's superuser); its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = as_postgres(&self.bindir.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-Atc", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A redis-server with its TLS port only (`--port 0 --tls-port P`), killed when dropped.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    pub fn start(dir: &Path, cert: &str, key: &str, ca: &str) -> Self {
        let root = dir.join("redis");
        std::fs::create_dir_all(&root).expect("redis dir");
        for (name, body) in [("server.crt", cert), ("server.key", key), ("ca.crt", ca)] {
            std::fs::write(root.join(name), body).expect("redis TLS file");
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1 -::1"])
            .arg("--tls-cert-file")
            .arg(root.join("server.crt"))
            .arg("--tls-key-file")
            .arg(root.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(root.join("ca.crt"))
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the TLS suite starts its own redis-server: install it (apt-get install redis-server)");
        let server = Self { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not listen on its TLS port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `poolhub serve` that is expected to give up: its exit status and everything it logged.
pub fn serve_until_exit(dir: &Path, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolhub"))
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn poolhub");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("poolhub serve was expected to give up within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut log);
    }
    (status.success(), log)
}
