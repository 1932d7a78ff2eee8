//! The CLI's commands that talk to a running hub's admin API: `poolhub keys …` and
//! `poolhub backup --hub`, and the client and secret they (and `explain`, `replay`) use.

use crate::runtime;
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args)]
pub struct KeysArgs {
    /// The hub's API base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8000")]
    hub: String,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Subcommand)]
pub enum KeysAction {
    /// Create a key and print it. It is shown this once: the hub stores only its hash.
    Create {
        /// A label for the key ("coordinator-1"), up to 64 characters.
        #[arg(long)]
        name: String,
        /// `client` (matches and outcomes) or `admin` (also the admin API).
        #[arg(long, default_value = "client")]
        role: String,
    },
    /// List the live keys (never their secrets).
    List,
    /// Revoke a key by its id (as `create` and `list` print it), on every hub within 1 s.
    Revoke {
        /// The key's id: 16 hex digits.
        id: String,
    },
}

/// `poolhub backup --hub URL DEST`: the running hub streams a consistent copy of its data
/// (`POST /api/v1/admin/backup`), written beside DEST, synced, checked, then renamed to DEST.
pub fn backup_online(hub: &str, dest: &std::path::Path) -> ExitCode {
    use poolhub::store::redb::{install, partial_path};
    let fail = |what: String| {
        eprintln!("poolhub: backup failed: {what}");
        ExitCode::FAILURE
    };
    let Some(token) = admin_token() else {
        return ExitCode::FAILURE;
    };
    if dest.exists() {
        return fail(format!("{} already exists", dest.display()));
    }
    let tmp = match partial_path(dest) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let client = match admin_client(hub, token) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Owner-only: the copy holds token and key digests.
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let written = open
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))
        .and_then(|mut f| {
            let (answer, _) = rt
                .block_on(client.download("/api/v1/admin/backup", &mut f))
                .map_err(|e| e.to_string())?;
            if !answer.status.is_success() {
                return Err(format!(
                    "the hub answered {}: {}",
                    answer.status, answer.body
                ));
            }
            f.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return fail(e);
    }
    match install(&tmp, dest) {
        Ok(poolhub::store::redb::BackedUp { miners, outcomes }) => {
            eprintln!(
                "poolhub: backed up the hub at {hub} to {} ({miners} miners, {outcomes} outcomes; copy checked)",
                dest.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(poolhub::store::error_chain(&e)),
    }
}

/// The admin secret or admin key the CLI presents (POOLHUB_ADMIN_TOKEN); `None`, with the
/// message printed, when it is not set.
pub fn admin_token() -> Option<String> {
    match std::env::var("POOLHUB_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => {
            eprintln!(
                "poolhub: set POOLHUB_ADMIN_TOKEN to the hub's admin secret (auth.admin_token_file \
                 on the hub) or to an admin key"
            );
            None
        }
    }
}

/// The CLI's client for the hub at `hub`; an `https://` hub is checked against the CA in
/// POOLHUB_CA_FILE when that is set, else against the system's CAs.
pub fn admin_client(
    hub: &str,
    token: String,
) -> Result<poolhub::admin_client::AdminClient, poolhub::admin_client::ClientError> {
    let client = poolhub::admin_client::AdminClient::new(hub, token)?;
    match std::env::var_os("POOLHUB_CA_FILE").filter(|v| !v.is_empty()) {
        Some(ca) => client.trusting(std::path::Path::new(&ca)),
        None => Ok(client),
    }
}

/// `poolhub keys …`: one call to the hub's admin API, its answer printed.
pub fn keys(args: &KeysArgs) -> ExitCode {
    use hyper::{Method, StatusCode};
    use serde_json::{json, Value};
    let Some(token) = admin_token() else {
        return ExitCode::FAILURE;
    };
    let client = match admin_client(&args.hub, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poolhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (method, path, body) = match &args.action {
        KeysAction::Create { name, role } => (
            Method::POST,
            "/api/v1/admin/keys".to_string(),
            Some(json!({ "name": name, "role": role })),
        ),
        KeysAction::List => (Method::GET, "/api/v1/admin/keys".to_string(), None),
        KeysAction::Revoke { id } => (
            Method::DELETE,
            // Only the canonical form can name a key; anything else is refused by the hub
            // (and must not be able to change the path).
            format!(
                "/api/v1/admin/keys/{}",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ),
            None,
        ),
    };
    let answer = match rt.block_on(client.call(method, &path, body.as_ref())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("poolhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !answer.status.is_success() {
        let reason = answer
            .body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        let hint = match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " (is POOLHUB_ADMIN_TOKEN the hub's admin secret?)"
            }
            _ => "",
        };
        eprintln!(
            "poolhub: the hub refused: {} {reason}{hint}",
            answer.status.as_u16()
        );
        return ExitCode::FAILURE;
    }
    let field = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut out = std::io::stdout().lock();
    let printed = match &args.action {
        KeysAction::Create { .. } => {
            let b = &answer.body;
            eprintln!("poolhub: key created; it is shown only now, store it safely");
            writeln!(
                out,
                "key: {}\nid: {}\nname: {}\nrole: {}",
                field(b, "key"),
                field(b, "id"),
                field(b, "name"),
                field(b, "role")
            )
        }
        KeysAction::List => {
            let keys = answer
                .body
                .get("keys")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut r = writeln!(
                out,
                "{:<16}  {:<6}  {:<13}  NAME",
                "ID", "ROLE", "CREATED_MS"
            );
            for k in &keys {
                r = r.and_then(|()| {
                    writeln!(
                        out,
                        "{:<16}  {:<6}  {:<13}  {}",
                        field(k, "id"),
                        field(k, "role"),
                        field(k, "created_at"),
                        field(k, "name")
                    )
                });
            }
            r
        }
        KeysAction::Revoke { id } => {
            eprintln!("poolhub: key {id} revoked");
            Ok(())
        }
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolhub: cannot write the answer: {e}");
            ExitCode::FAILURE
        }
    }
}
