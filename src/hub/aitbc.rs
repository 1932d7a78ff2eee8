//! AITBC's miners and coordinator, served by the same registry, stores and rules as every
//! other miner: registration by name with the miner's own key, the heartbeat found by that
//! key, the match by requirements, and the SLA verdict.
//!
//! A named miner is an ordinary miner under its derived address
//! ([`Address::for_miner_id`]); its key is its token, stored hashed like every token. The
//! first registration of a name binds the name to its key: the same key updates the miner, a
//! different one is refused (AITBC's hub lets anyone overwrite a miner's address).

use super::{hash_token, now_ms, Hub, HubError, Registered, Registration};
use crate::domain::aitbc::{self, Ranking, Requirements, SlaStatus};
use crate::domain::profile::validate_api_key;
use crate::domain::{Address, Capabilities, Endpoint, MinerStatus, Profile};
use crate::registry::Handle;

/// A registration by name, parsed into domain values (the HTTP layer maps AITBC's fields).
#[derive(Debug, Clone)]
pub struct NamedRegistration {
    pub api_key: String,
    pub endpoint: Endpoint,
    pub capabilities: Capabilities,
    pub profile: Profile,
}

/// `/v1/sla/status`'s figures.
#[derive(Debug, Clone, Copy)]
pub struct Sla {
    pub status: SlaStatus,
    pub violations: usize,
    pub online: usize,
    pub at: u64,
}

impl Hub {
    /// Registers a miner by name, or updates it when `api_key` is its key (403 otherwise;
    /// 409 when the key already belongs to another named miner, since the heartbeat finds
    /// its miner by the key alone).
    pub async fn register_named(&self, reg: NamedRegistration) -> Result<Registered, HubError> {
        if self.tuning().auth.miner_identity == crate::config::MinerIdentity::Signature {
            return Err(HubError::NamedRegistrationRefused);
        }
        validate_api_key(&reg.api_key)?;
        let capabilities = reg.capabilities.validated_named()?;
        let profile = reg.profile.validated()?;
        let address = Address::for_miner_id(&profile.miner_id);
        let hash = hash_token(&reg.api_key);
        // The key check and the registration as one step: two names registering with one key
        // at once would otherwise both pass the check.
        let _one_at_a_time = self.named_lock.lock().await;
        if self
            .registry
            .named_by_key(&hash)
            .is_some_and(|other| other != address)
        {
            return Err(HubError::KeyInUse);
        }
        let registration = Registration {
            address,
            endpoint: reg.endpoint,
            capabilities,
            stake: 0,
            profile: Some(profile),
        };
        self.register_keyed(registration, Some(&reg.api_key), Some(&reg.api_key))
            .await
    }

    /// The named miner whose key this is, through the index (401 when none).
    pub fn named_miner(&self, api_key: &str) -> Result<Address, HubError> {
        self.registry
            .named_by_key(&hash_token(api_key))
            .ok_or(HubError::UnknownKey)
    }

    /// A heartbeat that names no miner: the key finds it, then it is an ordinary status.
    /// Returns the miner's name and the status as recorded.
    pub async fn heartbeat_by_key(
        &self,
        api_key: &str,
        status: MinerStatus,
    ) -> Result<(String, MinerStatus), HubError> {
        let address = self.named_miner(api_key)?;
        let status = self.update_status(&address, Some(api_key), status).await?;
        let name = self
            .registry
            .live(&address)
            .map_or_else(|| address.to_string(), |(m, _)| m.display_id());
        Ok((name, status))
    }

