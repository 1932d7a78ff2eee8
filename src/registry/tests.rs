//! The index's tests: match sets, panic counts, cooldowns, the walk's order and limits.

use super::*;
use crate::domain::miner::{Capabilities, Endpoint};
use crate::domain::scoring::{self, ScoringParams};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeSet;

/// Matches racing for a miner's last slots: exactly as many reservations as free slots
/// are granted, however the threads interleave (the check and the increment are one
/// compare-and-swap).
#[test]
fn concurrent_reservations_never_exceed_the_free_slots() {
    for load in [0u32, 1, 3] {
        let live = Arc::new(Live::new(0));
        live.max_concurrent.store(4, Ordering::Relaxed);
        live.current_load.store(load, Ordering::Relaxed);
        let granted: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let live = &live;
                    s.spawn(move || (0..50).filter(|_| live.try_reserve()).count() as u32)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(granted, 4 - load, "load {load}");
        assert_eq!(live.reserved(), 4 - load);
        live.release();
        assert!(live.try_reserve(), "a released slot can be taken again");
        assert!(!live.try_reserve());
    }
}

const NOW: u64 = 1_700_000_000_000;
const HB: u64 = 30_000;

fn address(i: u8) -> Address {
    let mut b = [0u8; 20];
    b[19] = i;
    Address::from_bytes(b)
}

fn miner(i: u8) -> Miner {
    Miner {
        address: address(i),
        endpoint: Endpoint::try_from(format!("http://m{i}.example.com")).unwrap(),
        capabilities: Capabilities {
            models: vec!["m".into()],
            gpu_memory: 16384,
            max_concurrent_jobs: 2,
            job_types: vec!["inference".into()],
        },
        stake: u64::from(i) * 37 % 5 * 1000,
        token_hash: String::new(),
        registered_at: 0,
        updated_at: 0,
        proven: false,
        profile: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Status {
        i: u8,
        available: bool,
        load: u32,
        age_ms: u64,
    },
    Reserve(u8),
    Release(u8),
    Remove(u8),
    /// A new score: cooled down until `NOW + cool` (when positive), and qualified or not.
    Rescore {
        i: u8,
        cool: i64,
        qualified: bool,
    },
    /// The sweeper's pass over ended cooldowns, at `NOW + at`.
    EndCooldowns(i64),
    Match,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..12,
            any::<bool>(),
            0u32..3,
            prop_oneof![Just(0u64), Just(60_000u64)]
        )
            .prop_map(|(i, available, load, age_ms)| Op::Status {
                i,
                available,
                load,
                age_ms
            }),
        (0u8..12).prop_map(Op::Reserve),
        (0u8..12).prop_map(Op::Release),
        (0u8..12).prop_map(Op::Remove),
        (
            0u8..12,
            prop_oneof![Just(0i64), Just(-1), Just(0), Just(1000)],
            any::<bool>()
        )
            .prop_map(|(i, cool, qualified)| Op::Rescore { i, cool, qualified }),
        prop_oneof![Just(-2000i64), Just(-1), Just(0)].prop_map(Op::EndCooldowns),
        Just(Op::Match),
    ]
}

fn policy() -> MatchPolicy {
    MatchPolicy {
        heartbeat_timeout_ms: HB,
        tie_epsilon: 0.0,
        panic_threshold: 0.5,
        scan_cap: 1000,
        thermal: crate::domain::scoring::Thresholds::default(),
    }
}

fn address16(i: u16) -> Address {
    let mut b = [0u8; 20];
    b[18..].copy_from_slice(&i.to_be_bytes());
    b[0] = 0x42;
    Address::from_bytes(b)
}

/// Defect 1: panic mode was decided over the few candidates scanned before the walk
/// stopped. Two cooled-down miners at the top of 1,010 made a `limit=1` match see one
/// healthy miner out of three, panic, and offer a cooled-down miner first.
#[test]
fn panic_mode_is_judged_on_the_whole_eligible_set() {
    let p = ScoringParams::default();
    let r = Registry::new(p.thresholds);
    let base = scoring::score(&MinerStats::default(), &Availability::default(), 0, NOW, &p);
    for i in 0..1010u16 {
        let mut m = miner(0);
        m.address = address16(i);
        let mut sc = base;
        sc.value = 0.9 - f64::from(i) * 1e-4;
        let cooldown = if i < 2 { NOW + 60_000 } else { 0 };
        r.upsert(
            m,
            MinerStats::default(),
            Availability::default(),
            sc,
            cooldown,
        );
        let (_, live) = r.live(&address16(i)).expect("registered");
        live.set_status(&MinerStatus {
            available: true,
            current_load: 0,
            gpu_utilization: 0.1,
            temperature: None,
            reported_at: NOW,
            resources: Default::default(),
        });
        r.note(&live);
    }
    let crit = MatchCriteria {
        model: "m",
        job_type: "inference",
        min_gpu_memory: 0,
        max_latency: None,
        limit: 1,
        exclude: &[],
    };
    let mut rng = StdRng::seed_from_u64(1);
    let m = r.select(&crit, &policy(), NOW, &mut rng);
    assert!(!m.panic, "1,008 of 1,010 are healthy");
    assert_eq!(m.offers.len(), 1);
    assert_eq!(m.offers[0].address, address16(2), "best healthy miner");
    assert!(!m.offers[0].cooled_down);
}

