//! The dashboard in a real headless browser: Chromium (Debian's package) driven by playwright
//! for Python (`tests/ui/dashboard.py`), against the built binary. It shows that the page
//! loads and lists a miner registered through the API, updates within 2 s of a status change
//! without a reload, and logs no console errors.

mod common;

use std::process::Stdio;

#[test]
fn the_embedded_page_is_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = common::Served::start(
        dir.path(),
        &["--ephemeral", "--host", "127.0.0.1", "--port", "0"],
        &[],
        Stdio::inherit(),
    );
    common::rt().block_on(async {
        for path in ["/", "/ui"] {
            let r = served.api().get(path).await;
            assert_eq!(r.status, 200);
            assert!(
                r.content_type.starts_with("text/html"),
                "{}",
                r.content_type
            );
            assert!(
                r.text.contains("/api/v1/events"),
                "the page follows the event stream"
            );
            // Self-contained: nothing is loaded from another origin.
            assert!(
                !r.text.contains("https://"),
                "the page loads something from outside"
            );
        }
    });
}

#[test]
#[ignore = "needs chromium (apt-get install chromium) and playwright (pip install playwright)"]
fn the_dashboard_shows_miners_and_updates_live_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = common::Served::start(
        dir.path(),
        &["--ephemeral", "--host", "127.0.0.1", "--port", "0"],
        &[],
        Stdio::inherit(),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/dashboard.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&served.base)
        .output()
        .expect("python3 runs the browser test");
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
