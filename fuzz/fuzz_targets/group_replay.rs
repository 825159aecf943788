//! Replay of `__consumer_offsets` records into the group coordinator, then the coordinator at
//! work on what was replayed.
//!
//! The input is a sequence of records, each `flags: u8, key_len: u16, key, value_len: u16,
//! value` (big-endian lengths, cut at the end of the input; flags bit 0 clear = a tombstone). The
//! records are decoded and replayed as a broker does at startup (`Coordinator::replay`); then
//! every group is listed and described, its replayed members heartbeat, rejoin (static members
//! by instance id) and leave, consumer groups get a heartbeat, offsets are fetched and committed,
//! and timers fire (sessions, rebalances, offset expiry). Corrupt records may be refused; nothing
//! may panic.
#![no_main]

use fjord_group::consumer::HeartbeatRequest;
use fjord_group::coordinator::{
    CommitPartition, CommitRequest, JoinRequest, LeaveMember, TopicInfo, TopicsView,
};
use fjord_group::{records, Config, Coordinator};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

const NOW: i64 = 1_700_000_000_000;

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    if data.len() < 2 {
        *data = &[];
        return &[];
    }
    let len = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (field, rest) = data[2..].split_at(len);
    *data = rest;
    field
}

fn topics() -> TopicsView {
    let mut view = TopicsView::new();
    for (i, name) in ["t", "topic", "orders"].into_iter().enumerate() {
        view.insert(
            name.to_string(),
            TopicInfo {
                name: name.to_string(),
                id: uuid::Uuid::from_u128(i as u128 + 1),
                partition_racks: vec![BTreeSet::new(); 3],
            },
        );
    }
    view
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mut c = Coordinator::new(Config::default());
    let mut records_seen = 0;
    while !data.is_empty() && records_seen < 256 {
        records_seen += 1;
        let flags = data[0];
        data = &data[1..];
        let key = take(&mut data);
        let value = take(&mut data);
        let value = (flags & 1 == 1).then_some(value);
        // What the broker's replay does with each record (errors are logged and skipped).
        let _ = records::decode(key, value);
        let _ = c.replay(key, value, NOW);
    }

    let topics = topics();
    let mut token = 0;
    let groups = c.list_groups(&[], &[]);
    for listing in &groups {
        let id = listing.group_id.as_str();
        let _ = c.fetch_offsets(id, None);
        let Some(desc) = c.describe_group(id, &topics) else {
            continue;
        };
        for m in &desc.members {
            let instance = m.group_instance_id.as_deref();
            let _ = c.heartbeat(id, &m.member_id, instance, desc.generation, NOW);
            let (_, fx) = c.commit_offsets(
                CommitRequest {
                    group_id: id.to_string(),
                    generation_id: desc.generation,
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    partitions: vec![CommitPartition {
                        topic: "t".into(),
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: None,
                    }],
                },
                NOW,
            );
            drop(fx);
            token += 1;
            let _ = c.join_group(
                token,
                JoinRequest {
                    group_id: id.to_string(),
                    member_id: if instance.is_some() {
                        String::new()
                    } else {
                        m.member_id.clone()
                    },
                    group_instance_id: m.group_instance_id.clone(),
                    protocol_type: desc.protocol_type.clone(),
                    protocols: vec![(desc.protocol.clone(), m.metadata.clone())],
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 20_000,
                    client_id: "fuzz".into(),
                    client_host: "/127.0.0.1".into(),
                    version: 9,
                    reason: None,
                },
                NOW + 1,
            );
        }
        if desc.group_type == "consumer" {
            let _ = c.consumer_heartbeat(
                HeartbeatRequest {
                    group_id: id.to_string(),
                    member_id: "fuzz-member".into(),
                    member_epoch: 0,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout_ms: 30_000,
                    subscribed_topic_names: Some(vec!["t".into()]),
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    owned: None,
                    client_id: "fuzz".into(),
                    client_host: "/127.0.0.1".into(),
                },
                &topics,
                NOW + 2,
            );
        }
        let leaving: Vec<LeaveMember> = desc
            .members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
            })
            .collect();
        let _ = c.leave_group(id, &leaving, NOW + 3);
    }
    // Timers: sessions and rebalances, then offset retention far in the future.
    for dt in [10_000, 60_000, 8 * 24 * 3_600_000, i64::MAX / 4] {
        let _ = c.tick(NOW + dt, &topics);
    }
    let _ = c.list_groups(&[], &[]);
});
