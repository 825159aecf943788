//! Replica placement: which brokers hold the replicas of new partitions, and which one is the
//! preferred leader (the first replica). Pure: the caller passes the eligible brokers and the
//! current load, and gets assignments back.
//!
//! Rules, in priority order:
//! 1. the replicas of a partition are distinct brokers, none of them cordoned or fenced (the
//!    caller passes only eligible brokers, see [`eligible_brokers`]);
//! 2. they span as many racks as possible (distinct racks whenever there are at least RF racks);
//! 3. preferred leaders of each topic are balanced across racks (in proportion to their sizes),
//!    so producers in every rack find partitions of every topic led in their own AZ; within
//!    that, across brokers cluster-wide — a broker with the fewest leaders so far, then with the
//!    fewest of this topic, ties going to the rack with the fewest leaders per broker;
//! 4. followers go to the brokers with the fewest replicas in the least-used racks.
//!
//! Load already in the cluster counts ([`current_load`]), so a new topic evens out old ones.
//! Brokers without `broker.rack` count as one rack.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use crate::image::ClusterImage;
use crate::record::NodeId;

/// A broker that may receive new replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: NodeId,
    pub rack: Option<String>,
}

pub use crate::image::BrokerLoad;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("replication factor {replication_factor} is larger than the {available} available broker(s)")]
    InsufficientBrokers {
        replication_factor: u16,
        available: usize,
    },
}

/// Brokers that can take new replicas: registered, unfenced and not cordoned, by node id.
pub fn eligible_brokers(image: &ClusterImage) -> Vec<PlacementBroker> {
    image
        .brokers()
        .filter(|b| !b.fenced && !b.cordoned)
        .map(|b| PlacementBroker {
            id: b.node_id,
            rack: b.rack.clone(),
        })
        .collect()
}

/// Replicas and preferred leaders per broker over every partition in the image (kept by the
/// image as deltas, so this does not scan partitions).
pub fn current_load(image: &ClusterImage) -> &HashMap<NodeId, BrokerLoad> {
    image.load()
}

/// Replica lists (preferred leader first) for `partitions` new partitions of a new topic.
pub fn place(
    brokers: &[PlacementBroker],
    load: &HashMap<NodeId, BrokerLoad>,
    partitions: u32,
    replication_factor: u16,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    place_in_topic(
        brokers,
        load,
        &HashMap::new(),
        partitions,
        replication_factor,
    )
}

/// Preferred leaders (first replicas) of a topic's partitions, per broker: what
/// [`place_in_topic`] balances new partitions of that topic against.
pub fn topic_leaders(image: &ClusterImage, topic_id: &uuid::Uuid) -> HashMap<NodeId, u32> {
    let mut out: HashMap<NodeId, u32> = HashMap::new();
    for (_, p) in image.partitions(topic_id) {
        *out.entry(p.preferred_leader()).or_default() += 1;
    }
    out
}

