//! AlterConfigs (v0-2), the API IncrementalAlterConfigs replaced (KIP-339) but Kafka 4.x still
//! serves and sarama's and franz-go's admin clients still use: the configs given become the
//! topic's whole set of dynamic configs — a key left out goes back to its default. Dynamic broker
//! configs are refused with a reason, as in IncrementalAlterConfigs.

use std::collections::BTreeSet;
use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use fjord_storage::config::topic_config;
use kafka_protocol::messages::alter_configs_request::AlterableConfig;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{sb, Ctx};
use crate::authz;
use crate::broker::{Broker, TopicError};
use crate::control::Deadline;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    // One deadline for every resource (AlterConfigs has no timeout of its own).
    let deadline = Deadline::standard();
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let r = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Err(code) = authz::config_resource(
            b,
            ctx,
            AclOperation::AlterConfigs,
            res.resource_type,
            &res.resource_name,
        ) {
            responses.push(r.with_error_code(code.code()));
            continue;
        }
        let outcome = match res.resource_type {
            RESOURCE_TOPIC => {
                replace_topic_configs(
                    b,
                    &res.resource_name,
                    &res.configs,
                    req.validate_only,
                    deadline,
                )
                .await
            }
            RESOURCE_BROKER => Err(TopicError::new(
                ErrorCode::InvalidRequest,
                "Dynamic broker configs are not supported yet; set them in the config file and restart.",
            )),
            other => Err(TopicError::new(
                ErrorCode::InvalidRequest,
                format!("Resource type {other} is not supported."),
            )),
        };
        responses.push(match outcome {
            Ok(()) => r,
            Err(e) => r
                .with_error_code(e.code.code())
                .with_error_message(Some(sb(e.message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// The changes that make `given` the topic's whole set of overrides: every given key set, every
/// other current override deleted.
async fn replace_topic_configs(
    b: &Broker,
    name: &str,
    given: &[AlterableConfig],
    validate_only: bool,
    deadline: Deadline,
) -> Result<(), TopicError> {
    let topic = b.existing_topic(name)?;
    let mut changes: Vec<(String, Option<String>)> = Vec::with_capacity(given.len());
    let mut keys = BTreeSet::new();
    for c in given {
        let key = c.name.to_string();
        if topic_config(&key).is_none() {
            return Err(TopicError::new(
                ErrorCode::InvalidConfig,
                format!("unknown topic config '{key}'"),
            ));
        }
        let Some(value) = c.value.as_ref() else {
            return Err(TopicError::new(
                ErrorCode::InvalidRequest,
                format!("Null value not supported for topic config '{key}'"),
            ));
        };
        if !keys.insert(key.clone()) {
            return Err(TopicError::new(
                ErrorCode::InvalidRequest,
                format!("topic config '{key}' given twice"),
            ));
        }
        changes.push((key, Some(value.to_string())));
    }
    for key in topic.overrides.keys() {
        if !keys.contains(key) {
            changes.push((key.clone(), None));
        }
    }
    b.alter_topic_configs(name, &changes, validate_only, deadline)
        .await
}
