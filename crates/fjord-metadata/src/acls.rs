//! ACLs in the metadata log, as KRaft keeps them: each ACL is an
//! [`MetadataRecord::AccessControlEntry`] with an id (Kafka's `AccessControlEntryRecord`) and
//! leaves with [`MetadataRecord::RemoveAccessControlEntry`]. [`AclImage`] is the image's part:
//! the ACLs by id plus the authorizer's index (`fjord_security::authorizer::AclIndex`), kept by
//! delta. The controller side ([`Controller::create_acls`], [`Controller::delete_acls`]) is
//! Kafka's `AclControlManager`: a new ACL already present is a success without a record, and a
//! deletion removes the union of what its filters match, all in one batch.

use std::collections::{BTreeMap, HashMap};

use fjord_security::acl::{AclBinding, AclBindingFilter};
use fjord_security::authorizer::AclIndex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controller::{Controller, ControllerResult};
use crate::image::ApplyError;
use crate::MetadataRecord;

/// Every ACL, by id and indexed for authorization.
#[derive(Debug, Clone, Default)]
pub struct AclImage {
    by_id: BTreeMap<Uuid, AclBinding>,
    ids: HashMap<AclBinding, Uuid>,
    index: AclIndex,
}

impl PartialEq for AclImage {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

impl Eq for AclImage {}

impl AclImage {
    /// Apply an ACL record (other records change nothing here).
    pub(crate) fn try_apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::AccessControlEntry { id, acl } => {
                if self.by_id.contains_key(id) {
                    return Err(ApplyError::InvalidAcl(format!(
                        "ACL id {id} already exists"
                    )));
                }
                if self.ids.contains_key(acl) {
                    return Err(ApplyError::InvalidAcl(format!("ACL {acl} already exists")));
                }
                self.index.add(acl);
                self.ids.insert(acl.clone(), *id);
                self.by_id.insert(*id, acl.clone());
                Ok(())
            }
            MetadataRecord::RemoveAccessControlEntry { id } => {
                let Some(acl) = self.by_id.remove(id) else {
                    return Err(ApplyError::InvalidAcl(format!(
                        "ACL id {id} does not exist"
                    )));
                };
                self.ids.remove(&acl);
                self.index.remove(&acl);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The authorizer's view of the ACLs.
    pub fn index(&self) -> &AclIndex {
        &self.index
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, acl: &AclBinding) -> bool {
        self.ids.contains_key(acl)
    }

    /// The ACLs `filter` matches (DescribeAcls), with their ids, in id order.
    pub fn matching<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = (Uuid, &'a AclBinding)> + 'a {
        self.by_id
            .iter()
            .filter(move |(_, b)| filter.matches(b))
            .map(|(id, b)| (*id, b))
    }

    /// The records that rebuild this part of the image (snapshots).
    pub(crate) fn to_records(&self) -> impl Iterator<Item = MetadataRecord> + '_ {
        self.by_id
            .iter()
            .map(|(id, acl)| MetadataRecord::AccessControlEntry {
                id: *id,
                acl: acl.clone(),
            })
    }
}

/// The outcome of one filter of [`Controller::delete_acls`]: the error message
/// (INVALID_REQUEST) or the ACLs it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclDeleteOutcome {
    pub error: Option<String>,
    pub deleted: Vec<AclBinding>,
}

impl Controller {
    /// CreateAcls: one result per ACL, `None` when created (or already present) and the
    /// INVALID_REQUEST message otherwise. Ids come with the request (the controller stays
    /// deterministic).
    pub fn create_acls(
        &mut self,
        acls: Vec<(Uuid, AclBinding)>,
    ) -> ControllerResult<Vec<Option<String>>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(acls.len());
        for (id, acl) in acls {
            if let Err(e) = acl.validate() {
                results.push(Some(e.0));
                continue;
            }
            if !self.image().acls().contains(&acl) {
                self.emit_record(&mut records, MetadataRecord::AccessControlEntry { id, acl });
            }
            results.push(None);
        }
        ControllerResult {
            records,
            response: results,
        }
    }

