//! DeleteGroups v0-2: empty groups only; their offsets and metadata become tombstones.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;

pub async fn handle(b: &Broker, _ctx: &Ctx, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let ids: Vec<String> = r.groups_names.iter().map(|g| g.0.to_string()).collect();
    let (codes, written) = b.groups.run(b, |c, _, _| c.delete_groups(&ids));
    let appended = written.replicated().await;
    DeleteGroupsResponse::default().with_results(
        r.groups_names
            .iter()
            .zip(codes)
            .map(|(g, code)| {
                let code = match (code, appended) {
                    (ErrorCode::None, Err(e)) => e,
                    (c, _) => c,
                };
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(code.code())
            })
            .collect(),
    )
}