/// Replica lists for `partitions` new partitions of a topic whose existing partitions have
/// their preferred leaders on `topic_leaders`: within the topic, leaders spread evenly over
/// racks (in proportion to their sizes), so producers in every rack find partitions of every
/// topic led locally; within a rack the cluster-wide load, then the topic's, picks the broker.
pub fn place_in_topic(
    brokers: &[PlacementBroker],
    load: &HashMap<NodeId, BrokerLoad>,
    topic_leaders: &HashMap<NodeId, u32>,
    partitions: u32,
    replication_factor: u16,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    let rf = usize::from(replication_factor);
    if rf == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if rf > brokers.len() {
        return Err(PlacementError::InsufficientBrokers {
            replication_factor,
            available: brokers.len(),
        });
    }
    let mut brokers = brokers.to_vec();
    brokers.sort_by_key(|b| b.id);
    let n = brokers.len();
    // Racks as small integers; `None` is one rack of its own.
    let mut rack_ids: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for b in &brokers {
        let next = rack_ids.len();
        rack_ids.entry(b.rack.as_deref()).or_insert(next);
    }
    let rack_of: Vec<usize> = brokers
        .iter()
        .map(|b| rack_ids[&b.rack.as_deref()])
        .collect();
    let mut rack_size = vec![0u64; rack_ids.len()];
    for r in &rack_of {
        rack_size[*r] += 1;
    }
    let mut replicas: Vec<u64> = Vec::with_capacity(n);
    let mut leaders: Vec<u64> = Vec::with_capacity(n);
    for b in &brokers {
        let l = load.get(&b.id).copied().unwrap_or_default();
        replicas.push(l.replicas.into());
        leaders.push(l.leaders.into());
    }
    let mut rack_leaders = vec![0u64; rack_size.len()];
    let mut rack_replicas = vec![0u64; rack_size.len()];
    for i in 0..n {
        rack_leaders[rack_of[i]] += leaders[i];
        rack_replicas[rack_of[i]] += replicas[i];
    }
    // The same two counts within the topic.
    let mut t_leaders: Vec<u64> = brokers
        .iter()
        .map(|b| topic_leaders.get(&b.id).copied().unwrap_or(0).into())
        .collect();
    let mut t_rack_leaders = vec![0u64; rack_size.len()];
    for i in 0..n {
        t_rack_leaders[rack_of[i]] += t_leaders[i];
    }
    // Rack loads are compared per broker: `a / size_a` vs `b / size_b`, cross-multiplied.
    let per_broker = |count: &[u64], r: usize| (count[r], rack_size[r]);
    let less = |(a, sa): (u64, u64), (b, sb): (u64, u64)| (a * sb).cmp(&(b * sa));

    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        // Rotation breaks the remaining ties so equal brokers take turns.
        let rot = |i: usize| (i + n - p % n) % n;
        let leader = (0..n)
            .min_by(|&a, &b| {
                less(
                    per_broker(&t_rack_leaders, rack_of[a]),
                    per_broker(&t_rack_leaders, rack_of[b]),
                )
                .then_with(|| leaders[a].cmp(&leaders[b]))
                .then_with(|| t_leaders[a].cmp(&t_leaders[b]))
                .then_with(|| {
                    less(
                        per_broker(&rack_leaders, rack_of[a]),
                        per_broker(&rack_leaders, rack_of[b]),
                    )
                })
                .then_with(|| replicas[a].cmp(&replicas[b]))
                .then_with(|| rot(a).cmp(&rot(b)))
            })
            .expect("at least one broker");
        let mut chosen = vec![leader];
        let mut racks_used = vec![0u32; rack_size.len()];
        racks_used[rack_of[leader]] += 1;
        while chosen.len() < rf {
            let next = (0..n)
                .filter(|i| !chosen.contains(i))
                .min_by(|&a, &b| {
                    racks_used[rack_of[a]]
                        .cmp(&racks_used[rack_of[b]])
                        .then_with(|| replicas[a].cmp(&replicas[b]))
                        .then_with(|| {
                            less(
                                per_broker(&rack_replicas, rack_of[a]),
                                per_broker(&rack_replicas, rack_of[b]),
                            )
                        })
                        .then_with(|| rot(a).cmp(&rot(b)))
                })
                .expect("rf <= brokers");
            racks_used[rack_of[next]] += 1;
            chosen.push(next);
        }
        leaders[leader] += 1;
        rack_leaders[rack_of[leader]] += 1;
        t_leaders[leader] += 1;
        t_rack_leaders[rack_of[leader]] += 1;
        for &i in &chosen {
            replicas[i] += 1;
            rack_replicas[rack_of[i]] += 1;
        }
        out.push(chosen);
    }
    even_out_followers(&mut out, &mut replicas, &rack_of);
    Ok(out
        .into_iter()
        .map(|chosen| chosen.into_iter().map(|i| brokers[i].id).collect())
        .collect())
}

