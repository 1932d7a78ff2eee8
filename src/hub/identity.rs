//! Miner identity: proof of an address's key by an EIP-4361 challenge signed with
//! `personal_sign`, and what a proof allows.
//!
//! * A challenge is issued per address and kept in the hot store (so any hub sharing it can
//!   check the answer); only the latest one counts, and taking it to check a signature
//!   removes it, so each nonce is used once, right or wrong.
//! * A registration with a valid signature marks the record *proven*. An unproven record
//!   (registered with no signature: possibly a squatter) is taken over by whoever proves the
//!   key without its token: a new token and a fresh record, since the old one's history was
//!   never the owner's. Proving the key *with* the record's token upgrades it in place (the
//!   token holder and the key holder are the same party). A proven record changes only with
//!   its token or another fresh signature.
//! * A lost token is replaced with a fresh signature; the record and its history stay.

use super::{hash_token, new_token, now_ms, Event, Hub, HubError, Registered, Registration};
use crate::config::MinerIdentity;
use crate::domain::identity::{Challenge, RawSignature};
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Invalid, Miner};
use crate::store::StoreError;
use rand::distr::{Alphanumeric, SampleString};
use std::time::Duration;

/// Length of a challenge nonce: EIP-4361 asks for at least 8 alphanumerics; 20 gives about
/// 119 bits, so a nonce cannot be guessed before it expires.
const NONCE_LEN: usize = 20;

/// What the wallet shows the operator above the signature request.
pub const STATEMENT: &str = "Prove that you hold this address's key to the pool hub.";

/// Refuses an address of the range kept for miners registered by name (403: it is not a
/// malformed address, it is one nobody may claim by address).
fn reserved(address: &Address) -> Result<(), HubError> {
    match address.check_not_reserved() {
        Ok(()) => Ok(()),
        Err(_) => Err(HubError::ReservedAddress),
    }
}

impl Hub {
    /// Issues a fresh challenge for `address`, replacing any open one. `host` is the `Host`
    /// the request was sent to, named as the domain when `auth.domain` is empty.
    pub async fn challenge(
        &self,
        address: Address,
        host: Option<&str>,
    ) -> Result<Challenge, HubError> {
        reserved(&address)?;
        let auth = &self.tuning().auth;
        let domain = if auth.domain.is_empty() {
            host.map(str::trim)
                .filter(|h| valid_host(h))
                .ok_or_else(|| {
                    Invalid::new(
                        "Host",
                        "the challenge names the hub by its Host header: send one (host[:port]), \
                     or set auth.domain",
                    )
                })?
        } else {
            auth.domain.as_str()
        };
        let now = now_ms();
        let ttl = Duration::from_secs(auth.challenge_ttl);
        let challenge = Challenge {
            domain: domain.to_string(),
            address,
            statement: STATEMENT.to_string(),
            uri: format!("http://{domain}/api/v1/miners/register"),
            chain_id: auth.chain_id,
            nonce: Alphanumeric.sample_string(&mut rand::rng(), NONCE_LEN),
            issued_at: now,
            expires_at: now.saturating_add(ttl.as_millis() as u64),
        };
        self.hot
            .put_challenge(&challenge, ttl)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(challenge)
    }

    /// Takes the open challenge of `address` and checks `signature` against it. The
    /// challenge is gone afterwards whatever the answer: a nonce is used once.
    async fn prove(&self, address: &Address, signature: &RawSignature) -> Result<(), HubError> {
        let challenge = self
            .hot
            .take_challenge(address)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or(HubError::BadSignature(
                "no open challenge for this address (each is used once and expires): request \
                 a new one from /api/v1/miners/{address}/challenge",
            ))?;
        challenge.verify(signature, now_ms()).map_err(|_| {
            HubError::BadSignature(
                "the signature does not verify: it must be personal_sign by the address's key \
                 over the latest challenge's message, before it expires",
            )
        })
    }

