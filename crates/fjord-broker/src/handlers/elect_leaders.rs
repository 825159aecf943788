//! ElectLeaders (v0-2, KIP-460): preferred or unclean leader election, decided by the
//! controller. v0 is always preferred; null partitions ask for every partition, and then only
//! partitions that needed an election are reported (as Kafka does).

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_metadata::{ControllerReply, ControllerRequest, Uuid};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

/// (partition, its error if already known, or `None` to take the controller's answer).
type Asked = (i32, Option<i16>);

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let election_type = if ctx.version >= 1 {
        req.election_type
    } else {
        0
    };
    if !authz::cluster(b, ctx, AclOperation::Alter) {
        return ElectLeadersResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    if !(0..=1).contains(&election_type) {
        return ElectLeadersResponse::default().with_error_code(ErrorCode::InvalidRequest.code());
    }
    // Per topic name, in request order.
    let mut by_topic: Vec<(String, Vec<Asked>)> = Vec::new();
    let mut ask: Option<Vec<(Uuid, u32)>> = None;
    if let Some(topics) = &req.topic_partitions {
        let mut list = Vec::new();
        for t in topics {
            let topic = b.topic(&t.topic);
            let parts = t
                .partitions
                .iter()
                .map(|&p| match &topic {
                    Some(topic) if p >= 0 && (p as usize) < topic.partitions.len() => {
                        list.push((topic.id, p as u32));
                        (p, None)
                    }
                    _ => (p, Some(ErrorCode::UnknownTopicOrPartition.code())),
                })
                .collect();
            by_topic.push((t.topic.to_string(), parts));
        }
        ask = Some(list);
    }

    let request = ControllerRequest::ElectLeaders {
        election_type: election_type as u8,
        partitions: ask.clone(),
    };
    let submitted = b.submit_within(request, req.timeout_ms).await;
    let mut decided: BTreeMap<(Uuid, u32), i16> = BTreeMap::new();
    let mut failure = None;
    match submitted {
        Ok(ControllerReply::ElectionResults { results }) => {
            for r in results {
                decided.insert((r.topic_id, r.partition), r.error);
            }
        }
        Ok(other) => {
            failure = Some((
                ErrorCode::UnknownServerError,
                format!("unexpected controller reply {other:?}"),
            ))
        }
        Err(e) => failure = Some((e.code, e.message)),
    }

    if ask.is_none() {
        // Every partition: report what the controller reported, grouped by topic.
        if let Some((code, message)) = failure {
            // No partition to pin it on: v1+ has a top-level error, v0 can only say nothing.
            tracing::warn!(error = %message, "ElectLeaders for all partitions failed");
            let code = if ctx.version >= 1 { code.code() } else { 0 };
            return ElectLeadersResponse::default().with_error_code(code);
        }
        let mut names: BTreeMap<String, Vec<Asked>> = BTreeMap::new();
        for ((id, p), code) in &decided {
            let name = b
                .topic_by_id(id)
                .map_or_else(|| id.to_string(), |t| t.name.to_string());
            names
                .entry(name)
                .or_default()
                .push((*p as i32, Some(*code)));
        }
        by_topic = names.into_iter().collect();
    }

    let topic_ids: BTreeMap<String, Uuid> = by_topic
        .iter()
        .filter_map(|(n, _)| b.topic(n).map(|t| (n.clone(), t.id)))
        .collect();
    let results = by_topic
        .into_iter()
        .map(|(name, parts)| {
            let id = topic_ids.get(&name).copied();
            let partition_result = parts
                .into_iter()
                .map(|(p, known)| match (known, &failure) {
                    (Some(code), _) => result(p, code, None),
                    (None, Some((code, message))) => result(p, code.code(), Some(message.clone())),
                    (None, None) => {
                        let code = id
                            .and_then(|id| decided.get(&(id, p as u32)).copied())
                            .unwrap_or(ErrorCode::UnknownTopicOrPartition.code());
                        result(p, code, None)
                    }
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(TopicName(sb(name)))
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

fn result(partition: i32, code: i16, message: Option<String>) -> PartitionResult {
    let message = message.or_else(|| {
        (code != 0).then(|| {
            match ErrorCode::from_i16(code) {
                ErrorCode::ElectionNotNeeded => "Leader election not needed for topic partition.",
                ErrorCode::PreferredLeaderNotAvailable => "The preferred leader was not available.",
                ErrorCode::EligibleLeadersNotAvailable => {
                    "Eligible topic partition leaders are not available."
                }
                ErrorCode::UnknownTopicOrPartition => {
                    "This server does not host this topic-partition."
                }
                _ => "The election failed.",
            }
            .to_string()
        })
    });
    PartitionResult::default()
        .with_partition_id(partition)
        .with_error_code(code)
        .with_error_message(message.map(sb))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::control::Deadline;

    use kafka_protocol::messages::{
        elect_leaders_request, ApiKey, RequestHeader, RequestKind, ResponseKind,
    };

    use super::*;
    use crate::config::BrokerConfig;
    use crate::handlers::{handle as dispatch, Outcome};

    async fn elect(
        b: &Arc<Broker>,
        version: i16,
        election_type: i8,
        topics: Option<Vec<(&str, Vec<i32>)>>,
    ) -> ElectLeadersResponse {
        let body = ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(5_000)
            .with_topic_partitions(topics.map(|ts| {
                ts.into_iter()
                    .map(|(t, ps)| {
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(TopicName(sb(t)))
                            .with_partitions(ps)
                    })
                    .collect()
            }));
        let req = fjord_protocol::codec::Request {
            api_key: ApiKey::ElectLeaders,
            header: RequestHeader::default().with_request_api_version(version),
            body: RequestKind::ElectLeaders(body),
        };
        match dispatch(b, req).await {
            Outcome::Respond(r) => match *r {
                ResponseKind::ElectLeaders(r) => r,
                _ => panic!("not an ElectLeaders response"),
            },
            _ => panic!("no response"),
        }
    }

    fn codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
        r.replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (t.topic.to_string(), p.partition_id, p.error_code))
            })
            .collect()
    }

    #[tokio::test]
    async fn single_node_partitions_already_have_their_preferred_leader() {
        let dir = tempfile::tempdir().unwrap();
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.path().display().to_string());
        let b = Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap();
        b.create_topic("t", 2, 1, BTreeMap::new(), false, Deadline::standard())
            .await
            .unwrap();
        for version in 0..=2 {
            let r = elect(
                &b,
                version,
                0,
                Some(vec![("t", vec![0, 1, 9]), ("nope", vec![0])]),
            )
            .await;
            assert_eq!(r.error_code, 0);
            assert_eq!(
                codes(&r),
                vec![
                    ("t".into(), 0, ErrorCode::ElectionNotNeeded.code()),
                    ("t".into(), 1, ErrorCode::ElectionNotNeeded.code()),
                    ("t".into(), 9, ErrorCode::UnknownTopicOrPartition.code()),
                    ("nope".into(), 0, ErrorCode::UnknownTopicOrPartition.code()),
                ],
                "v{version}"
            );
            let msg = &r.replica_election_results[0].partition_result[0].error_message;
            assert!(msg.as_ref().is_some_and(|m| m.contains("not needed")));
            // All partitions: nothing needed an election, so nothing is reported.
            let r = elect(&b, version, 0, None).await;
            assert_eq!((r.error_code, codes(&r)), (0, vec![]), "v{version}");
        }
        // Unclean: every partition has a leader.
        let r = elect(&b, 1, 1, Some(vec![("t", vec![1])])).await;
        assert_eq!(
            codes(&r),
            vec![("t".into(), 1, ErrorCode::ElectionNotNeeded.code())]
        );
        // An unknown election type.
        let r = elect(&b, 2, 7, None).await;
        assert_eq!(r.error_code, ErrorCode::InvalidRequest.code());
    }
}
