//! Online backup of the built binary: `poolhub backup --hub URL DEST` while registrations keep
//! landing. The copy opens with `poolhub serve --data DEST` and holds every registration
//! acknowledged before the backup began.

mod common;

use common::{addr, rt, Served, BIN};
use hyper::StatusCode;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const SECRET: &str = "an-admin-secret-for-the-backup-test";

/// `poolhub serve` on `dir/hub.redb` with `config` as its `poolhub.toml`.
fn start_hub(dir: &std::path::Path, config: &str, envs: &[(&str, &str)]) -> Served {
    std::fs::write(dir.join("poolhub.toml"), config).unwrap();
    Served::start(
        dir,
        &[
            "--config",
            "poolhub.toml",
            "--data",
            "hub.redb",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        envs,
        Stdio::inherit(),
    )
}

#[test]
fn a_backup_under_write_load_holds_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // The load registers from one address: its rate limit would refuse most of it.
    let hub = start_hub(
        dir.path(),
        "[auth.rate_limits]\nregister = { per_second = 0, burst = 0 }\n",
        &[("POOLHUB_ADMIN_TOKEN", SECRET)],
    );
    let api = hub.api();
    let rt = rt();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let dest = dir.path().join("copy.redb");
    let (before, total) = rt.block_on(async {
        // Four writers registering new miners until told to stop.
        let mut writers = Vec::new();
        for w in 0..4u32 {
            let (api, acked, stop) = (api.clone(), acked.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = addr(w * 1_000_000 + i);
                    api.register(&a, &["llama3.2"], 16384, 4).await;
                    acked.lock().unwrap().push(a);
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Everything acknowledged up to here must be in the copy.
        let before = acked.lock().unwrap().clone();
        let (hub_url, d) = (hub.base.clone(), dest.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["backup", "--hub", &hub_url])
                .arg(&d)
                .env("POOLHUB_ADMIN_TOKEN", SECRET)
                .output()
                .expect("run poolhub backup")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Writes went on during the backup.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let total = acked.lock().unwrap().len();
        (before, total)
    });
    assert!(before.len() > 20, "the load ran: {}", before.len());
    assert!(total > before.len(), "writes went on during the backup");
    assert!(hub.sigterm().success());

    // The copy opens as a hub's data and holds every write acknowledged before the backup.
    let copy = Served::start(
        dir.path(),
        &["--data", "copy.redb", "--host", "127.0.0.1", "--port", "0"],
        &[],
        Stdio::inherit(),
    );
    let api = copy.api();
    rt.block_on(async {
        for a in &before {
            let m = api.get(&format!("/api/v1/miners/{a}")).await;
            assert_eq!(m.status, StatusCode::OK, "{a} missing from the copy");
        }
        let status = api.get("/api/v1/status").await;
        let n = status.json["miners"]["registered"].as_u64().expect("count") as usize;
        assert!(n >= before.len() && n <= total, "{n} miners in the copy");
    });
    assert!(copy.sigterm().success());
    // Nothing else was left beside the copy (the hub's own temporary copy is gone).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["copy.redb", "hub.redb", "poolhub.toml"]);
}

#[test]
fn a_backup_without_the_admin_secret_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Served::start(
        dir.path(),
        &["--data", "hub.redb", "--host", "127.0.0.1", "--port", "0"],
        &[("POOLHUB_ADMIN_TOKEN", SECRET)],
        Stdio::inherit(),
    );
    let out = Command::new(BIN)
        .args(["backup", "--hub", &hub.base])
        .arg(dir.path().join("copy.redb"))
        .env("POOLHUB_ADMIN_TOKEN", "not-the-admin-secret-at-all")
        .output()
        .expect("run poolhub backup");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") || err.contains("403"), "{err}");
    assert!(!dir.path().join("copy.redb").exists());
    assert!(hub.sigterm().success());
}

#[test]
fn scheduled_backups_keep_the_newest_and_each_opens() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(
        dir.path(),
        "[server]\nmetrics_on_api_port = true\n\n[storage]\nbackup_dir = \"backups\"\n\
         backup_interval = 1\nbackup_keep = 2\n",
        &[],
    );
    let api = hub.api();
    let rt = rt();
    let a = addr(7);
    rt.block_on(async {
        api.register(&a, &["llama3.2"], 16384, 4).await;
        // Backups taken after the registration: at start, then every second.
        let metric = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let started = std::time::Instant::now();
        loop {
            let m = api.get("/metrics").await.text;
            if metric(&m, "poolhub_backups_total{result=\"ok\"} ") >= 4.0 {
                assert_eq!(metric(&m, "poolhub_backups_total{result=\"error\"} "), 0.0);
                assert_eq!(metric(&m, "poolhub_backup_interval_seconds "), 1.0);
                assert!(metric(&m, "poolhub_backup_last_success_timestamp_seconds ") > 1.7e9);
                break;
            }
            assert!(started.elapsed().as_secs() < 20, "no 4 backups in 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    assert!(hub.sigterm().success());
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "the newest two are kept: {names:?}");
    assert!(names
        .iter()
        .all(|n| n.starts_with("poolhub-") && n.ends_with("Z.redb")));
    // The newest holds the miner and opens as a hub's data.
    let newest = format!("backups/{}", names[1]);
    let copy = Served::start(
        dir.path(),
        &["--data", &newest, "--host", "127.0.0.1", "--port", "0"],
        &[],
        Stdio::inherit(),
    );
    let api = copy.api();
    rt.block_on(async {
        let m = api.get(&format!("/api/v1/miners/{a}")).await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    });
    assert!(copy.sigterm().success());
}
