//! IncrementalAlterConfigs (v0-1): SET, DELETE, APPEND and SUBTRACT on topic configs; SET and
//! DELETE of the dynamic broker configs (`fjord_metadata::record::DYNAMIC_BROKER_CONFIGS`: the
//! replication throttle rates) for one broker or the cluster default (empty resource name),
//! kept in the metadata log. Other broker keys are static and refused with a reason.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use fjord_storage::config::{topic_config, ConfigType};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{sb, Ctx};
use crate::authz;
use crate::broker::{Broker, TopicError};
use crate::control::Deadline;
use fjord_metadata::record::DYNAMIC_BROKER_CONFIGS;
use fjord_security::acl::AclOperation;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    // One deadline for every resource (the request has no timeout of its own).
    let deadline = Deadline::standard();
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        responses.push({
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let denied = authz::config_resource(
                b,
                ctx,
                AclOperation::AlterConfigs,
                res.resource_type,
                &res.resource_name,
            );
            let outcome = match res.resource_type {
                _ if denied.is_err() => Err(TopicError {
                    code: denied.expect_err("checked"),
                    message: "Authorization failed.".into(),
                }),
                RESOURCE_TOPIC => {
                    alter_topic(
                        b,
                        &res.resource_name,
                        &res.configs,
                        req.validate_only,
                        deadline,
                    )
                    .await
                }
                RESOURCE_BROKER => {
                    alter_broker(
                        b,
                        &res.resource_name,
                        &res.configs,
                        req.validate_only,
                        deadline,
                    )
                    .await
                }
                other => Err(TopicError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("Resource type {other} is not supported."),
                }),
            };
            match outcome {
                Ok(()) => r,
                Err(e) => r
                    .with_error_code(e.code.code())
                    .with_error_message(Some(sb(e.message))),
            }
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter_broker(
    b: &Broker,
    name: &str,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
    deadline: Deadline,
) -> Result<(), TopicError> {
    let node_id = if name.is_empty() {
        None
    } else {
        Some(
            name.parse::<i32>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| TopicError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("'{name}' is not a broker id"),
                })?,
        )
    };
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.name.to_string();
        if !DYNAMIC_BROKER_CONFIGS.contains(&key.as_str()) {
            return Err(TopicError {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "'{key}' cannot be changed at run time (dynamic broker configs: {}); set it in the config file and restart.",
                    DYNAMIC_BROKER_CONFIGS.join(", ")
                ),
            });
        }
        match op.config_operation {
            SET => {
                let Some(v) = op.value.as_ref() else {
                    return Err(TopicError {
                        code: ErrorCode::InvalidConfig,
                        message: format!("SET of '{key}' needs a value"),
                    });
                };
                changes.push((key, Some(v.to_string())));
            }
            DELETE => changes.push((key, None)),
            other => {
                return Err(TopicError {
                    code: ErrorCode::InvalidConfig,
                    message: format!("operation {other} does not apply to '{key}' (SET or DELETE)"),
                })
            }
        }
    }
    b.alter_broker_configs(node_id, changes, validate_only, deadline)
        .await
}

async fn alter_topic(
    b: &Broker,
    name: &str,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
    deadline: Deadline,
) -> Result<(), TopicError> {
    let invalid = |message: String| TopicError {
        code: ErrorCode::InvalidConfig,
        message,
    };
    let topic = b.existing_topic(name)?;
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    for op in ops {
        let key = op.name.to_string();
        let def =
            topic_config(&key).ok_or_else(|| invalid(format!("unknown topic config '{key}'")))?;
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            SET => {
                let v = value.ok_or_else(|| invalid(format!("SET of '{key}' needs a value")))?;
                changes.push((key, Some(v)));
            }
            DELETE => changes.push((key, None)),
            APPEND | SUBTRACT => {
                if def.ty != ConfigType::List {
                    return Err(invalid(format!(
                        "'{key}' is not a list; APPEND and SUBTRACT apply to list configs only"
                    )));
                }
                let current = topic
                    .overrides
                    .get(&key)
                    .cloned()
                    .or_else(|| topic.config.value_string(&key))
                    .unwrap_or_default();
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for v in value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if op.config_operation == APPEND {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                changes.push((key, Some(items.join(","))));
            }
            other => {
                return Err(TopicError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("unknown config operation {other}"),
                })
            }
        }
    }
    b.alter_topic_configs(name, &changes, validate_only, deadline)
        .await
}