    /// Registers with an optional signature over the latest challenge for the address (see
    /// the module doc for what a proof allows). Without one this is [`Hub::register`],
    /// unless `auth.miner_identity = "signature"`.
    pub async fn register_signed(
        &self,
        reg: Registration,
        token: Option<&str>,
        signature: Option<&RawSignature>,
    ) -> Result<Registered, HubError> {
        // The named miners' range: reached only by name, never by an address's key.
        reserved(&reg.address)?;
        let Some(signature) = signature else {
            if self.tuning().auth.miner_identity == MinerIdentity::Signature {
                return self.register_proven_with_token(reg, token).await;
            }
            return self.register(reg, token).await;
        };
        let _guard = self.lock_for(&reg.address).lock().await;
        self.prove(&reg.address, signature).await?;
        let now = now_ms();
        let current = match self.registry.get(&reg.address) {
            Some(v) => Some((v.miner.as_ref().clone(), v.stats, v.availability)),
            None => self
                .durable
                .load_miner(&reg.address)
                .await
                .map_err(|e| self.store_error(e))?
                .map(|s| (s.miner, s.stats, s.availability)),
        };
        let Some((current, stats, availability)) = current else {
            return self.insert_proven(reg, now).await;
        };
        let token_ok = token.is_some_and(|t| self.authorize(&current, Some(t)).is_ok());
        if !current.proven && !token_ok {
            // Registered without proof by someone who is not the prover: the record was
            // never the owner's, so the owner gets a fresh one.
            return self.take_over(reg, &current, now).await;
        }
        // The same owner: proven before, or the holder of the unproven record's token now
        // proving the key (its history was its own all along). Keep the token it holds, or
        // issue a new one if it did not send it (it may have lost it).
        let issued = (!token_ok).then(new_token);
        let miner = Miner {
            address: reg.address,
            endpoint: reg.endpoint,
            capabilities: reg.capabilities,
            stake: reg.stake,
            token_hash: issued
                .as_deref()
                .map_or_else(|| current.token_hash.clone(), hash_token),
            registered_at: current.registered_at,
            updated_at: now,
            proven: true,
            profile: None,
        };
        self.commit_replacement(&current, miner, stats, availability, false)
            .await?;
        tracing::info!(address = %reg.address, "proven miner re-registered");
        self.registered(&reg.address, false, issued)
    }

    /// `miner_identity = "signature"` without a signature: only a proven miner updating its
    /// registration with its own token gets through.
    async fn register_proven_with_token(
        &self,
        reg: Registration,
        token: Option<&str>,
    ) -> Result<Registered, HubError> {
        let proven = match self.registry.get(&reg.address) {
            Some(v) => v.miner.proven,
            None => false,
        };
        if !proven || token.is_none() {
            return Err(HubError::SignatureRequired);
        }
        self.register(reg, token).await
    }