    /// DeleteAcls: one outcome per filter; an ACL matched by several filters is removed once
    /// and reported by each, as Kafka does.
    pub fn delete_acls(
        &mut self,
        filters: Vec<AclBindingFilter>,
    ) -> ControllerResult<Vec<AclDeleteOutcome>> {
        let mut doomed = std::collections::BTreeSet::new();
        let outcomes: Vec<AclDeleteOutcome> = filters
            .iter()
            .map(|f| match f.validate() {
                Err(e) => AclDeleteOutcome {
                    error: Some(e.0),
                    deleted: Vec::new(),
                },
                Ok(()) => {
                    let mut deleted = Vec::new();
                    for (id, b) in self.image().acls().matching(f) {
                        doomed.insert(id);
                        deleted.push(b.clone());
                    }
                    AclDeleteOutcome {
                        error: None,
                        deleted,
                    }
                }
            })
            .collect();
        let mut records = Vec::with_capacity(doomed.len());
        for id in doomed {
            self.emit_record(
                &mut records,
                MetadataRecord::RemoveAccessControlEntry { id },
            );
        }
        ControllerResult {
            records,
            response: outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ControllerConfig;
    use crate::image::ClusterImage;
    use fjord_security::acl::{
        AccessControlEntry, AclOperation, PatternType, PermissionType, ResourcePattern,
        ResourceType,
    };

    fn acl(name: &str, pt: PatternType, principal: &str) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern::new(ResourceType::Topic, name, pt),
            entry: AccessControlEntry {
                principal: principal.into(),
                host: "*".into(),
                operation: AclOperation::Read,
                permission: PermissionType::Allow,
            },
        }
    }

    fn controller() -> Controller {
        Controller::from_image(ControllerConfig::default(), ClusterImage::default(), 0)
    }

    #[test]
    fn create_is_idempotent_and_validates() {
        let mut c = controller();
        let a = acl("t", PatternType::Literal, "User:a");
        let mut bad = acl("t", PatternType::Match, "User:a");
        bad.entry.principal = "User:b".into();
        let r = c.create_acls(vec![
            (Uuid::from_u128(1), a.clone()),
            (Uuid::from_u128(2), a.clone()),
            (Uuid::from_u128(3), bad),
        ]);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.response[0], None);
        assert_eq!(r.response[1], None);
        assert!(r.response[2].as_deref().unwrap().contains("patternType"));
        assert_eq!(c.image().acls().len(), 1);
        let again = c.create_acls(vec![(Uuid::from_u128(4), a)]);
        assert!(again.records.is_empty());
    }

    #[test]
    fn delete_removes_the_union_and_reports_per_filter() {
        let mut c = controller();
        let a = acl("t", PatternType::Literal, "User:a");
        let b = acl("t", PatternType::Prefixed, "User:b");
        let other = acl("u", PatternType::Literal, "User:a");
        c.create_acls(vec![
            (Uuid::from_u128(1), a.clone()),
            (Uuid::from_u128(2), b.clone()),
            (Uuid::from_u128(3), other.clone()),
        ]);
        let mut by_name = AclBindingFilter::any();
        by_name.pattern.name = Some("t".into());
        by_name.pattern.pattern_type = PatternType::Match;
        let mut by_principal = AclBindingFilter::any();
        by_principal.entry.principal = Some("User:a".into());
        by_principal.pattern.name = Some("t".into());
        let mut bad = AclBindingFilter::any();
        bad.entry.operation = AclOperation::Unknown;
        let r = c.delete_acls(vec![by_name, by_principal, bad]);
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.response[0].deleted, vec![a.clone(), b]);
        assert_eq!(r.response[1].deleted, vec![a]);
        assert!(r.response[2].error.is_some());
        let left: Vec<_> = c
            .image()
            .acls()
            .matching(&AclBindingFilter::any())
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(left, vec![other]);
    }

    #[test]
    fn image_round_trips_through_records_and_json() {
        let mut c = controller();
        c.create_acls(vec![
            (Uuid::from_u128(1), acl("t", PatternType::Literal, "User:a")),
            (
                Uuid::from_u128(2),
                acl("p-", PatternType::Prefixed, "User:*"),
            ),
        ]);
        let records = c.image().to_records();
        let json: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let parsed: Vec<MetadataRecord> = json
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let rebuilt = ClusterImage::from_records(&parsed);
        assert_eq!(rebuilt.acls(), c.image().acls());
        assert_eq!(rebuilt.acls().index().len(), 2);
        // Removing an unknown id or re-adding an id is refused by the image.
        let mut img = rebuilt.clone();
        assert!(img
            .try_apply(&MetadataRecord::RemoveAccessControlEntry {
                id: Uuid::from_u128(9)
            })
            .is_err());
        assert!(img
            .try_apply(&MetadataRecord::AccessControlEntry {
                id: Uuid::from_u128(1),
                acl: acl("x", PatternType::Literal, "User:a"),
            })
            .is_err());
        assert_eq!(img, rebuilt);
    }
}
