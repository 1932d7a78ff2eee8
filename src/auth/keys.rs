//! The in-memory ring of API keys, by digest.

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: keys, bans, deregistering any miner, and what a client may do.
    Admin,
    /// Request matches and report the outcomes of its own matches.
    Client,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            other => Err(format!(
                "role must be \"admin\" or \"client\", not {other:?}"
            )),
        }
    }
}

/// A key as stored: never the secret, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Stable id: names the key in the API, in logs and in the matches it made.
    pub id: u64,
    /// The operator's label ("coordinator-1").
    pub name: String,
    pub role: Role,
    /// Unix ms.
    pub created_at: u64,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
}

/// The party behind a request, as far as keys tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator's admin secret (`POOLHUB_ADMIN_TOKEN` / `auth.admin_token_file`).
    Operator,
    /// A key created through the admin API.
    Key(Arc<ApiKey>),
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Operator => Role::Admin,
            Caller::Key(k) => k.role,
        }
    }

    /// The key id that owns what this caller creates (`None` for the operator's secret).
    pub fn key_id(&self) -> Option<u64> {
        match self {
            Caller::Operator => None,
            Caller::Key(k) => Some(k.id),
        }
    }
}

/// SHA-256 of a secret: what is stored and compared instead of it.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret (256 bits), prefixed so a leaked one is recognisable in a scan.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("phk_{}", hex::encode(bytes))
}

/// Every valid key of this pool, by digest, plus the operator's admin digest.
///
/// Readers (every match and outcome) take a shared lock for one lookup; writers (key created
/// or revoked, here or on another hub) are rare.
#[derive(Default)]
pub struct KeyRing {
    /// Replaced when a reload names a new admin secret; read on every keyed request without
    /// a lock or a shared write.
    operator: arc_swap::ArcSwapOption<[u8; 32]>,
    by_digest: RwLock<HashMap<[u8; 32], Arc<ApiKey>>>,
}

impl KeyRing {
    /// A ring that knows the operator's admin secret by its digest (`None`: no admin access).
    pub fn new(operator: Option<[u8; 32]>) -> Self {
        Self {
            operator: arc_swap::ArcSwapOption::from(operator.map(Arc::new)),
            by_digest: RwLock::default(),
        }
    }

    /// Takes the operator's admin secret from a reloaded configuration.
    pub fn set_operator(&self, operator: Option<[u8; 32]>) {
        self.operator.store(operator.map(Arc::new));
    }

    /// Who holds `secret`, if anyone.
    pub fn caller(&self, secret: &str) -> Option<Caller> {
        let d = digest(secret);
        if self
            .operator
            .load()
            .as_deref()
            .is_some_and(|op| constant_time_eq(op, &d))
        {
            return Some(Caller::Operator);
        }
        self.by_digest.read().get(&d).cloned().map(Caller::Key)
    }

    /// Replaces the whole ring with what the durable store holds (start-up and resync), so a
    /// key revoked while an event was lost is dropped too.
    pub fn replace_all(&self, keys: Vec<ApiKey>) {
        let map = keys.into_iter().map(|k| (k.digest, Arc::new(k))).collect();
        *self.by_digest.write() = map;
    }

    pub fn insert(&self, key: ApiKey) {
        self.by_digest.write().insert(key.digest, Arc::new(key));
    }

    /// Drops the key with this id; returns whether it was there.
    pub fn revoke(&self, id: u64) -> bool {
        let mut g = self.by_digest.write();
        let before = g.len();
        g.retain(|_, k| k.id != id);
        g.len() != before
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<Arc<ApiKey>> {
        let mut v: Vec<_> = self.by_digest.read().values().cloned().collect();
        v.sort_by_key(|k| (k.created_at, k.id));
        v
    }

    pub fn len(&self) -> usize {
        self.by_digest.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, secret: &str, role: Role) -> ApiKey {
        ApiKey {
            id,
            name: format!("k{id}"),
            role,
            created_at: id,
            digest: digest(secret),
        }
    }

    #[test]
    fn a_secret_maps_to_its_key_and_nothing_else_does() {
        let ring = KeyRing::new(Some(digest("operator-secret")));
        let s1 = new_secret();
        let s2 = new_secret();
        assert_ne!(s1, s2);
        assert!(s1.starts_with("phk_") && s1.len() == 4 + 64);
        ring.insert(key(1, &s1, Role::Client));
        ring.insert(key(2, &s2, Role::Admin));
        assert_eq!(ring.caller(&s1).map(|c| c.key_id()), Some(Some(1)));
        assert_eq!(ring.caller(&s2).map(|c| c.role()), Some(Role::Admin));
        assert_eq!(ring.caller("operator-secret"), Some(Caller::Operator));
        assert_eq!(ring.caller(&s1[..s1.len() - 1]), None);
        assert_eq!(ring.caller(""), None);
    }

    #[test]
    fn revoking_and_replacing_take_effect_at_once() {
        let ring = KeyRing::new(None);
        let s1 = new_secret();
        let s2 = new_secret();
        ring.insert(key(1, &s1, Role::Client));
        ring.insert(key(2, &s2, Role::Client));
        assert!(ring.revoke(1));
        assert!(!ring.revoke(1));
        assert_eq!(ring.caller(&s1), None);
        assert!(ring.caller(&s2).is_some());
        ring.replace_all(vec![key(3, &s1, Role::Client)]);
        assert_eq!(
            ring.caller(&s2),
            None,
            "a key missing from the store is gone"
        );
        assert_eq!(ring.caller(&s1).and_then(|c| c.key_id()), Some(3));
        assert_eq!(ring.list().len(), 1);
    }

    #[test]
    fn no_operator_secret_means_no_operator() {
        let ring = KeyRing::new(None);
        assert_eq!(ring.caller(""), None);
        assert_eq!(ring.caller("anything"), None);
    }

    #[test]
    fn roles_parse() {
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert_eq!("client".parse::<Role>(), Ok(Role::Client));
        assert!("root".parse::<Role>().is_err());
    }
}