    /// Ranks the miners that could run a job with these requirements; reserves nothing.
    pub fn match_requirements(&self, req: &Requirements) -> Ranking<Handle> {
        let now = now_ms();
        self.registry
            .settle(now, self.tuning().policy.heartbeat_timeout_ms);
        let r = self
            .registry
            .rank_by_requirements(req, &self.tuning().policy, now);
        self.matches_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// The SLA verdict from what the index knows now (see [`aitbc::sla_status`]).
    pub fn sla(&self) -> Sla {
        let now = now_ms();
        let c = self
            .registry
            .counts(now, self.tuning().policy.heartbeat_timeout_ms);
        Sla {
            status: aitbc::sla_status(c.registered, c.online, c.violations),
            violations: c.violations,
            online: c.online,
            at: now,
        }
    }

    /// Miners with a fresh heartbeat (`/health`'s `miners_online`).
    pub fn miners_online(&self) -> usize {
        self.registry
            .counts(now_ms(), self.tuning().policy.heartbeat_timeout_ms)
            .online
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hub, online};
    use super::*;
    use std::collections::BTreeMap;

    fn named(id: &str, key: &str, addr: &str) -> NamedRegistration {
        NamedRegistration {
            api_key: key.into(),
            endpoint: Endpoint::try_from(addr.to_string()).expect("url"),
            capabilities: Capabilities {
                models: Vec::new(),
                gpu_memory: 24 * 1024,
                max_concurrent_jobs: 2,
                job_types: vec!["inference".into(), "training".into()],
            },
            profile: Profile {
                miner_id: id.into(),
                proto: "http".into(),
                gpu_name: Some("RTX 4090".into()),
                cpu_cores: Some(16),
                ram_gb: Some(64.0),
                base_price: Some("0.01".into()),
                tags: BTreeMap::new(),
                region: Some("eu".into()),
            },
        }
    }

    const KEY: &str = "miner-one-secret-key";

    #[tokio::test]
    async fn a_name_is_bound_to_its_first_key() {
        let hub = hub().await;
        let r = hub
            .register_named(named("aitbc-miner-1", KEY, "http://h1:8101"))
            .await
            .expect("register");
        assert!(r.created);
        assert!(r.token.is_none(), "the miner's own key is its token");
        let address = Address::for_miner_id("aitbc-miner-1");
        assert_eq!(r.view.miner.address, address);
        // Again with the same key: an update.
        let r = hub
            .register_named(named("aitbc-miner-1", KEY, "http://h1:9000"))
            .await
            .expect("re-register");
        assert!(!r.created);
        assert_eq!(r.view.miner.endpoint.as_str(), "http://h1:9000");
        // Another key: refused, and nothing changed.
        let err = hub
            .register_named(named(
                "aitbc-miner-1",
                "attacker-key-0000000",
                "http://evil",
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::Forbidden(_)), "{err:?}");
        let view = hub.get(&address).await.expect("get");
        assert_eq!(view.miner.endpoint.as_str(), "http://h1:9000");
        // The key of one named miner cannot be another's.
        let err = hub
            .register_named(named("aitbc-miner-2", KEY, "http://h2"))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::KeyInUse), "{err:?}");
        // Short keys are refused by name.
        match hub
            .register_named(named("aitbc-miner-3", "short", "http://h3"))
            .await
        {
            Err(HubError::Invalid(e)) => assert_eq!(e.field, "api_key"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_heartbeat_finds_its_miner_by_key_and_makes_it_matchable() {
        let hub = hub().await;
        hub.register_named(named("aitbc-miner-1", KEY, "http://h1:8101"))
            .await
            .expect("register");
        assert!(matches!(
            hub.heartbeat_by_key("unknown-key-0000000000", online())
                .await,
            Err(HubError::UnknownKey)
        ));
        let req = Requirements {
            min_gpu_memory: 16 * 1024,
            min_ram_gb: 32.0,
            capabilities_any: vec!["training".into()],
            region: None,
            top_k: 5,
        };
        assert!(hub.match_requirements(&req).offers.is_empty(), "offline");
        let (name, _) = hub.heartbeat_by_key(KEY, online()).await.expect("beat");
        assert_eq!(name, "aitbc-miner-1");
        let a = Address::for_miner_id("aitbc-miner-1");
        let m = hub.match_requirements(&req);
        assert_eq!(m.offers.len(), 1);
        assert_eq!(
            m.offers[0]
                .key
                .miner
                .profile
                .as_ref()
                .map(|p| p.miner_id.as_str()),
            Some("aitbc-miner-1")
        );
        assert_eq!(hub.miners_online(), 1);
        assert_eq!(hub.sla().status, SlaStatus::Healthy);
        // Deregistered: the key no longer finds it.
        hub.deregister(&a, Some(KEY)).await.expect("deregister");
        assert!(matches!(hub.named_miner(KEY), Err(HubError::UnknownKey)));
    }

    /// A hub that requires signatures refuses registration by name (a name proves no key),
    /// naming the setting.
    #[tokio::test]
    async fn a_signature_hub_refuses_registration_by_name() {
        let mut cfg = crate::config::Config::default();
        cfg.storage.ephemeral = true;
        cfg.auth.miner_identity = crate::config::MinerIdentity::Signature;
        let durable =
            std::sync::Arc::new(crate::store::redb::RedbStore::in_memory(None).expect("redb"));
        let hot = std::sync::Arc::new(crate::store::moka::MokaHotStore::new(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(3600),
            1000,
        ));
        let hub = Hub::open(
            cfg,
            durable,
            hot,
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        )
        .await
        .expect("hub");
        let err = hub
            .register_named(named("aitbc-miner-1", KEY, "http://h1:8101"))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::NamedRegistrationRefused), "{err:?}");
        assert!(err.to_string().contains("auth.miner_identity"));
        assert!(hub.named_miner(KEY).is_err());
    }

    #[tokio::test]
    async fn address_routes_refuse_the_reserved_range() {
        let hub = hub().await;
        let mut reg = super::super::tests::registration(1);
        reg.address = Address::for_miner_id("aitbc-miner-1");
        match hub.register_signed(reg, None, None).await {
            Err(HubError::ReservedAddress) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            hub.challenge(Address::for_miner_id("x"), Some("hub.example"))
                .await,
            Err(HubError::ReservedAddress)
        ));
    }
}
