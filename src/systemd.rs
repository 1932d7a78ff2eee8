//! systemd integration: the `sd_notify` protocol (readiness, stopping, watchdog).
//!
//! Under a `Type=notify` unit, systemd passes the path of a datagram socket in `NOTIFY_SOCKET`
//! and, with `WatchdogSec=`, the watchdog interval in `WATCHDOG_USEC`. The hub sends
//! `READY=1` once both listeners are bound and storage is open ([`notify_ready`]),
//! `STOPPING=1` when a shutdown signal arrives ([`notify_stopping`]), and `WATCHDOG=1` from a
//! task on its runtime every half interval ([`spawn_watchdog`]), so a wedged runtime gets the
//! service restarted.
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is absent, so the same binary runs unchanged
//! from a shell, in tests and under other supervisors. The protocol is small enough to speak
//! directly (one datagram per message), so this needs no C library and no extra crate.

use std::ffi::OsStr;
use std::time::Duration;

/// Sends `state` (newline-separated `VAR=value` assignments, e.g. `"READY=1"`) to systemd.
///
/// Returns `Ok(false)` without doing anything when `NOTIFY_SOCKET` is unset or empty (not
/// running under systemd), `Ok(true)` when the message was sent.
pub fn notify(state: &str) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) if !path.is_empty() => send(&path, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket at `socket`: a file-system path, or an abstract
/// socket name when it starts with `@` (as systemd passes it).
#[cfg(unix)]
pub fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            Ok(())
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract notification sockets exist only on Linux",
            ))
        }
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(socket))?;
        Ok(())
    }
}

/// Not a Unix system: there is no systemd to notify.
#[cfg(not(unix))]
pub fn send(_socket: &OsStr, _state: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "systemd notification needs a Unix system",
    ))
}

fn notify_logged(state: &str, what: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!("systemd: sent {what}"),
        Ok(false) => {}
        Err(e) => tracing::warn!("systemd: cannot send {what} to NOTIFY_SOCKET: {e}"),
    }
}

/// Tells systemd the service is ready (`READY=1`), with `status` as its one-line status
/// (`STATUS=`, shown by `systemctl status`). A no-op outside systemd.
pub fn notify_ready(status: &str) {
    notify_logged(&format!("READY=1\nSTATUS={}", one_line(status)), "READY=1");
}

/// Tells systemd a configuration reload began (`RELOADING=1`, with the `MONOTONIC_USEC=`
/// newer systemd versions ask for); [`notify_ready`] ends it. A no-op outside systemd.
pub fn notify_reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1000;
    notify_logged(
        &format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"),
        "RELOADING=1",
    );
}

/// Tells systemd the service is stopping (`STOPPING=1`). A no-op outside systemd.
pub fn notify_stopping() {
    notify_logged(
        "STOPPING=1\nSTATUS=stopping: draining requests and flushing storage",
        "STOPPING=1",
    );
}

/// Updates the one-line status shown by `systemctl status` (`STATUS=`). A no-op outside
/// systemd.
pub fn notify_status(status: &str) {
    notify_logged(&format!("STATUS={}", one_line(status)), "STATUS");
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog interval systemd expects pings within, as `sd_watchdog_enabled` reads it:
/// `WATCHDOG_USEC` set to a positive number of microseconds, and `WATCHDOG_PID`, when set,
/// naming this process. `None` when the watchdog is off or `NOTIFY_SOCKET` is absent.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(|k| std::env::var(k).ok(), std::process::id())
}

/// [`watchdog_interval`] with the environment given as `get` and this process's id as `pid`.
pub fn watchdog_interval_from(get: impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    get("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
    let usec: u64 = get("WATCHDOG_USEC")?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(p) = get("WATCHDOG_PID") {
        if p.trim().parse::<u32>().ok()? != pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// When systemd's watchdog is on ([`watchdog_interval`]), spawns a task on `tracker` that
/// sends `WATCHDOG=1` every half interval until `cancel` fires, and returns true. Returns false
/// (nothing spawned) when the watchdog is off. The server cancels it only after requests are
/// drained, so a long drain is not mistaken for a hang. Must be called within a tokio runtime.
pub fn spawn_watchdog(
    cancel: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> bool {
    let Some(interval) = watchdog_interval() else {
        return false;
    };
    let period = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog on: pinging every {period:?}"
    );
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => break,
            }
            match notify("WATCHDOG=1") {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("systemd: cannot send WATCHDOG=1: {e}");
                }
                Err(_) => {}
            }
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let s = ("NOTIFY_SOCKET", "/run/systemd/notify");
        assert_eq!(
            watchdog_interval_from(env(&[s, ("WATCHDOG_USEC", "30000000")]), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(
                env(&[s, ("WATCHDOG_USEC", "2000"), ("WATCHDOG_PID", "7")]),
                7
            ),
            Some(Duration::from_millis(2))
        );
        // Meant for another process (e.g. inherited by a child): off.
        assert_eq!(
            watchdog_interval_from(
                env(&[s, ("WATCHDOG_USEC", "2000"), ("WATCHDOG_PID", "8")]),
                7
            ),
            None
        );
        assert_eq!(
            watchdog_interval_from(env(&[s, ("WATCHDOG_USEC", "0")]), 7),
            None
        );
        assert_eq!(
            watchdog_interval_from(env(&[s, ("WATCHDOG_USEC", "x")]), 7),
            None
        );
        assert_eq!(watchdog_interval_from(env(&[s]), 7), None);
        // No socket, nobody to ping.
        assert_eq!(
            watchdog_interval_from(env(&[("WATCHDOG_USEC", "2000")]), 7),
            None
        );
        assert_eq!(
            watchdog_interval_from(env(&[("NOTIFY_SOCKET", ""), ("WATCHDOG_USEC", "1")]), 7),
            None
        );
    }

    #[cfg(unix)]
    #[test]
    fn send_reaches_a_path_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=x").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn send_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let name = format!(
            "poolhub-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}
