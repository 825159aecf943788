//! The coordinator driven by plain function calls: classic rebalances, static membership,
//! timers, offsets and their replay, and KIP-848 reconciliation.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fjord_group::consumer::HeartbeatRequest;
use fjord_group::coordinator::*;
use fjord_group::subscription::{encode_subscription, Subscription};
use fjord_group::{Config, Coordinator, ErrorCode, Reply};

fn config(delay: i64) -> Config {
    Config {
        initial_rebalance_delay_ms: delay,
        ..Config::default()
    }
}

fn join_req(group: &str, member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: instance.map(str::to_string),
        protocol_type: "consumer".into(),
        protocols: vec![(
            "range".into(),
            encode_subscription(&Subscription {
                topics: vec!["t".into()],
                ..Default::default()
            }),
        )],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        version: 9,
        reason: None,
    }
}

fn join_reply(fx: &Effects, token: Token) -> Option<JoinResult> {
    fx.replies.iter().find_map(|(t, r)| match r {
        Reply::Join(j) if *t == token => Some(j.clone()),
        _ => None,
    })
}

fn sync_reply(fx: &Effects, token: Token) -> Option<SyncResult> {
    fx.replies.iter().find_map(|(t, r)| match r {
        Reply::Sync(s) if *t == token => Some(s.clone()),
        _ => None,
    })
}

/// A dynamic member joins (KIP-394 two-step) and completes the join; returns its result.
fn join_dynamic(c: &mut Coordinator, group: &str, token: Token, now: i64) -> Effects {
    let fx = c.join_group(token, join_req(group, "", None), now);
    let first = join_reply(&fx, token).unwrap();
    assert_eq!(first.error, ErrorCode::MemberIdRequired);
    c.join_group(token, join_req(group, &first.member_id, None), now)
}

fn sync(
    c: &mut Coordinator,
    token: Token,
    j: &JoinResult,
    assignments: Vec<(String, Bytes)>,
    now: i64,
) -> Effects {
    c.sync_group(
        token,
        SyncRequest {
            group_id: "g".into(),
            generation_id: j.generation_id,
            member_id: j.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        },
        now,
    )
}

fn state(c: &Coordinator, g: &str) -> String {
    c.group(g).unwrap().state_name().to_string()
}

