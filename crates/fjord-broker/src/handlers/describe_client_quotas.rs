//! DescribeClientQuotas (v0-1): the quotas of the entities that match a filter, answered from
//! this broker's metadata image (as Kafka's `ClientQuotasImage.describe`: components match an
//! exact name, the `<default>` entity or any entity of the type; `strict` leaves out entities
//! with other components).

use std::sync::Arc;

use fjord_metadata::client_quota::FilterComponent;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{sb, Ctx};
use crate::broker::Broker;

pub fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    // ACLs: DESCRIBE_CONFIGS on the cluster, as Kafka.
    if !crate::authz::cluster(b, ctx, fjord_security::acl::AclOperation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(fjord_protocol::error::ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(super::sb("Cluster authorization failed.")));
    }
    let components: Vec<FilterComponent> = req
        .components
        .iter()
        .map(|c| FilterComponent {
            entity_type: c.entity_type.to_string(),
            match_type: c.match_type,
            matches: c._match.as_ref().map(|m| m.to_string()),
        })
        .collect();
    let described = b.with_image(|image| image.client_quotas().describe(&components, req.strict));
    match described {
        Ok(entries) => DescribeClientQuotasResponse::default().with_entries(Some(
            entries
                .into_iter()
                .map(|(entity, values)| {
                    EntryData::default()
                        .with_entity(
                            entity
                                .components()
                                .into_iter()
                                .map(|(t, name)| {
                                    EntityData::default()
                                        .with_entity_type(sb(t))
                                        .with_entity_name(name.map(sb))
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .into_iter()
                                .map(|(k, v)| ValueData::default().with_key(sb(k)).with_value(v))
                                .collect(),
                        )
                })
                .collect(),
        )),
        Err((code, message)) => DescribeClientQuotasResponse::default()
            .with_error_code(code)
            .with_error_message(Some(sb(message)))
            .with_entries(None),
    }
}
