//! The hub's own tests (a second hub on a shared store, outcome edge cases).

use super::*;
use crate::store::moka::MokaHotStore;
use crate::store::redb::RedbStore;
use std::collections::HashSet;
use std::time::Duration;

/// A hub over an in-memory redb (shareable, to play a second hub) and its own moka.
pub(crate) async fn hub_on(durable: Arc<RedbStore>) -> Hub {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    let hot = Arc::new(MokaHotStore::new(
        Duration::from_secs(30),
        Duration::from_secs(3600),
        10_000,
    ));
    Hub::open(cfg, durable, hot, Arc::new(Metrics::new()))
        .await
        .expect("open hub")
}

pub(crate) async fn hub() -> Hub {
    hub_on(Arc::new(RedbStore::in_memory(None).expect("redb"))).await
}

pub(crate) fn address(i: u8) -> Address {
    let mut b = [0u8; 20];
    b[19] = i;
    Address::from_bytes(b)
}

pub(crate) fn registration(i: u8) -> Registration {
    Registration {
        address: address(i),
        endpoint: Endpoint::try_from(format!("http://m{i}.example.com")).expect("url"),
        capabilities: Capabilities {
            models: vec!["llama3.2".into()],
            gpu_memory: 16384,
            max_concurrent_jobs: 4,
            job_types: vec!["inference".into()],
        },
        stake: 0,
        profile: None,
    }
}

pub(crate) fn online() -> MinerStatus {
    MinerStatus {
        available: true,
        current_load: 0,
        gpu_utilization: 0.1,
        temperature: None,
        reported_at: 0,
        resources: Default::default(),
    }
}

/// Registers miner `i`, reports it online, and returns its token.
pub(crate) async fn online_miner(hub: &Hub, i: u8) -> String {
    let token = hub
        .register(registration(i), None)
        .await
        .expect("register")
        .token
        .expect("token");
    hub.update_status(&address(i), Some(&token), online())
        .await
        .expect("status");
    token
}

pub(crate) fn match_request() -> MatchRequest {
    MatchRequest {
        model: "llama3.2".into(),
        job_type: None,
        min_gpu_memory: None,
        max_latency: None,
        limit: Some(1),
        exclude: Vec::new(),
        reserve: true,
    }
}

fn report(match_id: String, i: u8) -> OutcomeReport {
    OutcomeReport {
        match_id,
        address: address(i),
        success: true,
        latency_ms: Some(100.0),
        error: None,
    }
}

/// Defect 5: a miner registered through another hub sharing the durable store, before
/// this hub's index caught up, was refused (401) even with its own token.
#[tokio::test]
async fn reregistration_through_a_hub_that_has_not_caught_up_checks_the_stored_token() {
    let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
    let behind = hub_on(durable.clone()).await;
    let first = hub_on(durable).await;
    let token = first
        .register(registration(1), None)
        .await
        .expect("register")
        .token
        .expect("token");
    assert!(behind.registry.get(&address(1)).is_none(), "not caught up");

    assert!(matches!(
        behind.register(registration(1), None).await,
        Err(HubError::Unauthorized)
    ));
    assert!(matches!(
        behind.register(registration(1), Some("ph_wrong")).await,
        Err(HubError::Forbidden(_))
    ));
    let mut changed = registration(1);
    changed.stake = 500;
    let r = behind
        .register(changed, Some(&token))
        .await
        .expect("the right token is accepted");
    assert!(!r.created);
    assert!(r.token.is_none());
    assert_eq!(r.view.miner.stake, 500);
    assert_eq!(
        behind.registry.get(&address(1)).map(|v| v.miner.stake),
        Some(500),
        "and the index caught up"
    );
}

/// Defect 7: an uppercase spelling of a real match id was accepted and stored verbatim.
#[tokio::test]
async fn outcome_with_a_non_canonical_match_id_is_refused_naming_the_field() {
    let durable = Arc::new(RedbStore::in_memory(None).expect("redb"));
    let hub = hub_on(durable.clone()).await;
    online_miner(&hub, 1).await;
    let m = hub.match_job(match_request()).await.expect("match");
    let id = m.match_id.to_string();
    for bad in [id.to_uppercase(), format!("+{}", &id[1..])] {
        if bad == id {
            continue;
        }
        match hub.report_outcome(report(bad.clone(), 1)).await {
            Err(HubError::Invalid(e)) => assert_eq!(e.field, "match_id"),
            other => panic!("{bad} gave {other:?}"),
        }
    }
    hub.report_outcome(report(id.clone(), 1))
        .await
        .expect("canonical id accepted");
    let (stored, _) = durable.export_outcomes(None, 10).await.expect("export");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].match_id, id);
}

/// Defect 10: the stripe came from the last byte alone, so miners whose addresses share
/// it (vanity prefixes aside, any 1/256 of them) all queued on one lock.
#[test]
fn lock_stripes_spread_addresses_that_differ_outside_the_last_byte() {
    let stripes = LockStripes::new();
    let mut used = HashSet::new();
    for i in 0..=255u8 {
        for byte in [0usize, 7, 18] {
            let mut b = [0x11u8; 20];
            b[byte] = i;
            used.insert(stripes.index(&Address::from_bytes(b)));
        }
    }
    // 768 addresses over 256 stripes: a uniform hash uses about 244 of them.
    assert!(used.len() > 128, "only {} stripes used", used.len());
}
