//! ApiVersions (v0-4): the table in `fjord_protocol::versions`, nothing else.

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::Ctx;

pub fn handle(_ctx: &Ctx, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    fjord_protocol::api_versions_response()
}