/// The greedy pass leaves replica counts within two of each other at worst (a broker can take
/// followers early and its share of leaders later); this moves followers of the new partitions
/// (never leaders, so rule 3 holds) from the broker holding most replicas to the one holding
/// fewest, keeping each partition's rack spread, until no broker holds two more than another
/// or no such move is left.
fn even_out_followers(out: &mut [Vec<usize>], replicas: &mut [u64], rack_of: &[usize]) {
    let n = replicas.len();
    loop {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (replicas[i], i));
        let mut moved = false;
        'pairs: for &from in order.iter().rev() {
            for &to in &order {
                if replicas[to] + 2 > replicas[from] {
                    break;
                }
                for chosen in out.iter_mut() {
                    let Some(pos) = chosen.iter().skip(1).position(|&b| b == from) else {
                        continue;
                    };
                    if chosen.contains(&to) {
                        continue;
                    }
                    let others = |r: usize| {
                        chosen
                            .iter()
                            .filter(|&&b| b != from && rack_of[b] == r)
                            .count()
                    };
                    // Rack spread kept: the same rack, or `from`'s rack stays covered, or `to`
                    // brings a rack the partition lacks.
                    if rack_of[from] != rack_of[to]
                        && others(rack_of[from]) == 0
                        && others(rack_of[to]) > 0
                    {
                        continue;
                    }
                    chosen[pos + 1] = to;
                    replicas[from] -= 1;
                    replicas[to] += 1;
                    moved = true;
                    break 'pairs;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn brokers(racks: &[&str]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| PlacementBroker {
                id: i as NodeId + 1,
                rack: (!r.is_empty()).then(|| r.to_string()),
            })
            .collect()
    }

    #[test]
    fn three_racks_rf3_spread_and_leaders_balanced() {
        let b = brokers(&["a", "b", "c", "a", "b", "c"]);
        let out = place(&b, &HashMap::new(), 12, 3).unwrap();
        let mut leaders: HashMap<NodeId, u32> = HashMap::new();
        for r in &out {
            let racks: HashSet<_> = r
                .iter()
                .map(|id| b[*id as usize - 1].rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{r:?}");
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
    }

    #[test]
    fn errors() {
        let b = brokers(&["a", "b"]);
        assert_eq!(
            place(&b, &HashMap::new(), 1, 3),
            Err(PlacementError::InsufficientBrokers {
                replication_factor: 3,
                available: 2
            })
        );
        assert_eq!(
            place(&b, &HashMap::new(), 1, 0),
            Err(PlacementError::ZeroReplicationFactor)
        );
    }

    #[test]
    fn existing_load_is_evened_out() {
        let b = brokers(&["", "", ""]);
        let mut load = HashMap::new();
        load.insert(
            1,
            BrokerLoad {
                replicas: 4,
                leaders: 4,
            },
        );
        let out = place(&b, &load, 4, 1).unwrap();
        let ones = out.iter().filter(|r| r[0] == 1).count();
        assert_eq!(ones, 0, "{out:?}");
    }

    #[test]
    fn every_topic_is_led_from_every_rack_whatever_the_cluster_load() {
        // Racks b and c already lead much more than a: cluster-wide balancing alone would put
        // all three leaders of a new 3-partition topic in rack a.
        let b = brokers(&["a", "b", "c", "a", "b", "c"]);
        let mut load = HashMap::new();
        for id in [2, 3, 5, 6] {
            load.insert(
                id,
                BrokerLoad {
                    replicas: 9,
                    leaders: 3,
                },
            );
        }
        let rack = |id: NodeId| b[id as usize - 1].rack.clone().unwrap();
        let out = place(&b, &load, 3, 3).unwrap();
        let led: HashSet<String> = out.iter().map(|r| rack(r[0])).collect();
        assert_eq!(led.len(), 3, "{out:?}");
        // New partitions of an existing topic continue the spread: the topic's 3 partitions
        // are led from a, a and b, so of 3 more, c gets two and b one.
        let topic: HashMap<NodeId, u32> = [(1, 1), (4, 1), (2, 1)].into();
        let more = place_in_topic(&b, &load, &topic, 3, 3).unwrap();
        let mut per_rack: HashMap<String, u32> = HashMap::new();
        for r in &more {
            *per_rack.entry(rack(r[0])).or_default() += 1;
        }
        assert_eq!(per_rack.get("c"), Some(&2), "{more:?}");
        assert_eq!(per_rack.get("b"), Some(&1), "{more:?}");
    }

    fn counts(out: &[Vec<NodeId>]) -> (HashMap<NodeId, i64>, HashMap<NodeId, i64>) {
        let (mut rep, mut lead) = (HashMap::new(), HashMap::new());
        for r in out {
            *lead.entry(r[0]).or_insert(0) += 1;
            for b in r {
                *rep.entry(*b).or_insert(0) += 1;
            }
        }
        (rep, lead)
    }

    proptest! {
        #[test]
        fn placement_properties(
            rack_of in prop::collection::vec(0usize..4, 1..10),
            partitions in 1u32..60,
            rf in 1u16..4,
        ) {
            let names = ["a", "b", "c", "d"];
            let b: Vec<PlacementBroker> = rack_of
                .iter()
                .enumerate()
                .map(|(i, r)| PlacementBroker { id: i as NodeId * 3 + 2, rack: Some(names[*r].into()) })
                .collect();
            let result = place(&b, &HashMap::new(), partitions, rf);
            if usize::from(rf) > b.len() {
                prop_assert!(result.is_err());
                return Ok(());
            }
            let out = result.unwrap();
            prop_assert_eq!(out.len(), partitions as usize);
            let rack = |id: NodeId| b.iter().find(|x| x.id == id).unwrap().rack.clone();
            let racks: HashSet<_> = b.iter().map(|x| x.rack.clone()).collect();
            for r in &out {
                prop_assert_eq!(r.len(), usize::from(rf));
                let set: HashSet<_> = r.iter().collect();
                prop_assert_eq!(set.len(), r.len(), "repeated broker in {:?}", r);
                let used: HashSet<_> = r.iter().map(|id| rack(*id)).collect();
                prop_assert_eq!(used.len(), usize::from(rf).min(racks.len()), "rack spread {:?}", r);
            }
            // Preferred leaders: every broker within ±1 of the fair share.
            let (rep, lead) = counts(&out);
            let fair = partitions as f64 / b.len() as f64;
            for x in &b {
                let l = *lead.get(&x.id).unwrap_or(&0) as f64;
                prop_assert!((l - fair).abs() < 1.0 + 1e-9, "broker {} leads {}, fair {}", x.id, l, fair);
            }
            // Replicas balance too when every rack has the same number of brokers: within 1 of
            // the fair share.
            let mut sizes: HashMap<_, usize> = HashMap::new();
            for x in &b { *sizes.entry(x.rack.clone()).or_default() += 1; }
            let equal_racks = sizes.values().collect::<HashSet<_>>().len() == 1;
            if equal_racks {
                let total: i64 = rep.values().sum();
                let fair = total as f64 / b.len() as f64;
                for x in &b {
                    let r = *rep.get(&x.id).unwrap_or(&0) as f64;
                    prop_assert!((r - fair).abs() < 1.0 + 1e-9, "broker {} holds {} replicas, fair {}", x.id, r, fair);
                }
            }
        }
    }

    proptest! {
        /// Through the image: cordoned and fenced brokers never get replicas, and existing load
        /// is counted.
        #[test]
        fn cordoned_and_fenced_brokers_are_skipped(
            flags in prop::collection::vec((any::<bool>(), any::<bool>(), 0usize..3), 1..8),
            partitions in 1u32..20,
            rf in 1u16..3,
        ) {
            use crate::{ClusterImage, MetadataRecord, Uuid};
            let mut img = ClusterImage::default();
            for (i, (cordoned, fenced, rack)) in flags.iter().enumerate() {
                let id = i as NodeId;
                img.try_apply(&MetadataRecord::RegisterBroker {
                    node_id: id,
                    incarnation_id: Uuid::nil(),
                    broker_epoch: i as i64,
                    rack: Some(["a", "b", "c"][*rack].into()),
                    endpoints: vec![],
                    fenced: *fenced,
                }).unwrap();
                if *cordoned {
                    img.try_apply(&MetadataRecord::CordonBroker { node_id: id }).unwrap();
                }
            }
            let eligible = eligible_brokers(&img);
            let expect = flags.iter().filter(|(c, f, _)| !c && !f).count();
            prop_assert_eq!(eligible.len(), expect);
            match place(&eligible, current_load(&img), partitions, rf) {
                Ok(out) => {
                    for r in out {
                        for b in r {
                            let (c, f, _) = flags[b as usize];
                            prop_assert!(!c && !f, "replica on broker {} (cordoned {}, fenced {})", b, c, f);
                        }
                    }
                }
                Err(PlacementError::InsufficientBrokers { available, .. }) => {
                    prop_assert!(available < usize::from(rf));
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
