//! Server-side assignors for KIP-848 consumer groups: `uniform` and `range`, both rack-aware.
//!
//! Rack awareness: a partition is *local* to a member when one of its replicas is in the
//! member's rack. Both assignors prefer local partitions, but never at the cost of balance:
//! a member only takes a local partition while it is under its quota.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::coordinator::TopicsView;

/// One member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub member_id: String,
    pub rack: Option<String>,
    pub topics: BTreeSet<String>,
    /// The member's current assignment (for stickiness).
    pub current: BTreeMap<Uuid, BTreeSet<i32>>,
}

/// member id → topic id → partitions.
pub type Assignment = BTreeMap<String, BTreeMap<Uuid, BTreeSet<i32>>>;

type Tp = (Uuid, i32);

/// Run the named assignor (`uniform` or `range`); unknown names fall back to `uniform`.
pub fn assign(name: &str, members: &[MemberSpec], topics: &TopicsView) -> Assignment {
    match name {
        "range" => range(members, topics),
        _ => uniform(members, topics),
    }
}

fn is_local(
    topics_by_id: &BTreeMap<Uuid, &crate::coordinator::TopicInfo>,
    tp: Tp,
    rack: &Option<String>,
) -> bool {
    let Some(r) = rack else { return false };
    topics_by_id
        .get(&tp.0)
        .and_then(|t| t.partition_racks.get(tp.1 as usize))
        .is_some_and(|racks| racks.contains(r))
}

fn to_assignment(members: &[MemberSpec], owned: &BTreeMap<String, BTreeSet<Tp>>) -> Assignment {
    let mut out = Assignment::new();
    for m in members {
        let mut per_topic: BTreeMap<Uuid, BTreeSet<i32>> = BTreeMap::new();
        for (t, p) in owned.get(&m.member_id).into_iter().flatten() {
            per_topic.entry(*t).or_default().insert(*p);
        }
        out.insert(m.member_id.clone(), per_topic);
    }
    out
}