proptest! {
    /// The lazily maintained match sets never hide a miner that could take the job, and
    /// never offer one that cannot: a match returns exactly the miners a brute-force
    /// check of every registered miner finds eligible, and decides panic mode exactly as
    /// that check does over the whole eligible set.
    #[test]
    fn match_sets_agree_with_brute_force(ops in proptest::collection::vec(op(), 1..80)) {
        let p = ScoringParams::default();
        let r = Registry::new(p.thresholds);
        for i in 0..12u8 {
            let m = miner(i);
            let sc = scoring::score(&MinerStats::default(), &Availability::default(), m.stake, NOW, &p);
            r.upsert(m, MinerStats::default(), Availability::default(), sc, 0);
        }
        let mut rng = StdRng::seed_from_u64(3);
        for o in ops {
            match o {
                Op::Status { i, available, load, age_ms } => {
                    if let Some((_, live)) = r.live(&address(i)) {
                        live.set_status(&MinerStatus {
                            available, current_load: load, gpu_utilization: 0.1,
                            temperature: None, reported_at: NOW - age_ms,
                            resources: Default::default(),
                        });
                        r.note(&live);
                    }
                }
                Op::Reserve(i) => if let Some((_, live)) = r.live(&address(i)) {
                    live.reserve();
                    r.note(&live);
                },
                Op::Release(i) => if let Some((_, live)) = r.live(&address(i)) {
                    live.release();
                    r.note(&live);
                },
                Op::Remove(i) => { r.remove(&address(i)); }
                Op::Rescore { i, cool, qualified } => if let Some(v) = r.get(&address(i)) {
                    let mut sc = v.score;
                    sc.factors.availability = if qualified { 1.0 } else { 0.0 };
                    let until = if cool == 0 { 0 } else { NOW.saturating_add_signed(cool) };
                    r.upsert((*v.miner).clone(), v.stats, v.availability, sc, until);
                },
                Op::EndCooldowns(at) => r.end_cooldowns(NOW.saturating_add_signed(at)),
                Op::Match => {}
            }
            let crit = MatchCriteria {
                model: "m", job_type: "inference", min_gpu_memory: 0,
                max_latency: None, limit: 100, exclude: &[],
            };
            let m = r.select(&crit, &policy(), NOW, &mut rng);
            let panic = m.panic;
            // A walk stopped after one candidate decides from the index's counts.
            let one = MatchCriteria { limit: 1, ..crit.clone() };
            let short = MatchPolicy { scan_cap: 1, ..policy() };
            let panic_short = r.select(&one, &short, NOW, &mut rng).panic;
            // And with exclusions, which take part in this request's eligible set.
            let ex = [address(0), address(3), address(4), address(5), address(0)];
            let excluding = MatchCriteria { exclude: &ex, ..one.clone() };
            let panic_excluding = r.select(&excluding, &short, NOW, &mut rng).panic;
            let got: BTreeSet<Address> = m.offers.iter().map(|o| o.address).collect();
            let eligible: Vec<MinerView> = (0..12u8)
                .filter_map(|i| r.get(&address(i)))
                .filter(|v| v.status.is_some_and(|s| {
                    s.available && matching::is_fresh(&s, NOW, HB)
                        && s.current_load + v.reserved < v.miner.capabilities.max_concurrent_jobs
                }))
                .filter(|v| passes_thresholds(&v.score.factors, &p.thresholds))
                .collect();
            let counts = Eligible {
                total: eligible.len(),
                cooled: eligible.iter().filter(|v| v.cooldown_until > NOW).count(),
            };
            let want_panic = counts.panic(policy().panic_threshold);
            prop_assert_eq!(panic, want_panic, "{:?}", counts);
            prop_assert_eq!(panic_short, want_panic, "{:?} (short walk)", counts);
            let kept: Vec<&MinerView> =
                eligible.iter().filter(|v| !ex.contains(&v.miner.address)).collect();
            let counts_ex = Eligible {
                total: kept.len(),
                cooled: kept.iter().filter(|v| v.cooldown_until > NOW).count(),
            };
            prop_assert_eq!(
                panic_excluding,
                counts_ex.panic(policy().panic_threshold),
                "{:?} (excluding)", counts_ex
            );
            let want: BTreeSet<Address> = eligible
                .iter()
                .filter(|v| want_panic || v.cooldown_until <= NOW)
                .map(|v| v.miner.address)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
