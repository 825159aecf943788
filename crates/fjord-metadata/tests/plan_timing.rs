//! How long the planners take on a large synthetic cluster (issue 17, fleet-operation
//! benchmarks). Ignored by default; run in release:
//!
//! ```sh
//! cargo test --release -p fjord-metadata --test plan_timing -- --ignored --nocapture
//! FJORD_PLAN_PARTITIONS=20000 FJORD_PLAN_BROKERS=40 cargo test --release -p fjord-metadata \
//!     --test plan_timing -- --ignored --nocapture
//! ```
//!
//! The cluster: `FJORD_PLAN_BROKERS` brokers (default 30) over three racks, `FJORD_PLAN_PARTITIONS`
//! partitions (default 10,000) of RF 3 in 100 topics, placed rack-aware but skewed: two thirds
//! of the replicas land on the first half of each rack's brokers, and sizes vary from 1 MB to
//! 1 GB. Each case runs `--rounds` times (`FJORD_PLAN_ROUNDS`, default 5) and prints min /
//! median / max. The asserts only check the plans are sane, so the timing can be read from a
//! test that also fails if the planner stops producing a plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use fjord_metadata::balancer::{
    self, BalancerBroker, BalancerInput, BalancerOptions, BalancerPartition,
};
use fjord_metadata::maintenance::{plan_drain, DrainPartition};
use fjord_metadata::placement::{BrokerLoad, PlacementBroker};
use fjord_metadata::{NodeId, Uuid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const RACKS: [&str; 3] = ["a", "b", "c"];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Brokers 1..=n, racks round-robin, and per rack its brokers.
fn brokers(n: usize) -> (Vec<BalancerBroker>, Vec<Vec<NodeId>>) {
    let mut by_rack = vec![Vec::new(); RACKS.len()];
    let brokers = (1..=n as NodeId)
        .map(|id| {
            let r = (id as usize - 1) % RACKS.len();
            by_rack[r].push(id);
            BalancerBroker {
                id,
                rack: Some(RACKS[r].to_string()),
                excluded: false,
            }
        })
        .collect();
    (brokers, by_rack)
}

/// RF 3 partitions, one replica per rack, skewed towards the first half of each rack.
fn partitions(count: usize, by_rack: &[Vec<NodeId>], rng: &mut StdRng) -> Vec<BalancerPartition> {
    (0..count)
        .map(|i| {
            let first = i % RACKS.len();
            let replicas = (0..RACKS.len())
                .map(|k| {
                    let rack = &by_rack[(first + k) % RACKS.len()];
                    let half = rack.len().div_ceil(2);
                    if rng.gen_range(0..3) < 2 {
                        rack[rng.gen_range(0..half)]
                    } else {
                        rack[rng.gen_range(0..rack.len())]
                    }
                })
                .collect();
            BalancerPartition {
                topic: format!("t{:03}", i % 100),
                partition: (i / 100) as u32,
                replicas,
                size: Some(rng.gen_range(1u64 << 20..1u64 << 30)),
                frozen: false,
                rate: None,
            }
        })
        .collect()
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.1} ms  median {:.1} ms  max {:.1} ms ({} rounds)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    )
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn plan_timing_10k_partitions() {
    let n_brokers = env("FJORD_PLAN_BROKERS", 30);
    let n_partitions = env("FJORD_PLAN_PARTITIONS", 10_000);
    let rounds = env("FJORD_PLAN_ROUNDS", 5).max(1);
    let mut rng = StdRng::seed_from_u64(17);
    let (brokers, by_rack) = brokers(n_brokers);
    let input = BalancerInput {
        brokers: brokers.clone(),
        partitions: partitions(n_partitions, &by_rack, &mut rng),
    };
    println!(
        "cluster: {n_brokers} brokers over {} racks, {n_partitions} partitions RF 3 (skewed)",
        RACKS.len()
    );

    // balancer::plan, unbounded and sizes known.
    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let p = balancer::plan(&input, BalancerOptions::default());
        times.push(t.elapsed());
        plan = Some(p);
    }
    let plan = plan.expect("a plan");
    let data_moves = plan
        .moves
        .iter()
        .filter(|m| !m.is_leadership_only())
        .count();
    println!(
        "balancer::plan: {}; {} moves ({data_moves} with data, {:.1} GB), imbalance {:?} -> {:?}",
        summary(&mut times),
        plan.moves.len(),
        plan.bytes_to_move as f64 / 1e9,
        plan.before,
        plan.after
    );
    assert!(data_moves > 0, "a skewed cluster gets data moves");

    // Bounded as the continuous mode runs it (`balancer.max.concurrent.moves`, default 10):
    // this runs on the controller's timer, so it must stay short.
    let bound = env("FJORD_PLAN_MAX_MOVES", 10);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let p = balancer::plan(&input, BalancerOptions { max_moves: bound });
        times.push(t.elapsed());
        assert!(p.moves.iter().filter(|m| !m.is_leadership_only()).count() <= bound);
    }
    println!(
        "balancer::plan (max {bound} moves): {}",
        summary(&mut times)
    );

    // The same without sizes (the planner balances counts).
    let unsized_input = BalancerInput {
        brokers: input.brokers.clone(),
        partitions: input
            .partitions
            .iter()
            .map(|p| BalancerPartition {
                size: None,
                ..p.clone()
            })
            .collect(),
    };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let p = balancer::plan(&unsized_input, BalancerOptions::default());
        times.push(t.elapsed());
        assert!(!p.sizes_known);
    }
    println!("balancer::plan (sizes unknown): {}", summary(&mut times));

    // maintenance::plan_drain of the most loaded broker.
    let mut load: HashMap<NodeId, BrokerLoad> = HashMap::new();
    for p in &input.partitions {
        for (i, r) in p.replicas.iter().enumerate() {
            let l = load.entry(*r).or_default();
            l.replicas += 1;
            if i == 0 {
                l.leaders += 1;
            }
        }
    }
    let victim = *load
        .iter()
        .max_by_key(|(id, l)| (l.replicas, **id))
        .expect("a loaded broker")
        .0;
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let on_victim: Vec<DrainPartition> = input
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.replicas.contains(&victim))
        .map(|(i, p)| DrainPartition {
            topic_id: ids[i % 100],
            partition: p.partition,
            replicas: p.replicas.clone(),
        })
        .collect();
    let racks: BTreeMap<NodeId, Option<String>> =
        brokers.iter().map(|b| (b.id, b.rack.clone())).collect();
    let destinations: Vec<PlacementBroker> = brokers
        .iter()
        .map(|b| PlacementBroker {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    let draining = BTreeSet::from([victim]);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let d = plan_drain(&draining, &racks, &destinations, &load, &on_victim);
        times.push(t.elapsed());
        assert_eq!(d.moves.len(), on_victim.len(), "every replica moves");
        assert!(d.refused.is_empty());
    }
    println!(
        "maintenance::plan_drain of broker {victim} ({} partitions): {}",
        on_victim.len(),
        summary(&mut times)
    );
}