/// Spread every subscribed partition as evenly as possible over the members subscribed to its
/// topic, keeping current owners where balance allows, and preferring rack-local owners.
pub fn uniform(members: &[MemberSpec], topics: &TopicsView) -> Assignment {
    let by_id: BTreeMap<Uuid, &crate::coordinator::TopicInfo> =
        topics.values().map(|t| (t.id, t)).collect();
    // Every partition and who may own it.
    let mut eligible: BTreeMap<Tp, Vec<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for name in &m.topics {
            if let Some(t) = topics.get(name) {
                for p in 0..t.partition_racks.len() as i32 {
                    eligible.entry((t.id, p)).or_default().push(i);
                }
            }
        }
    }
    // Each member's fair share: sum over its partitions of 1/|eligible|, rounded up.
    let mut share = vec![0f64; members.len()];
    for owners in eligible.values() {
        for &i in owners {
            share[i] += 1.0 / owners.len() as f64;
        }
    }
    let quota: Vec<usize> = share
        .iter()
        .map(|s| (s - 1e-9).ceil().max(0.0) as usize)
        .collect();
    let mut owned: Vec<BTreeSet<Tp>> = vec![BTreeSet::new(); members.len()];
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    // Partitions some eligible member shares a rack with: only such a member keeps them.
    let has_local_owner = |tp: &Tp| {
        eligible[tp]
            .iter()
            .any(|&j| is_local(&by_id, *tp, &members[j].rack))
    };
    // 1. Stickiness: keep current partitions up to the quota, local ones first; a partition
    //    a rack-local member could own is not kept by a member in another rack (replicas or
    //    members moved between racks).
    for (i, m) in members.iter().enumerate() {
        let mut cur: Vec<Tp> = m
            .current
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .filter(|tp| eligible.get(tp).is_some_and(|o| o.contains(&i)))
            .filter(|tp| !taken.contains(tp))
            .filter(|tp| is_local(&by_id, *tp, &m.rack) || !has_local_owner(tp))
            .collect();
        cur.sort_by_key(|tp| !is_local(&by_id, *tp, &m.rack));
        for tp in cur.into_iter().take(quota[i]) {
            taken.insert(tp);
            owned[i].insert(tp);
        }
    }
    // 2. Unassigned partitions, most constrained first: a local member under quota with the
    //    fewest partitions, else any member under quota, else the least loaded.
    let mut todo: Vec<Tp> = eligible
        .keys()
        .filter(|tp| !taken.contains(tp))
        .copied()
        .collect();
    todo.sort_by_key(|tp| (eligible[tp].len(), *tp));
    for tp in todo {
        let owners = &eligible[&tp];
        let pick = |want_local: bool, under_quota: bool| {
            owners
                .iter()
                .copied()
                .filter(|&i| !want_local || is_local(&by_id, tp, &members[i].rack))
                .filter(|&i| !under_quota || owned[i].len() < quota[i])
                .min_by_key(|&i| (owned[i].len(), i))
        };
        let i = pick(true, true)
            .or_else(|| pick(false, true))
            .or_else(|| pick(false, false))
            .expect("a partition has at least one eligible member");
        owned[i].insert(tp);
    }
    // 3. Balance: move partitions from the most to the least loaded member that may own them
    //    until no move reduces the spread (prefer moves that keep or gain locality).
    loop {
        let mut best: Option<(usize, usize, Tp)> = None;
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(owned[i].len()));
        'outer: for &from in &order {
            let mut targets: Vec<usize> = (0..members.len())
                .filter(|&to| owned[to].len() + 1 < owned[from].len())
                .collect();
            targets.sort_by_key(|&to| owned[to].len());
            for &to in &targets {
                let mut candidates: Vec<Tp> = owned[from]
                    .iter()
                    .copied()
                    .filter(|tp| eligible[tp].contains(&to))
                    .collect();
                candidates.sort_by_key(|tp| {
                    (
                        !is_local(&by_id, *tp, &members[to].rack),
                        is_local(&by_id, *tp, &members[from].rack),
                    )
                });
                if let Some(tp) = candidates.first() {
                    best = Some((from, to, *tp));
                    break 'outer;
                }
            }
        }
        match best {
            Some((from, to, tp)) => {
                owned[from].remove(&tp);
                owned[to].insert(tp);
            }
            None => break,
        }
    }
    let owned_map: BTreeMap<String, BTreeSet<Tp>> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.member_id.clone(), owned[i].clone()))
        .collect();
    to_assignment(members, &owned_map)
}

