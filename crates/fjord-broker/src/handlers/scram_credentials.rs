//! AlterUserScramCredentials (v0) and DescribeUserScramCredentials (v0), KIP-554: alterations
//! go to the controller, which stores salted credentials in the metadata log
//! (`fjord_metadata::scram`); descriptions (mechanism and iterations, never keys) come from
//! this broker's image, as KRaft brokers answer them.

use std::sync::Arc;

use fjord_metadata::scram::ScramAlteration;
use fjord_metadata::{ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{sb, Ctx};
use crate::broker::Broker;

pub async fn alter(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut alterations: Vec<ScramAlteration> = req
        .deletions
        .iter()
        .map(|d| ScramAlteration::Delete {
            user: d.name.to_string(),
            mechanism: d.mechanism,
        })
        .collect();
    alterations.extend(req.upsertions.iter().map(|u| ScramAlteration::Upsert {
        user: u.name.to_string(),
        mechanism: u.mechanism,
        iterations: u.iterations,
        salt: u.salt.to_vec(),
        salted_password: u.salted_password.to_vec(),
    }));
    let users: Vec<String> = {
        let mut seen = std::collections::BTreeSet::new();
        alterations
            .iter()
            .map(|a| match a {
                ScramAlteration::Delete { user, .. } | ScramAlteration::Upsert { user, .. } => {
                    user.clone()
                }
            })
            .filter(|u| seen.insert(u.clone()))
            .collect()
    };
    if alterations.is_empty() {
        return AlterUserScramCredentialsResponse::default();
    }
    // ACLs: ALTER on the cluster, as Kafka.
    if !crate::authz::cluster(b, ctx, fjord_security::acl::AclOperation::Alter) {
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(sb(u.clone()))
                        .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                        .with_error_message(Some(sb("Cluster authorization failed.")))
                })
                .collect(),
        );
    }
    let results = match b
        .submit(ControllerRequest::AlterUserScramCredentials { alterations })
        .await
    {
        Ok(ControllerReply::ScramCredentialsAltered { results }) => results
            .into_iter()
            .map(|r| {
                if r.error == 0 {
                    tracing::info!(principal = %ctx.principal, user = %r.user, "SCRAM credentials altered");
                }
                AlterUserScramCredentialsResult::default()
                    .with_user(sb(r.user))
                    .with_error_code(r.error)
                    .with_error_message(r.message.map(sb))
            })
            .collect(),
        Ok(other) => {
            tracing::error!(?other, "unexpected controller reply to AlterUserScramCredentials");
            every(&users, ErrorCode::UnknownServerError, "unexpected controller reply")
        }
        Err(e) => every(&users, e.code, &e.message),
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn every(users: &[String], code: ErrorCode, msg: &str) -> Vec<AlterUserScramCredentialsResult> {
    users
        .iter()
        .map(|u| {
            AlterUserScramCredentialsResult::default()
                .with_user(sb(u.clone()))
                .with_error_code(code.code())
                .with_error_message(Some(sb(msg)))
        })
        .collect()
}

pub fn describe(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    // ACLs: DESCRIBE on the cluster, as Kafka.
    if !crate::authz::cluster(b, ctx, fjord_security::acl::AclOperation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(sb("Cluster authorization failed.")));
    }
    let names: Option<Vec<String>> = req
        .users
        .map(|u| u.iter().map(|n| n.name.to_string()).collect());
    let infos = b.with_image(|i| i.scram_credentials().describe(names.as_deref()));
    let results = infos
        .into_iter()
        .map(|info| {
            let (code, message) = info.error.map_or((0, None), |(c, m)| (c, Some(sb(m))));
            DescribeUserScramCredentialsResult::default()
                .with_user(sb(info.user))
                .with_error_code(code)
                .with_error_message(message)
                .with_credential_infos(
                    info.mechanisms
                        .into_iter()
                        .map(|(m, iterations)| {
                            CredentialInfo::default()
                                .with_mechanism(m.type_code())
                                .with_iterations(iterations as i32)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