    /// A new address, proven. The caller holds the miner's lock.
    async fn insert_proven(&self, reg: Registration, now: u64) -> Result<Registered, HubError> {
        let issued = new_token();
        let miner = Miner {
            address: reg.address,
            endpoint: reg.endpoint,
            capabilities: reg.capabilities,
            stake: reg.stake,
            token_hash: hash_token(&issued),
            registered_at: now,
            updated_at: now,
            proven: true,
            profile: None,
        };
        match self.durable.insert_miner(&miner).await {
            Ok(()) => {}
            // Registered through another hub since it was read: the proof was spent, so the
            // caller asks again and meets that record.
            Err(StoreError::AlreadyExists) => return Err(HubError::Conflict(reg.address)),
            Err(e) => return Err(self.store_error(e)),
        }
        let (stats, avail) = (MinerStats::default(), Availability::default());
        let (score, cooldown) = self.score_now(&stats, &avail, miner.stake, now);
        self.registry.upsert(miner, stats, avail, score, cooldown);
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Miner {
            address: reg.address,
        });
        tracing::info!(address = %reg.address, "proven miner registered");
        self.registered(&reg.address, true, Some(issued))
    }

    /// The proven owner takes over an unproven record: a new token, a fresh record (new
    /// `registered_at`, no statistics, no live status). The caller holds the miner's lock.
    async fn take_over(
        &self,
        reg: Registration,
        current: &Miner,
        now: u64,
    ) -> Result<Registered, HubError> {
        let issued = new_token();
        let miner = Miner {
            address: reg.address,
            endpoint: reg.endpoint,
            capabilities: reg.capabilities,
            stake: reg.stake,
            token_hash: hash_token(&issued),
            registered_at: now,
            updated_at: now,
            proven: true,
            profile: None,
        };
        // The index keeps live status across an upsert; the squatter's must not carry over.
        self.registry.remove(&reg.address);
        if let Err(e) = self.hot.remove_status(&reg.address).await {
            tracing::warn!(address = %reg.address, error = %e, "cannot remove live status");
        }
        self.commit_replacement(
            current,
            miner,
            MinerStats::default(),
            Availability::default(),
            true,
        )
        .await?;
        tracing::info!(address = %reg.address, "unproven registration taken over by the address's key");
        self.registered(&reg.address, true, Some(issued))
    }

    /// Commits `miner` in place of `current` (checked by its token hash), applies it to the
    /// index and tells the other hubs (a changed token hash and `updated_at` make them
    /// reload it, and a changed `registered_at` makes them drop the old statistics).
    async fn commit_replacement(
        &self,
        current: &Miner,
        miner: Miner,
        stats: MinerStats,
        availability: Availability,
        fresh: bool,
    ) -> Result<(), HubError> {
        let address = miner.address;
        match self
            .durable
            .replace_miner(&miner, &current.token_hash, fresh)
            .await
        {
            Ok(()) => {}
            Err(StoreError::TokenMismatch) => return Err(HubError::Conflict(address)),
            Err(StoreError::NotFound) => return Err(HubError::MinerNotFound(address)),
            Err(e) => return Err(self.store_error(e)),
        }
        let (score, cooldown) = self.score_now(&stats, &availability, miner.stake, now_ms());
        self.registry
            .upsert(miner, stats, availability, score, cooldown);
        self.metrics.miners_total.set(self.registry.len() as i64);
        self.publish(Event::Miner { address });
        Ok(())
    }

    /// Replaces a lost token: a signature over a fresh challenge proves the key; the old
    /// token stops working at once, the record and its history stay (and it is proven now).
    pub async fn reissue_token(
        &self,
        address: &Address,
        signature: &RawSignature,
    ) -> Result<String, HubError> {
        reserved(address)?;
        let _guard = self.lock_for(address).lock().await;
        self.prove(address, signature).await?;
        let (current, stats, availability) = match self.registry.get(address) {
            Some(v) => (v.miner.as_ref().clone(), v.stats, v.availability),
            None => {
                let s = self
                    .durable
                    .load_miner(address)
                    .await
                    .map_err(|e| self.store_error(e))?
                    .ok_or(HubError::MinerNotFound(*address))?;
                (s.miner, s.stats, s.availability)
            }
        };
        let issued = new_token();
        let miner = Miner {
            token_hash: hash_token(&issued),
            updated_at: now_ms().max(current.updated_at),
            proven: true,
            ..current.clone()
        };
        self.commit_replacement(&current, miner, stats, availability, false)
            .await?;
        tracing::info!(address = %address, "miner token reissued");
        Ok(issued)
    }
}