#[test]
fn classic_join_sync_heartbeat_and_a_second_member_rebalances() {
    let mut c = Coordinator::new(config(0));
    let fx = join_dynamic(&mut c, "g", 1, 0);
    let a = join_reply(&fx, 1).unwrap();
    assert_eq!((a.error, a.generation_id), (ErrorCode::None, 1));
    assert_eq!(a.leader, a.member_id);
    assert_eq!(a.members.len(), 1);
    assert_eq!(state(&c, "g"), "CompletingRebalance");
    let fx = sync(
        &mut c,
        2,
        &a,
        vec![(a.member_id.clone(), Bytes::from_static(b"A"))],
        1,
    );
    assert_eq!(
        sync_reply(&fx, 2).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert!(!fx.records.is_empty(), "the assignment is persisted");
    assert_eq!(state(&c, "g"), "Stable");
    assert_eq!(c.heartbeat("g", &a.member_id, None, 1, 2), ErrorCode::None);

    // B joins: its JoinGroup parks until A rejoins.
    let fx = join_dynamic(&mut c, "g", 3, 3);
    assert!(join_reply(&fx, 3).is_none(), "parked");
    assert_eq!(state(&c, "g"), "PreparingRebalance");
    assert_eq!(
        c.heartbeat("g", &a.member_id, None, 1, 4),
        ErrorCode::RebalanceInProgress
    );
    let fx = c.join_group(4, join_req("g", &a.member_id, None), 5);
    let (a2, b) = (join_reply(&fx, 4).unwrap(), join_reply(&fx, 3).unwrap());
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    assert_eq!(a2.members.len(), 2, "the leader gets every member");
    assert!(b.members.is_empty());
    // Follower's SyncGroup waits for the leader's.
    let fx = sync(&mut c, 5, &b, vec![], 6);
    assert!(sync_reply(&fx, 5).is_none());
    let fx = sync(
        &mut c,
        6,
        &a2,
        vec![(b.member_id.clone(), Bytes::from_static(b"B"))],
        7,
    );
    assert_eq!(
        sync_reply(&fx, 5).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(sync_reply(&fx, 6).unwrap().assignment, Bytes::new());
    assert_eq!(
        c.heartbeat("g", &b.member_id, None, 1, 8),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        c.heartbeat("g", "nobody", None, 2, 8),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn session_expiry_removes_the_member_and_empties_the_group() {
    let mut c = Coordinator::new(config(0));
    let a = join_reply(&join_dynamic(&mut c, "g", 1, 0), 1).unwrap();
    sync(&mut c, 2, &a, vec![], 0);
    let fx = c.tick(5_000, &TopicsView::new());
    assert!(fx.events.is_empty());
    let fx = c.tick(10_001, &TopicsView::new());
    assert!(fx
        .events
        .iter()
        .any(|e| matches!(e, Event::MemberExpired { .. })));
    assert_eq!(state(&c, "g"), "Empty");
    assert_eq!(c.member_count(), 0);
}

#[test]
fn initial_rebalance_delay_holds_the_first_generation() {
    let mut c = Coordinator::new(config(3000));
    let fx = join_dynamic(&mut c, "g", 1, 0);
    assert!(
        join_reply(&fx, 1).is_none(),
        "held by group.initial.rebalance.delay.ms"
    );
    let fx = join_dynamic(&mut c, "g", 2, 1000);
    assert!(join_reply(&fx, 2).is_none());
    // A member joined during the delay: it is extended once more (Kafka's InitialDelayedJoin).
    let fx = c.tick(3000, &TopicsView::new());
    assert!(fx.replies.is_empty());
    let fx = c.tick(6000, &TopicsView::new());
    let (a, b) = (join_reply(&fx, 1).unwrap(), join_reply(&fx, 2).unwrap());
    assert_eq!((a.generation_id, b.generation_id), (1, 1));
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_the_old_incarnation() {
    let mut c = Coordinator::new(config(0));
    let fx = c.join_group(1, join_req("g", "", Some("pod-a")), 0);
    let a = join_reply(&fx, 1).unwrap();
    assert_eq!(
        a.error,
        ErrorCode::None,
        "static members skip MEMBER_ID_REQUIRED"
    );
    sync(
        &mut c,
        2,
        &a,
        vec![(a.member_id.clone(), Bytes::from_static(b"A"))],
        0,
    );
    let fx = c.join_group(3, join_req("g", "", Some("pod-a")), 100);
    let a2 = join_reply(&fx, 3).unwrap();
    assert_eq!(a2.generation_id, a.generation_id, "no new generation");
    assert_ne!(a2.member_id, a.member_id);
    assert!(a2.skip_assignment, "a v9 leader skips the assignment");
    assert!(!fx
        .events
        .iter()
        .any(|e| matches!(e, Event::Rebalance { .. })));
    assert_eq!(state(&c, "g"), "Stable");
    assert_eq!(
        c.heartbeat("g", &a.member_id, Some("pod-a"), a.generation_id, 101),
        ErrorCode::FencedInstanceId
    );
    let fx = sync(&mut c, 4, &a2, vec![], 102);
    assert_eq!(
        sync_reply(&fx, 4).unwrap().assignment,
        Bytes::from_static(b"A"),
        "kept its assignment"
    );
    // LeaveGroup by instance id.
    let (top, errs, _) = c.leave_group(
        "g",
        &[LeaveMember {
            member_id: String::new(),
            group_instance_id: Some("pod-a".into()),
        }],
        200,
    );
    assert_eq!((top, errs), (ErrorCode::None, vec![ErrorCode::None]));
    assert_eq!(state(&c, "g"), "Empty");
}

#[test]
fn group_max_size_and_session_timeout_bounds() {
    let mut c = Coordinator::new(Config {
        max_size: 1,
        ..config(0)
    });
    join_dynamic(&mut c, "g", 1, 0);
    let fx = c.join_group(2, join_req("g", "", None), 0);
    assert_eq!(
        join_reply(&fx, 2).unwrap().error,
        ErrorCode::GroupMaxSizeReached
    );
    let mut r = join_req("h", "", None);
    r.session_timeout_ms = 10;
    let fx = c.join_group(3, r, 0);
    assert_eq!(
        join_reply(&fx, 3).unwrap().error,
        ErrorCode::InvalidSessionTimeout
    );
}

fn commit(c: &mut Coordinator, group: &str, offset: i64, now: i64) -> (Vec<ErrorCode>, Effects) {
    c.commit_offsets(
        CommitRequest {
            group_id: group.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        },
        now,
    )
}

#[test]
fn offsets_replay_expire_and_delete() {
    let mut c = Coordinator::new(Config {
        offsets_retention_ms: 1000,
        ..config(0)
    });
    let (errs, fx) = commit(&mut c, "g", 42, 0);
    assert_eq!(errs, vec![ErrorCode::None]);
    assert_eq!(fx.records.len(), 1);
    assert_eq!(
        fx.records[0].partition,
        fjord_group::offsets_partition("g", 50)
    );
    // Replay into a fresh coordinator (broker restart).
    let mut d = Coordinator::new(config(0));
    for r in &fx.records {
        d.replay(&r.key, r.value.as_deref(), 0).unwrap();
    }
    assert_eq!(d.fetch_offsets("g", None)[0].2.as_ref().unwrap().offset, 42);
    // Standalone commits are refused while the group has members.
    join_dynamic(&mut c, "g", 1, 0);
    assert_eq!(
        commit(&mut c, "g", 1, 0).0,
        vec![ErrorCode::IllegalGeneration]
    );
    let (codes, _) = c.delete_groups(&["g".into(), "nope".into()]);
    assert_eq!(
        codes,
        vec![ErrorCode::NonEmptyGroup, ErrorCode::GroupIdNotFound]
    );
    // Expiry only once the group is empty, retention after it became empty.
    let mut e = Coordinator::new(Config {
        offsets_retention_ms: 1000,
        ..config(0)
    });
    let (_, fx) = commit(&mut e, "x", 1, 0);
    e.commits_replicated(fx.commits);
    assert!(e.tick(500, &TopicsView::new()).records.is_empty());
    let fx = e.tick(1500, &TopicsView::new());
    assert_eq!(fx.records.len(), 1);
    assert!(fx.records[0].value.is_none(), "a tombstone");
    assert!(e.fetch_offsets("x", None).is_empty());
}

fn topics() -> TopicsView {
    let mut v = TopicsView::new();
    v.insert(
        "t".into(),
        TopicInfo::new(
            "t".into(),
            uuid::Uuid::from_u128(7),
            (0..4).map(|_| BTreeSet::new()).collect(),
        ),
    );
    v
}

fn hb(
    member: &str,
    epoch: i32,
    owned: Option<&BTreeMap<uuid::Uuid, BTreeSet<i32>>>,
) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: "k".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: (epoch == 0).then(|| vec!["t".into()]),
        owned: owned.cloned(),
        ..Default::default()
    }
}

#[test]
fn kip848_revokes_before_it_reassigns() {
    let mut c = Coordinator::new(config(0));
    let t = topics();
    let (a, _) = c.consumer_heartbeat(hb("a", 0, None), &t, 0);
    assert_eq!((a.error, a.member_epoch), (ErrorCode::None, 1));
    let a_parts = a.assignment.clone().unwrap();
    assert_eq!(a_parts.values().map(|p| p.len()).sum::<usize>(), 4);
    let (b, _) = c.consumer_heartbeat(hb("b", 0, None), &t, 1);
    assert_eq!(b.member_epoch, 2);
    assert!(
        b.assignment.unwrap().values().all(|p| p.is_empty()),
        "nothing until A revokes"
    );
    // A is told to keep only its half, at its old epoch.
    let (a2, _) = c.consumer_heartbeat(hb("a", 1, Some(&a_parts)), &t, 2);
    assert_eq!(a2.member_epoch, 1, "revocation first, epoch unchanged");
    let kept = a2.assignment.unwrap();
    assert_eq!(kept.values().map(|p| p.len()).sum::<usize>(), 2);
    // A acknowledges: it moves to epoch 2; then B gets the released partitions.
    let (a3, _) = c.consumer_heartbeat(hb("a", 1, Some(&kept)), &t, 3);
    assert_eq!(a3.member_epoch, 2);
    let (b2, _) = c.consumer_heartbeat(hb("b", 2, Some(&BTreeMap::new())), &t, 4);
    let got = b2.assignment.unwrap();
    assert_eq!(got.values().map(|p| p.len()).sum::<usize>(), 2);
    for (tid, ps) in &got {
        assert!(
            kept.get(tid).is_none_or(|k| k.is_disjoint(ps)),
            "never owned twice"
        );
    }
    assert_eq!(state(&c, "k"), "Stable");
    // A stale epoch is fenced; leaving bumps the epoch.
    let (f, _) = c.consumer_heartbeat(hb("a", 7, None), &t, 5);
    assert_eq!(f.error, ErrorCode::FencedMemberEpoch);
    let (l, fx) = c.consumer_heartbeat(hb("a", -1, None), &t, 6);
    assert_eq!(l.member_epoch, -1);
    assert!(fx
        .events
        .iter()
        .any(|e| matches!(e, Event::Rebalance { generation: 3, .. })));
}

/// A KIP-848 static member that left with epoch -2 and comes back (a new member id, same
/// instance id) gets its partitions again, and nobody else rebalances (found by the Java
/// client's static-membership scenario: the new incarnation lost its target and got nothing).
#[test]
fn kip848_static_member_rejoins_with_its_partitions() {
    let mut c = Coordinator::new(config(0));
    let t = topics();
    let st = |member: &str, epoch: i32, owned: Option<&BTreeMap<uuid::Uuid, BTreeSet<i32>>>| {
        let instance = if member.starts_with('a') {
            "pod-a"
        } else {
            "pod-b"
        };
        HeartbeatRequest {
            instance_id: Some(instance.into()),
            ..hb(member, epoch, owned)
        }
    };
    let (a, _) = c.consumer_heartbeat(st("a", 0, None), &t, 0);
    let all = a.assignment.unwrap();
    c.consumer_heartbeat(st("b", 0, None), &t, 1);
    let (a2, _) = c.consumer_heartbeat(st("a", 1, Some(&all)), &t, 2);
    let kept = a2.assignment.unwrap();
    let (a3, _) = c.consumer_heartbeat(st("a", 1, Some(&kept)), &t, 3);
    assert_eq!(a3.member_epoch, 2);
    let (b, _) = c.consumer_heartbeat(st("b", 2, Some(&BTreeMap::new())), &t, 4);
    let b_parts = b.assignment.unwrap();
    c.consumer_heartbeat(st("b", 2, Some(&b_parts)), &t, 5);
    assert_eq!(state(&c, "k"), "Stable");

    let (l, _) = c.consumer_heartbeat(st("a", -2, None), &t, 6);
    assert_eq!((l.error, l.member_epoch), (ErrorCode::None, -2));
    let (back, fx) = c.consumer_heartbeat(st("a-again", 0, None), &t, 7);
    assert_eq!(back.error, ErrorCode::None);
    assert_eq!(back.member_epoch, 2, "the group epoch did not move");
    assert_eq!(
        back.assignment,
        Some(kept),
        "the old incarnation's partitions"
    );
    assert!(!fx
        .events
        .iter()
        .any(|e| matches!(e, Event::Rebalance { .. })));
    let (b2, _) = c.consumer_heartbeat(st("b", 2, Some(&b_parts)), &t, 8);
    assert_eq!(
        (b2.member_epoch, b2.assignment),
        (2, None),
        "b is untouched"
    );
    assert_eq!(state(&c, "k"), "Stable");
}

/// A server-side regex subscription (what the Java client sends for
/// `subscribe(SubscriptionPattern)`: an empty topic list and the regex) is refused, not taken as
/// a member subscribed to nothing.
#[test]
fn kip848_regex_subscription_is_refused() {
    let mut c = Coordinator::new(config(0));
    let t = topics();
    let req = HeartbeatRequest {
        subscribed_topic_names: Some(Vec::new()),
        subscribed_topic_regex: Some("t.*".into()),
        ..hb("r", 0, None)
    };
    let (r, _) = c.consumer_heartbeat(req, &t, 0);
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    assert!(r.message.unwrap_or_default().contains("not supported"));
    assert!(c
        .describe_group("k", &t)
        .is_none_or(|g| g.members.is_empty()));
}

/// An offset commit is pending until its record is replicated: a failed one is dropped, so
/// OffsetFetch never shows an offset that a coordinator move would lose; of two commits of
/// one partition in flight the later one wins, whichever is reported first.
#[test]
fn pending_commits_become_visible_only_when_replicated() {
    let mut c = Coordinator::new(Config::default());
    let commit = |c: &mut Coordinator, group: &str, offset: i64| {
        c.commit_offsets(
            CommitRequest {
                group_id: group.into(),
                member_id: String::new(),
                group_instance_id: None,
                generation_id: -1,
                partitions: vec![CommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                }],
            },
            0,
        )
    };
    let fetched = |c: &Coordinator, group: &str| {
        c.fetch_offsets(group, None)
            .first()
            .and_then(|(_, _, o)| o.as_ref().map(|o| o.offset))
    };
    let (errors, fx) = commit(&mut c, "g", 5);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(fetched(&c, "g"), None);
    assert!(c.group("g").unwrap().has_pending_commit("t", 0));
    c.commits_replicated(fx.commits);
    assert_eq!(fetched(&c, "g"), Some(5));
    assert!(!c.group("g").unwrap().has_pending_commit("t", 0));
    // A failed commit leaves the previous offset.
    let (_, fx) = commit(&mut c, "g", 9);
    assert_eq!(fx.commits.len(), 1);
    c.commits_failed(fx.commits);
    assert_eq!(fetched(&c, "g"), Some(5));
    // A group whose only commit failed has no offset at all.
    let (_, fx) = commit(&mut c, "h", 7);
    c.commits_failed(fx.commits);
    assert!(c
        .fetch_offsets("h", None)
        .iter()
        .all(|(_, _, o)| o.is_none()));
    // Two commits in flight: the later is reported first; the earlier one does not undo it.
    let (_, earlier) = commit(&mut c, "g", 11);
    let (_, later) = commit(&mut c, "g", 12);
    c.commits_replicated(later.commits);
    assert_eq!(fetched(&c, "g"), Some(12));
    c.commits_replicated(earlier.commits);
    assert_eq!(fetched(&c, "g"), Some(12));
    // In order: the earlier shows, the later still pending, then the later.
    let (_, earlier) = commit(&mut c, "g", 13);
    let (_, later) = commit(&mut c, "g", 14);
    c.commits_replicated(earlier.commits);
    assert_eq!(fetched(&c, "g"), Some(13));
    assert!(c.group("g").unwrap().has_pending_commit("t", 0));
    // A failed earlier commit leaves the later one pending.
    let (_, third) = commit(&mut c, "g", 15);
    c.commits_failed(later.commits);
    assert_eq!(fetched(&c, "g"), Some(13));
    c.commits_replicated(third.commits);
    assert_eq!(fetched(&c, "g"), Some(15));
    // A commit pending while its offset is deleted is not applied afterwards.
    let (_, fx) = commit(&mut c, "g", 16);
    let (code, deleted, _) = c.delete_offsets("g", &[("t".into(), vec![0])]);
    assert_eq!((code, deleted[0].2), (ErrorCode::None, ErrorCode::None));
    c.commits_replicated(fx.commits);
    assert_eq!(fetched(&c, "g"), None);
}

/// A KIP-848 group with no members takes commits at epoch -1 from any member id, as Kafka
/// does: librdkafka's `assign()` consumer (no membership) sends its own member id with them
/// (librdkafka tests 0030 and 0130 with `group.protocol=consumer`). With members, such a
/// commit from a stranger is refused.
#[test]
fn empty_consumer_group_takes_epoch_minus_one_commits_from_any_member_id() {
    let mut c = Coordinator::new(config(0));
    let t = topics();
    let (a, _) = c.consumer_heartbeat(hb("a", 0, None), &t, 0);
    assert_eq!(a.error, ErrorCode::None);
    let standalone = |c: &mut Coordinator, member: &str| {
        let (errors, fx) = c.commit_offsets(
            CommitRequest {
                group_id: "k".into(),
                generation_id: -1,
                member_id: member.into(),
                group_instance_id: None,
                partitions: vec![CommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset: 5,
                    leader_epoch: -1,
                    metadata: None,
                }],
            },
            1,
        );
        c.commits_replicated(fx.commits);
        errors
    };
    assert_eq!(
        standalone(&mut c, "rdkafka-stranger"),
        vec![ErrorCode::UnknownMemberId]
    );
    let (l, _) = c.consumer_heartbeat(hb("a", -1, None), &t, 2);
    assert_eq!(l.member_epoch, -1);
    assert_eq!(
        standalone(&mut c, "rdkafka-stranger"),
        vec![ErrorCode::None]
    );
    assert_eq!(standalone(&mut c, ""), vec![ErrorCode::None]);
    assert_eq!(c.fetch_offsets("k", None)[0].2.as_ref().unwrap().offset, 5);
    // A group that does not exist yet becomes a simple (classic) group holding the offsets,
    // whatever member id the commit carries (librdkafka 0130 with group.protocol=consumer).
    let (errs, fx) = c.commit_offsets(
        CommitRequest {
            group_id: "simple".into(),
            generation_id: -1,
            member_id: "rdkafka-own-id".into(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 1,
                offset: 9,
                leader_epoch: -1,
                metadata: None,
            }],
        },
        3,
    );
    assert_eq!(errs, vec![ErrorCode::None]);
    c.commits_replicated(fx.commits);
    assert_eq!(
        c.fetch_offsets("simple", None)[0]
            .2
            .as_ref()
            .unwrap()
            .offset,
        9
    );
}
