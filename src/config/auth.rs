//! The `[auth]` section: who may register which address, who may request matches and report
//! outcomes, the operator's admin secret, and the rate limits.

use super::BadKey;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a registration must prove (`auth.miner_identity`, env `POOLHUB_MINER_IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MinerIdentity {
    /// The seed's unsigned registrations keep working (the first registrant gets the token);
    /// a signature by the address's key is still accepted, and takes over an unsigned one.
    #[default]
    Token,
    /// A registration must carry a valid EIP-4361 signature by the address's key.
    Signature,
}

/// Who may request matches and report outcomes (`auth.clients`, env `POOLHUB_CLIENT_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Anyone who reaches the port (the built-in default, so the seed's requests and tests need
    /// no set-up). The hub warns at start when it is open on a non-loopback address.
    #[default]
    Open,
    /// Only holders of a client or admin key (`Authorization: Bearer <key>`).
    Keys,
}

/// One class's token bucket: a sustained rate and the burst allowed above it. A rate of 0
/// turns the class's limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

impl Rate {
    const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Per-class rates (`[auth.rate_limits]`), each per party: a client key when one is given,
/// else the source address; status updates per miner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Registrations of new addresses, identity challenges and token recovery, per source IP.
    pub register: Rate,
    /// Status updates, per miner (when they carry its token; else per source IP).
    pub status: Rate,
    /// Match requests, per client key when the bearer is a valid key, else per source IP.
    #[serde(rename = "match")]
    pub match_: Rate,
    /// Outcome reports, per client key when the bearer is a valid key, else per source IP.
    pub outcome: Rate,
    /// Admin calls, per source IP.
    pub admin: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register: Rate::new(20, 100),
            status: Rate::new(10, 50),
            match_: Rate::new(10_000, 20_000),
            outcome: Rate::new(20_000, 40_000),
            admin: Rate::new(20, 100),
        }
    }
}

impl RateLimits {
    /// The rate of a class by its name ("register", "status", "match", "outcome", "admin").
    pub fn rate(&self, class: &str) -> Rate {
        match class {
            "register" => self.register,
            "status" => self.status,
            "match" => self.match_,
            "outcome" => self.outcome,
            _ => self.admin,
        }
    }

    /// Every class off (benchmarks, and tests that register thousands of miners at once).
    pub fn unlimited() -> Self {
        let off = Rate::new(0, 0);
        Self {
            register: off,
            status: off,
            match_: off,
            outcome: off,
            admin: off,
        }
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub miner_identity: MinerIdentity,
    pub clients: ClientAuth,
    /// The operator's admin secret. Prefer `POOLHUB_ADMIN_TOKEN` or `admin_token_file` to
    /// writing it here; it is never printed (`check-config` redacts it). Empty: no admin
    /// secret (keys can then only be managed by an admin-role key).
    pub admin_token: String,
    /// A file holding the admin secret (first line), e.g. a systemd credential.
    pub admin_token_file: Option<PathBuf>,
    /// Most reservations one client key may hold at once, so no client can drain the pool.
    pub max_reservations_per_client: u32,
    /// The domain a miner signs in to, named in the EIP-4361 message. Empty: the `Host` the
    /// challenge request was sent to.
    pub domain: String,
    /// The chain id named in the EIP-4361 message (the signature proves a key, not a chain).
    pub chain_id: u64,
    /// Seconds a challenge's nonce stays valid.
    pub challenge_ttl: u64,
    pub rate_limits: RateLimits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            miner_identity: MinerIdentity::Token,
            clients: ClientAuth::Open,
            admin_token: String::new(),
            admin_token_file: None,
            max_reservations_per_client: 256,
            domain: String::new(),
            chain_id: 1,
            challenge_ttl: 300,
            rate_limits: RateLimits::default(),
        }
    }
}

impl AuthConfig {
    /// Takes the admin secret from `admin_token_file` when one is named (its first line), so
    /// the rest of the program only ever looks at `admin_token`. A secret already given in the
    /// file or the environment wins over the file.
    pub(super) fn read_admin_token_file(&mut self) -> Result<(), BadKey> {
        let Some(path) = &self.admin_token_file else {
            return Ok(());
        };
        if !self.admin_token.is_empty() {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|e| BadKey {
            key: "auth.admin_token_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let secret = text.lines().next().unwrap_or_default().trim();
        if secret.len() < 16 {
            return Err(BadKey {
                key: "auth.admin_token_file".into(),
                message: format!(
                    "{}: the admin secret must be at least 16 characters",
                    path.display()
                ),
            });
        }
        self.admin_token = secret.to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_secret_comes_from_its_file_unless_given_directly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("admin");
        std::fs::write(&path, "0123456789abcdef-secret\nignored\n").expect("write");
        let mut a = AuthConfig {
            admin_token_file: Some(path.clone()),
            ..AuthConfig::default()
        };
        assert_eq!(a.read_admin_token_file(), Ok(()));
        assert_eq!(a.admin_token, "0123456789abcdef-secret");
        let mut direct = AuthConfig {
            admin_token: "from-the-environment-0001".into(),
            admin_token_file: Some(path.clone()),
            ..AuthConfig::default()
        };
        assert_eq!(direct.read_admin_token_file(), Ok(()));
        assert_eq!(direct.admin_token, "from-the-environment-0001");
        std::fs::write(&path, "short\n").expect("write");
        let mut weak = AuthConfig {
            admin_token_file: Some(path),
            ..AuthConfig::default()
        };
        assert_eq!(
            weak.read_admin_token_file().map_err(|e| e.key),
            Err("auth.admin_token_file".to_string())
        );
        let mut missing = AuthConfig {
            admin_token_file: Some(dir.path().join("absent")),
            ..AuthConfig::default()
        };
        assert!(missing.read_admin_token_file().is_err());
    }
}