/// A `Host` header value fit to name the hub in a message: host[:port] of printable ASCII
/// without spaces or the characters that would change the message's or URI's structure.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identity::personal_message_hash;
    use crate::hub::tests::{hub, registration};
    use k256::ecdsa::SigningKey;

    /// Hardhat's test account #0.
    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const OWNER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

    fn sign(message: &str) -> RawSignature {
        let key = SigningKey::from_slice(&hex::decode(KEY).expect("hex")).expect("key");
        let (sig, recid) = key
            .sign_prehash_recoverable(&personal_message_hash(message.as_bytes()))
            .expect("sign");
        format!(
            "0x{}{:02x}",
            hex::encode(sig.to_bytes()),
            27 + recid.to_byte()
        )
        .parse()
        .expect("signature")
    }

    /// A signature over a challenge whose time is up is refused even while the store still
    /// holds it, and the challenge is spent by the attempt.
    #[tokio::test]
    async fn an_expired_challenge_is_refused_and_spent() {
        let hub = hub().await;
        let owner: Address = OWNER.parse().expect("address");
        let now = now_ms();
        let stale = Challenge {
            domain: "hub.example".into(),
            address: owner,
            statement: STATEMENT.into(),
            uri: "http://hub.example/api/v1/miners/register".into(),
            chain_id: 1,
            nonce: "expiredNonce12345678".into(),
            issued_at: now - 600_000,
            expires_at: now - 1,
        };
        hub.hot
            .put_challenge(&stale, Duration::from_secs(60))
            .await
            .expect("put");
        let sig = sign(&stale.message());
        let mut reg = registration(1);
        reg.address = owner;
        assert!(matches!(
            hub.register_signed(reg.clone(), None, Some(&sig)).await,
            Err(HubError::BadSignature(_))
        ));
        assert!(hub.registry.get(&owner).is_none(), "nothing registered");
        assert_eq!(hub.hot.take_challenge(&owner).await.expect("take"), None);

        // The same flow with a live challenge works, and marks the miner proven.
        let fresh = hub
            .challenge(owner, Some("hub.example"))
            .await
            .expect("challenge");
        let r = hub
            .register_signed(reg, None, Some(&sign(&fresh.message())))
            .await
            .expect("registered");
        assert!(r.created && r.token.is_some() && r.view.miner.proven);
    }

    /// A hub that missed the events (none travel between these two) learns of a takeover
    /// and of a reissued token at its periodic resync: the squatter's token and statistics
    /// are gone there too, and a reissue keeps the statistics.
    #[tokio::test]
    async fn resync_carries_a_takeover_and_a_reissue_to_a_hub_without_events() {
        use crate::hub::tests::{hub_on, match_request};
        use crate::hub::OutcomeReport;
        use crate::store::redb::RedbStore;
        use std::sync::Arc;
        let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
        let a = hub_on(durable.clone()).await;
        let b = hub_on(durable).await;
        let owner: Address = OWNER.parse().expect("address");
        let mut reg = registration(1);
        reg.address = owner;
        let squatter = a
            .register(reg.clone(), None)
            .await
            .expect("squat")
            .token
            .expect("token");
        a.update_status(&owner, Some(&squatter), crate::hub::tests::online())
            .await
            .expect("status");
        let m = a.match_job(match_request()).await.expect("match");
        a.report_outcome(OutcomeReport {
            match_id: m.match_id.to_string(),
            address: owner,
            success: true,
            latency_ms: Some(100.0),
            error: None,
        })
        .await
        .expect("outcome");
        b.resync().await.expect("resync");
        let seen = b.registry.get(&owner).expect("B knows the squatter");
        assert_eq!(seen.stats.jobs_total, 1);
        assert!(b.authorize(&seen.miner, Some(&squatter)).is_ok());

        let c = a
            .challenge(owner, Some("hub.example"))
            .await
            .expect("challenge");
        let owner_token = a
            .register_signed(reg, None, Some(&sign(&c.message())))
            .await
            .expect("takeover")
            .token
            .expect("token");
        b.resync().await.expect("resync");
        let seen = b.registry.get(&owner).expect("still registered");
        assert!(seen.miner.proven);
        assert_eq!(
            seen.stats.jobs_total, 0,
            "the squatter's statistics are gone on B"
        );
        assert!(matches!(
            b.authorize(&seen.miner, Some(&squatter)),
            Err(HubError::Forbidden(_))
        ));
        assert!(b.authorize(&seen.miner, Some(&owner_token)).is_ok());

        let c = a
            .challenge(owner, Some("hub.example"))
            .await
            .expect("challenge");
        let reissued = a
            .reissue_token(&owner, &sign(&c.message()))
            .await
            .expect("reissue");
        b.resync().await.expect("resync");
        let seen = b.registry.get(&owner).expect("still registered");
        assert!(b.authorize(&seen.miner, Some(&owner_token)).is_err());
        assert!(b.authorize(&seen.miner, Some(&reissued)).is_ok());
    }

    #[tokio::test]
    async fn a_challenge_needs_a_domain() {
        let hub = hub().await;
        let owner: Address = OWNER.parse().expect("address");
        match hub.challenge(owner, None).await {
            Err(HubError::Invalid(e)) => assert_eq!(e.field, "Host"),
            other => panic!("{other:?}"),
        }
        let c = hub
            .challenge(owner, Some("pool.example:8000"))
            .await
            .expect("ok");
        assert_eq!(c.uri, "http://pool.example:8000/api/v1/miners/register");
        assert!(c.nonce.len() >= 16 && c.nonce.chars().all(|ch| ch.is_ascii_alphanumeric()));
    }

    #[test]
    fn hosts_that_would_bend_the_message_are_refused() {
        assert!(valid_host("pool.example:8000"));
        assert!(valid_host("[::1]:8000"));
        for bad in ["", "a b", "evil\nURI: x", "x/y", "a@b"] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }
}