/// Per topic, members sorted by id get contiguous ranges (the first `n % m` one extra), so
/// co-partitioned topics land together. Rack-aware: each member first takes local partitions
/// up to its range size, then the rest are handed out in order.
pub fn range(members: &[MemberSpec], topics: &TopicsView) -> Assignment {
    let mut owned: BTreeMap<String, BTreeSet<Tp>> = BTreeMap::new();
    for t in topics.values() {
        let mut subs: Vec<&MemberSpec> = members
            .iter()
            .filter(|m| m.topics.contains(&t.name))
            .collect();
        if subs.is_empty() {
            continue;
        }
        subs.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let n = t.partition_racks.len();
        let m = subs.len();
        let quota: Vec<usize> = (0..m).map(|i| n / m + usize::from(i < n % m)).collect();
        let mut free: BTreeSet<i32> = (0..n as i32).collect();
        let mut got: Vec<Vec<i32>> = vec![Vec::new(); m];
        let any_rack = subs.iter().any(|s| s.rack.is_some());
        if any_rack {
            for (i, s) in subs.iter().enumerate() {
                let Some(r) = &s.rack else { continue };
                let local: Vec<i32> = free
                    .iter()
                    .copied()
                    .filter(|p| t.partition_racks[*p as usize].contains(r))
                    .take(quota[i])
                    .collect();
                for p in local {
                    free.remove(&p);
                    got[i].push(p);
                }
            }
        }
        for i in 0..m {
            while got[i].len() < quota[i] {
                let p = *free
                    .iter()
                    .next()
                    .expect("quotas sum to the partition count");
                free.remove(&p);
                got[i].push(p);
            }
        }
        for (i, s) in subs.iter().enumerate() {
            let e = owned.entry(s.member_id.clone()).or_default();
            e.extend(got[i].iter().map(|p| (t.id, *p)));
        }
    }
    to_assignment(members, &owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::TopicInfo;
    use proptest::prelude::*;

    fn topic(name: &str, n: usize, racks: impl Fn(usize) -> Vec<String>) -> TopicInfo {
        TopicInfo::new(
            name.into(),
            Uuid::from_u128(
                name.bytes()
                    .fold(7u128, |h, b| h.wrapping_mul(131).wrapping_add(b as u128)),
            ),
            (0..n).map(|p| racks(p).into_iter().collect()).collect(),
        )
    }

    fn member(id: &str, rack: Option<&str>, topics: &[&str]) -> MemberSpec {
        MemberSpec {
            member_id: id.into(),
            rack: rack.map(str::to_string),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            current: BTreeMap::new(),
        }
    }

    fn view(ts: Vec<TopicInfo>) -> TopicsView {
        ts.into_iter().map(|t| (t.name.clone(), t)).collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values()
            .map(|t| t.values().map(|p| p.len()).sum())
            .collect()
    }

    fn all_once(a: &Assignment, topics: &TopicsView) {
        let mut seen = BTreeSet::new();
        for t in a.values() {
            for (id, ps) in t {
                for p in ps {
                    assert!(seen.insert((*id, *p)), "partition {id}/{p} assigned twice");
                }
            }
        }
        let total: usize = topics.values().map(|t| t.partition_racks.len()).sum();
        assert_eq!(seen.len(), total, "every partition assigned");
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let topics = view(vec![topic("t", 7, |_| vec![])]);
        let ms = vec![
            member("a", None, &["t"]),
            member("b", None, &["t"]),
            member("c", None, &["t"]),
        ];
        let a = range(&ms, &topics);
        let id = topics["t"].id;
        assert_eq!(a["a"][&id], [0, 1, 2].into());
        assert_eq!(a["b"][&id], [3, 4].into());
        assert_eq!(a["c"][&id], [5, 6].into());
    }

    #[test]
    fn uniform_is_sticky() {
        let topics = view(vec![topic("t", 6, |_| vec![])]);
        let ms = vec![member("a", None, &["t"]), member("b", None, &["t"])];
        let first = uniform(&ms, &topics);
        let mut ms2: Vec<MemberSpec> = ms
            .iter()
            .map(|m| MemberSpec {
                current: first[&m.member_id].clone(),
                ..m.clone()
            })
            .collect();
        ms2.push(member("c", None, &["t"]));
        let second = uniform(&ms2, &topics);
        assert_eq!(counts(&second), vec![2, 2, 2]);
        for m in ["a", "b"] {
            let before = &first[m][&topics["t"].id];
            let after = &second[m][&topics["t"].id];
            assert!(
                after.is_subset(before),
                "{m} kept a subset of its partitions"
            );
        }
    }

    #[test]
    fn uniform_follows_replicas_that_moved_racks() {
        // Two per rack, then the replicas of partitions 0..2 and 2..4 swap racks: stickiness
        // must not keep a member on partitions now in another rack.
        let rack = |p: usize| vec![["a", "b", "c"][p / 2].to_string()];
        let ms: Vec<MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|r| member(&format!("m-{r}"), Some(r), &["t"]))
            .collect();
        let before = view(vec![topic("t", 6, rack)]);
        let first = uniform(&ms, &before);
        let swapped = |p: usize| rack([2, 3, 0, 1, 4, 5][p]);
        let after = view(vec![topic("t", 6, swapped)]);
        assert_ne!(before["t"].racks_hash, after["t"].racks_hash);
        let ms2: Vec<MemberSpec> = ms
            .iter()
            .map(|m| MemberSpec {
                current: first[&m.member_id].clone(),
                ..m.clone()
            })
            .collect();
        let second = uniform(&ms2, &after);
        let id = after["t"].id;
        for m in &ms2 {
            for p in &second[&m.member_id][&id] {
                assert_eq!(
                    *after["t"].partition_racks[*p as usize],
                    BTreeSet::from([m.rack.clone().unwrap()]),
                    "{} got {p}",
                    m.member_id
                );
            }
        }
        assert_eq!(counts(&second), vec![2, 2, 2]);
    }

    proptest! {
        /// Homogeneous subscriptions: every partition once, counts differ by at most one.
        #[test]
        fn uniform_balanced(n_members in 1usize..12, parts in proptest::collection::vec(1usize..20, 1..4),
                            sticky_seed in 0u64..1000) {
            let ts: Vec<TopicInfo> = parts.iter().enumerate().map(|(i, n)| topic(&format!("t{i}"), *n, |_| vec![])).collect();
            let topics = view(ts);
            let names: Vec<String> = topics.keys().cloned().collect();
            let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            let mut ms: Vec<MemberSpec> = (0..n_members).map(|i| member(&format!("m{i:02}"), None, &refs)).collect();
            // A previous assignment from a different member count, to exercise stickiness.
            let prev = uniform(&ms[..(sticky_seed as usize % n_members) + 1], &topics);
            for m in ms.iter_mut() { if let Some(c) = prev.get(&m.member_id) { m.current = c.clone(); } }
            let a = uniform(&ms, &topics);
            all_once(&a, &topics);
            let c = counts(&a);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{:?}", c);
        }

        /// When every rack has the same number of members and of partitions (each partition
        /// replicated in one rack) a balanced, fully rack-local assignment exists — both
        /// assignors must find it.
        #[test]
        fn rack_local_when_balance_allows(racks in 1usize..4, per_rack in 1usize..4, k in 1usize..4) {
            let n = racks * per_rack * k;
            let topics = view(vec![topic("t", n, |p| vec![format!("r{}", p % racks)])]);
            let ms: Vec<MemberSpec> = (0..racks * per_rack)
                .map(|i| member(&format!("m{i:02}"), Some(&format!("r{}", i % racks)), &["t"]))
                .collect();
            for name in ["uniform", "range"] {
                let a = assign(name, &ms, &topics);
                all_once(&a, &topics);
                let c = counts(&a);
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{name} {:?}", c);
                for m in &ms {
                    for ps in a[&m.member_id].values() {
                        for p in ps {
                            prop_assert_eq!(format!("r{}", *p as usize % racks), m.rack.clone().unwrap(), "{} not local", name);
                        }
                    }
                }
            }
        }

        /// Heterogeneous subscriptions: every subscribed partition goes to a subscriber.
        #[test]
        fn uniform_respects_subscriptions(subs in proptest::collection::vec(proptest::collection::btree_set(0usize..3, 1..3), 1..8)) {
            let topics = view((0..3).map(|i| topic(&format!("t{i}"), 2 + i, |_| vec![])).collect());
            let ms: Vec<MemberSpec> = subs.iter().enumerate().map(|(i, s)| {
                let names: Vec<String> = s.iter().map(|t| format!("t{t}")).collect();
                let refs: Vec<&str> = names.iter().map(|x| x.as_str()).collect();
                member(&format!("m{i}"), None, &refs)
            }).collect();
            let a = uniform(&ms, &topics);
            let by_id: BTreeMap<Uuid, String> = topics.values().map(|t| (t.id, t.name.clone())).collect();
            let mut seen = BTreeSet::new();
            for m in &ms {
                for (id, ps) in &a[&m.member_id] {
                    prop_assert!(m.topics.contains(&by_id[id]));
                    for p in ps { prop_assert!(seen.insert((*id, *p))); }
                }
            }
            let subscribed: usize = topics.values().filter(|t| ms.iter().any(|m| m.topics.contains(&t.name))).map(|t| t.partition_racks.len()).sum();
            prop_assert_eq!(seen.len(), subscribed);
        }
    }
}
