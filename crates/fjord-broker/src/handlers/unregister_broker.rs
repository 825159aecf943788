//! UnregisterBroker (v0, KIP-631): an operator removes a broker from the cluster (Kafka's
//! `kafka-cluster unregister`, Admin `unregisterBroker`), forwarded to the controller. The
//! controller refuses with INVALID_REQUEST and the reason while the broker runs (it would
//! register again) or holds replicas (drain it first: `fjord broker maintenance enable N
//! --drain-replicas`), and answers BROKER_ID_NOT_REGISTERED for an unknown id. Kafka
//! unregisters a broker that still holds replicas; Fjord does not, so no partition is left with
//! a replica on a broker that no longer exists.

use std::sync::Arc;

use fjord_metadata::ControllerRequest;
use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    if !authz::cluster(b, ctx, AclOperation::Alter) {
        return UnregisterBrokerResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let request = ControllerRequest::UnregisterBroker {
        node_id: req.broker_id.0,
    };
    match b.submit(request).await {
        Ok(_) => UnregisterBrokerResponse::default(),
        Err(e) => UnregisterBrokerResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(sb(e.message))),
    }
}
