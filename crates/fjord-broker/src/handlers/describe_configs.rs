//! DescribeConfigs (v1-4): topic and broker configs with source, type and synonyms.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use crate::config_view::{self, ConfigEntry};
use fjord_security::acl::AclOperation;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if let Err(code) = authz::config_resource(
                b,
                ctx,
                AclOperation::DescribeConfigs,
                res.resource_type,
                &res.resource_name,
            ) {
                return r.with_error_code(code.code());
            }
            let entries: Result<Vec<ConfigEntry>, (ErrorCode, String)> = match res.resource_type {
                RESOURCE_TOPIC => match b.topic(&res.resource_name) {
                    Some(t) => Ok(config_view::topic_entries(b, &t.config, &t.overrides)),
                    None => Err((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("Topic '{}' does not exist.", &*res.resource_name),
                    )),
                },
                RESOURCE_BROKER => {
                    let name = &*res.resource_name;
                    if name.is_empty() || name == b.node_id().to_string() {
                        Ok(config_view::broker_entries(b))
                    } else {
                        Err((
                            ErrorCode::InvalidRequest,
                            format!("Broker {name} is not this broker ({}).", b.node_id()),
                        ))
                    }
                }
                other => Err((
                    ErrorCode::InvalidRequest,
                    format!("Resource type {other} is not supported."),
                )),
            };
            match entries {
                Err((code, msg)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(msg))),
                Ok(entries) => {
                    let wanted = res.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|e| wanted.is_none_or(|w| w.iter().any(|k| **k == *e.name)))
                        .map(|e| {
                            let synonyms = if req.include_synonyms {
                                e.synonyms
                                    .iter()
                                    .map(|(n, v, s)| {
                                        DescribeConfigsSynonym::default()
                                            .with_name(sb(n.clone()))
                                            .with_value(Some(sb(v.clone())))
                                            .with_source(*s as i8)
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            let _ = ctx;
                            DescribeConfigsResourceResult::default()
                                .with_name(sb(e.name.clone()))
                                .with_value(Some(sb(e.value)))
                                .with_read_only(
                                    res.resource_type == RESOURCE_BROKER
                                        && !crate::config_view::is_dynamic_broker_key(&e.name),
                                )
                                .with_config_source(e.source as i8)
                                .with_config_type(e.config_type)
                                .with_synonyms(synonyms)
                        })
                        .collect();
                    r.with_configs(configs)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
