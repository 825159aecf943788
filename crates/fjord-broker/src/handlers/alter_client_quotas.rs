//! AlterClientQuotas (v0-1): set or remove quotas of user, client-id and (user, client-id)
//! entities (`<default>` ones with a null name), checked and written by the active controller
//! as `ClientQuota` metadata records (Kafka's `ClientQuotaControlManager`); `validate_only`
//! checks without writing. Each entry is answered on its own, INVALID_REQUEST for a bad entity
//! type, an unknown key or a value that is not positive.

use std::sync::Arc;

use fjord_metadata::client_quota::QuotaAlteration;
use fjord_metadata::ControllerReply;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use crate::control::Deadline;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let entities: Vec<Vec<EntityData>> = req
        .entries
        .iter()
        .map(|e| {
            e.entity
                .iter()
                .map(|c| {
                    EntityData::default()
                        .with_entity_type(c.entity_type.clone())
                        .with_entity_name(c.entity_name.clone())
                })
                .collect()
        })
        .collect();
    let entries: Vec<QuotaAlteration> = req
        .entries
        .iter()
        .map(|e| QuotaAlteration {
            entity: e
                .entity
                .iter()
                .map(|c| {
                    (
                        c.entity_type.to_string(),
                        c.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            ops: e
                .ops
                .iter()
                .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                .collect(),
        })
        .collect();
    // ACLs: ALTER_CONFIGS on the cluster, as Kafka.
    if !crate::authz::cluster(b, ctx, fjord_security::acl::AclOperation::AlterConfigs) {
        return AlterClientQuotasResponse::default().with_entries(
            entities
                .into_iter()
                .map(|entity| {
                    EntryData::default()
                        .with_error_code(
                            fjord_protocol::error::ErrorCode::ClusterAuthorizationFailed.code(),
                        )
                        .with_error_message(Some(sb("Cluster authorization failed.")))
                        .with_entity(entity)
                })
                .collect(),
        );
    }
    let outcomes: Vec<(i16, Option<String>)> = match b
        .submit_until(
            fjord_metadata::ControllerRequest::AlterClientQuotas {
                entries,
                validate_only: req.validate_only,
            },
            Deadline::standard(),
        )
        .await
    {
        Ok(ControllerReply::ClientQuotasAltered { results }) => results
            .into_iter()
            .map(|r| (r.error, (r.error != 0).then_some(r.message)))
            .collect(),
        Ok(other) => {
            let message = format!("unexpected controller reply {other:?}");
            vec![(-1, Some(message)); entities.len()]
        }
        Err(e) => vec![(e.code as i16, Some(e.message)); entities.len()],
    };
    AlterClientQuotasResponse::default().with_entries(
        entities
            .into_iter()
            .zip(outcomes)
            .map(|(entity, (code, message))| {
                EntryData::default()
                    .with_error_code(code)
                    .with_error_message(message.map(sb))
                    .with_entity(entity)
            })
            .collect(),
    )
}
