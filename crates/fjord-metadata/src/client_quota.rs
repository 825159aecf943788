//! Client quotas (KIP-13, KIP-219, KIP-546, KIP-599) in the metadata log: which rates apply to
//! which user, client id or (user, client id), with `<default>` entities, as KRaft's
//! `ClientQuotaRecord`, `ClientQuotasImage` and `ClientQuotaControlManager` keep them.
//!
//! Pure: the image part ([`ClientQuotas`]) applies [`MetadataRecord::ClientQuota`] records and
//! answers DescribeClientQuotas filters; [`ClientQuotas::plan`] checks AlterClientQuotas entries
//! against the image and returns the records to append (the controller emits them unless the
//! request is `validate_only`); [`ClientQuotas::resolve`] picks the quota that applies to a
//! connection in Kafka's precedence order (`DefaultQuotaCallback`):
//!
//! 1. `/config/users/<user>/clients/<client-id>`
//! 2. `/config/users/<user>/clients/<default>`
//! 3. `/config/users/<user>`
//! 4. `/config/users/<default>/clients/<client-id>`
//! 5. `/config/users/<default>/clients/<default>`
//! 6. `/config/users/<default>`
//! 7. `/config/clients/<client-id>`
//! 8. `/config/clients/<default>`
//!
//! Each quota key is resolved on its own: a user may have its `producer_byte_rate` from level 3
//! and its `consumer_byte_rate` from level 8.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::controller::Controller;
use crate::record::MetadataRecord;
use crate::ControllerResult;

/// The entity types of DescribeClientQuotas / AlterClientQuotas.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// Bytes/s a (user, client-id) may produce (KIP-13), summed over the brokers' own measures.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// Bytes/s a (user, client-id) may fetch as a consumer (KIP-13).
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percentage of one request-handler thread (KIP-124).
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// Partitions created or deleted per second (KIP-599).
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// The quota keys of user and client-id entities, and whether each must be a whole number
/// (Kafka's LONG configs) rather than a DOUBLE.
pub const QUOTA_KEYS: &[(&str, bool)] = &[
    (PRODUCER_BYTE_RATE, true),
    (CONSUMER_BYTE_RATE, true),
    (REQUEST_PERCENTAGE, false),
    (CONTROLLER_MUTATION_RATE, false),
];

/// DescribeClientQuotas match types.
pub const MATCH_EXACT: i8 = 0;
pub const MATCH_DEFAULT: i8 = 1;
pub const MATCH_SPECIFIED: i8 = 2;

/// Kafka's INVALID_REQUEST and UNSUPPORTED_VERSION.
const INVALID_REQUEST: i16 = 42;
const UNSUPPORTED_VERSION: i16 = 35;

/// One component of an entity: a name, or the `<default>` entity of its type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityName {
    Default,
    Name(String),
}

impl EntityName {
    /// From the wire, where a null name is the default entity.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Name(n.to_string()),
        }
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Name(n) => Some(n),
        }
    }
}

impl std::fmt::Display for EntityName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityName::Default => f.write_str("<default>"),
            EntityName::Name(n) => f.write_str(n),
        }
    }
}

/// A quota entity: a user, a client id, or both (`None`: the entity has no such component).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// The (entity type, name) pairs as the wire carries them (user first).
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER, u.to_wire()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.to_wire()));
        }
        out
    }

    fn has(&self, entity_type: &str) -> bool {
        match entity_type {
            USER => self.user.is_some(),
            CLIENT_ID => self.client_id.is_some(),
            _ => false,
        }
    }

    fn get(&self, entity_type: &str) -> Option<&EntityName> {
        match entity_type {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user={u}"));
        }
        if let Some(c) = &self.client_id {
            parts.push(format!("client-id={c}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// A quota value (Kafka's `float64`). Validation refuses NaN, so equality is total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl Eq for QuotaValue {}

/// One AlterClientQuotas entry as the wire has it: the entity's (type, name) pairs (a null
/// name is the default entity) and the ops (key, `Some(value)` to set or `None` to remove).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<f64>)>,
}

/// A NaN value is refused by [`check_value`] before it matters.
impl Eq for QuotaAlteration {}

/// The outcome of one [`QuotaAlteration`]: error code 0 or Kafka's code and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterationOutcome {
    pub error: i16,
    pub message: String,
}

/// One DescribeClientQuotas filter component: entity type, match type, match string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterComponent {
    pub entity_type: String,
    pub match_type: i8,
    pub matches: Option<String>,
}

/// Which entity a quota came from, and the measure it is kept under: Kafka's metric tags
/// (user, client id), "" where the quota is shared by every value of that component (a user
/// quota is shared by all the user's client ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaTags {
    pub user: String,
    pub client_id: String,
}

/// The quota that applies to a connection for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedQuota {
    pub limit: f64,
    pub tags: QuotaTags,
    /// The entity the limit was set on (for logs and DescribeClientQuotas-like views).
    pub entity: QuotaEntity,
}

/// Every entity's quotas, as the image holds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientQuotas {
    entities: BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
}

/// Values are never NaN (refused by [`check_value`]), so equality is total.
impl Eq for ClientQuotas {}

impl ClientQuotas {
    /// Apply one [`MetadataRecord::ClientQuota`].
    pub fn apply(&mut self, entity: &QuotaEntity, key: &str, value: Option<QuotaValue>) {
        match value {
            Some(v) => {
                self.entities
                    .entry(entity.clone())
                    .or_default()
                    .insert(key.to_string(), v.0);
            }
            None => {
                if let Some(q) = self.entities.get_mut(entity) {
                    q.remove(key);
                    if q.is_empty() {
                        self.entities.remove(entity);
                    }
                }
            }
        }
    }

    /// The records that rebuild these quotas (snapshots).
    pub fn to_records(&self, out: &mut Vec<MetadataRecord>) {
        for (entity, quotas) in &self.entities {
            for (key, value) in quotas {
                out.push(MetadataRecord::ClientQuota {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: Some(QuotaValue(*value)),
                });
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The quotas set on exactly `entity`.
    pub fn get(&self, entity: &QuotaEntity) -> Option<&BTreeMap<String, f64>> {
        self.entities.get(entity)
    }

    pub fn entities(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<String, f64>)> {
        self.entities.iter()
    }

    /// Whether any entity has a quota for `key` (no quota of a kind: nothing to measure).
    pub fn any_for(&self, key: &str) -> bool {
        self.entities.values().any(|q| q.contains_key(key))
    }

    /// The `key` quota of a connection authenticated as `user` with `client_id`, in Kafka's
    /// precedence order (see the module docs); `None` when no entity sets one.
    pub fn resolve(&self, key: &str, user: &str, client_id: &str) -> Option<ResolvedQuota> {
        use EntityName::{Default as D, Name};
        let u = || Some(Name(user.to_string()));
        let c = || Some(Name(client_id.to_string()));
        let both = || QuotaTags {
            user: user.to_string(),
            client_id: client_id.to_string(),
        };
        let user_only = || QuotaTags {
            user: user.to_string(),
            client_id: String::new(),
        };
        let client_only = || QuotaTags {
            user: String::new(),
            client_id: client_id.to_string(),
        };
        let order: [(Option<EntityName>, Option<EntityName>, QuotaTags); 8] = [
            (u(), c(), both()),
            (u(), Some(D), both()),
            (u(), None, user_only()),
            (Some(D), c(), both()),
            (Some(D), Some(D), both()),
            (Some(D), None, user_only()),
            (None, c(), client_only()),
            (None, Some(D), client_only()),
        ];
        order.into_iter().find_map(|(user, client_id, tags)| {
            let entity = QuotaEntity { user, client_id };
            let limit = *self.entities.get(&entity)?.get(key)?;
            Some(ResolvedQuota {
                limit,
                tags,
                entity,
            })
        })
    }

    /// DescribeClientQuotas: the entities that match every component (and, `strict`, have no
    /// other component), with their quotas; or Kafka's error code and message for a bad
    /// filter (as `ClientQuotasImage.describe`).
    #[allow(clippy::type_complexity)]
    pub fn describe(
        &self,
        components: &[FilterComponent],
        strict: bool,
    ) -> Result<Vec<(QuotaEntity, BTreeMap<String, f64>)>, (i16, String)> {
        let mut exact: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut any: BTreeSet<&str> = BTreeSet::new();
        for c in components {
            let t = c.entity_type.as_str();
            if t.is_empty() {
                return Err((INVALID_REQUEST, "Invalid empty entity type.".into()));
            }
            if exact.contains_key(t) || any.contains(t) {
                return Err((
                    INVALID_REQUEST,
                    format!("Entity type {t} cannot appear more than once in the filter."),
                ));
            }
            if ![USER, CLIENT_ID, IP].contains(&t) {
                return Err((UNSUPPORTED_VERSION, format!("Unsupported entity type {t}")));
            }
            match c.match_type {
                MATCH_EXACT => {
                    let Some(m) = c.matches.as_deref() else {
                        return Err((
                            INVALID_REQUEST,
                            "Request specified MATCH_TYPE_EXACT, but set match string to null."
                                .into(),
                        ));
                    };
                    exact.insert(t, Some(m));
                }
                MATCH_DEFAULT | MATCH_SPECIFIED if c.matches.is_some() => {
                    return Err((
                        INVALID_REQUEST,
                        format!(
                            "Request specified {}, but also specified a match string.",
                            if c.match_type == MATCH_DEFAULT {
                                "MATCH_TYPE_DEFAULT"
                            } else {
                                "MATCH_TYPE_SPECIFIED"
                            }
                        ),
                    ))
                }
                MATCH_DEFAULT => {
                    exact.insert(t, None);
                }
                MATCH_SPECIFIED => {
                    any.insert(t);
                }
                other => return Err((INVALID_REQUEST, format!("Unknown match type {other}"))),
            }
        }
        let has_ip = exact.contains_key(IP) || any.contains(IP);
        let has_other = [USER, CLIENT_ID]
            .iter()
            .any(|t| exact.contains_key(t) || any.contains(t));
        if has_ip && has_other {
            return Err((
                INVALID_REQUEST,
                "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
            ));
        }
        let matches = |e: &QuotaEntity| {
            if strict && e.components().len() != exact.len() + any.len() {
                return false;
            }
            exact.iter().all(|(t, want)| match e.get(t) {
                None => false,
                Some(name) => name.to_wire() == *want,
            }) && any.iter().all(|t| e.has(t))
        };
        Ok(self
            .entities
            .iter()
            .filter(|(e, _)| matches(e))
            .map(|(e, q)| (e.clone(), q.clone()))
            .collect())
    }

    /// AlterClientQuotas (as `ClientQuotaControlManager.alterClientQuotas`): each entry is
    /// checked on its own and answered in request order; the records of the entries that
    /// passed, for values that change, are returned together.
    pub fn plan(
        &self,
        entries: &[QuotaAlteration],
    ) -> (Vec<MetadataRecord>, Vec<AlterationOutcome>) {
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut seen: BTreeSet<QuotaEntity> = BTreeSet::new();
        for entry in entries {
            let outcome = match self.plan_entry(entry, &mut seen) {
                Ok(r) => {
                    records.extend(r);
                    AlterationOutcome {
                        error: 0,
                        message: String::new(),
                    }
                }
                Err(message) => AlterationOutcome {
                    error: INVALID_REQUEST,
                    message,
                },
            };
            outcomes.push(outcome);
        }
        (records, outcomes)
    }

    fn plan_entry(
        &self,
        entry: &QuotaAlteration,
        seen: &mut BTreeSet<QuotaEntity>,
    ) -> Result<Vec<MetadataRecord>, String> {
        let entity = parse_entity(&entry.entity)?;
        if !seen.insert(entity.clone()) {
            return Err(format!("Ignoring duplicate entity {entity}"));
        }
        let mut keys = BTreeSet::new();
        for (key, _) in &entry.ops {
            if !keys.insert(key.as_str()) {
                return Err(format!(
                    "Duplicate quota key {key} not updating quota for this entity {entity}"
                ));
            }
        }
        let current = self.entities.get(&entity);
        let mut out = Vec::new();
        for (key, value) in &entry.ops {
            match value {
                None => {
                    if current.is_some_and(|q| q.contains_key(key)) {
                        out.push(MetadataRecord::ClientQuota {
                            entity: entity.clone(),
                            key: key.clone(),
                            value: None,
                        });
                    }
                }
                Some(v) => {
                    check_value(key, *v)?;
                    if current.and_then(|q| q.get(key)) != Some(v) {
                        out.push(MetadataRecord::ClientQuota {
                            entity: entity.clone(),
                            key: key.clone(),
                            value: Some(QuotaValue(*v)),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// An entity from the wire's (type, name) pairs, with Kafka's messages for bad ones.
pub fn parse_entity(components: &[(String, Option<String>)]) -> Result<QuotaEntity, String> {
    if components.is_empty() {
        return Err("Invalid empty client quota entity".into());
    }
    let mut entity = QuotaEntity::default();
    for (t, name) in components {
        if entity.has(t) {
            return Err(format!(
                "Invalid client quota entity, duplicate entity entry {t}"
            ));
        }
        if name.as_deref() == Some("") {
            return Err(format!("Empty {t} not supported"));
        }
        let n = EntityName::from_wire(name.as_deref());
        match t.as_str() {
            USER => entity.user = Some(n),
            CLIENT_ID => entity.client_id = Some(n),
            IP => {
                return Err(
                    "IP quotas (connection_creation_rate) are not supported by Fjord".into(),
                )
            }
            other => return Err(format!("Unhandled client quota entity type: {other}")),
        }
    }
    Ok(entity)
}

/// A quota value for `key`: a known key, greater than 0, whole for the byte rates.
pub fn check_value(key: &str, value: f64) -> Result<(), String> {
    let Some((_, integral)) = QUOTA_KEYS.iter().find(|(k, _)| *k == key) else {
        return Err(format!("Invalid configuration key {key}"));
    };
    if value.is_nan() || value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    if *integral {
        if value > i64::MAX as f64 {
            return Err(format!("Proposed value for {key} is too large for a LONG."));
        }
        if (value % 1.0).abs() > 1e-6 {
            return Err(format!("{key} cannot be a fractional value."));
        }
    }
    Ok(())
}

impl Controller {
    /// AlterClientQuotas: one outcome per entry; `validate_only` checks and writes nothing.
    pub fn alter_client_quotas(
        &mut self,
        entries: &[QuotaAlteration],
        validate_only: bool,
    ) -> ControllerResult<Vec<AlterationOutcome>> {
        let (planned, outcomes) = self.image().client_quotas().plan(entries);
        let mut records = Vec::new();
        if !validate_only {
            for r in planned {
                self.emit_record(&mut records, r);
            }
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

    fn name(s: &str) -> Option<EntityName> {
        Some(EntityName::Name(s.into()))
    }

    fn set(q: &mut ClientQuotas, user: Option<EntityName>, client: Option<EntityName>, v: f64) {
        q.apply(
            &QuotaEntity {
                user,
                client_id: client,
            },
            PRODUCER_BYTE_RATE,
            Some(QuotaValue(v)),
        );
    }

    #[test]
    fn precedence_follows_kafka() {
        use EntityName::Default as D;
        let mut q = ClientQuotas::default();
        let limit = |q: &ClientQuotas| q.resolve(PRODUCER_BYTE_RATE, "alice", "app");
        assert_eq!(limit(&q), None);
        // From the weakest to the strongest, each new one wins.
        type Level<'a> = (
            Option<EntityName>,
            Option<EntityName>,
            f64,
            (&'a str, &'a str),
        );
        let levels: [Level<'_>; 8] = [
            (None, Some(D), 8.0, ("", "app")),
            (None, name("app"), 7.0, ("", "app")),
            (Some(D), None, 6.0, ("alice", "")),
            (Some(D), Some(D), 5.0, ("alice", "app")),
            (Some(D), name("app"), 4.0, ("alice", "app")),
            (name("alice"), None, 3.0, ("alice", "")),
            (name("alice"), Some(D), 2.0, ("alice", "app")),
            (name("alice"), name("app"), 1.0, ("alice", "app")),
        ];
        for (user, client, v, (tu, tc)) in levels {
            set(&mut q, user.clone(), client.clone(), v);
            let r = limit(&q).unwrap();
            assert_eq!(r.limit, v, "level {v}");
            assert_eq!((r.tags.user.as_str(), r.tags.client_id.as_str()), (tu, tc));
            assert_eq!(
                r.entity,
                QuotaEntity {
                    user,
                    client_id: client
                }
            );
        }
        // Another user falls through to the defaults; another key has none.
        assert_eq!(
            q.resolve(PRODUCER_BYTE_RATE, "bob", "x").unwrap().limit,
            5.0
        );
        assert_eq!(q.resolve(CONSUMER_BYTE_RATE, "alice", "app"), None);
        // Removing the strongest uncovers the next.
        q.apply(
            &QuotaEntity {
                user: name("alice"),
                client_id: name("app"),
            },
            PRODUCER_BYTE_RATE,
            None,
        );
        assert_eq!(limit(&q).unwrap().limit, 2.0);
        assert_eq!(q.entities().count(), 7);
    }

    fn component(t: &str, m: i8, s: Option<&str>) -> FilterComponent {
        FilterComponent {
            entity_type: t.into(),
            match_type: m,
            matches: s.map(String::from),
        }
    }

    #[test]
    fn describe_filters_as_kafka() {
        use EntityName::Default as D;
        let mut q = ClientQuotas::default();
        set(&mut q, name("alice"), None, 1.0);
        set(&mut q, name("alice"), name("app"), 2.0);
        set(&mut q, Some(D), None, 3.0);
        set(&mut q, None, name("app"), 4.0);
        set(&mut q, None, Some(D), 5.0);
        let values = |c: &[FilterComponent], strict| -> Vec<f64> {
            q.describe(c, strict)
                .unwrap()
                .iter()
                .map(|(_, v)| v[PRODUCER_BYTE_RATE])
                .collect()
        };
        assert_eq!(values(&[], false), vec![5.0, 4.0, 3.0, 1.0, 2.0]);
        assert_eq!(values(&[], true), Vec::<f64>::new());
        let alice = component(USER, MATCH_EXACT, Some("alice"));
        assert_eq!(values(std::slice::from_ref(&alice), false), vec![1.0, 2.0]);
        assert_eq!(values(std::slice::from_ref(&alice), true), vec![1.0]);
        assert_eq!(
            values(&[component(USER, MATCH_DEFAULT, None)], false),
            vec![3.0]
        );
        assert_eq!(
            values(&[component(USER, MATCH_SPECIFIED, None)], true),
            vec![3.0, 1.0]
        );
        assert_eq!(
            values(&[component(CLIENT_ID, MATCH_SPECIFIED, None)], false),
            vec![5.0, 4.0, 2.0]
        );
        assert_eq!(
            values(
                &[
                    alice.clone(),
                    component(CLIENT_ID, MATCH_EXACT, Some("app"))
                ],
                true
            ),
            vec![2.0]
        );
        let err = |c: &[FilterComponent]| q.describe(c, false).unwrap_err().0;
        assert_eq!(err(&[component("group", MATCH_EXACT, Some("x"))]), 35);
        assert_eq!(err(&[component(USER, MATCH_EXACT, None)]), 42);
        assert_eq!(err(&[component(USER, MATCH_DEFAULT, Some("x"))]), 42);
        assert_eq!(err(&[component(USER, 7, None)]), 42);
        assert_eq!(err(&[alice.clone(), alice.clone()]), 42);
        assert_eq!(err(&[alice, component(IP, MATCH_SPECIFIED, None)]), 42);
    }

    fn alteration(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> QuotaAlteration {
        QuotaAlteration {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(String::from)))
                .collect(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn alterations_checked_as_kafka() {
        let q = ClientQuotas::default();
        let entries = vec![
            alteration(
                &[(CLIENT_ID, Some("app"))],
                &[(PRODUCER_BYTE_RATE, Some(1024.0))],
            ),
            alteration(&[(USER, None)], &[(REQUEST_PERCENTAGE, Some(12.5))]),
            alteration(
                &[(CLIENT_ID, Some("x"))],
                &[(PRODUCER_BYTE_RATE, Some(-1.0))],
            ),
            alteration(&[(CLIENT_ID, Some("x2"))], &[("bogus", Some(1.0))]),
            alteration(&[("group", Some("x"))], &[(PRODUCER_BYTE_RATE, Some(1.0))]),
            alteration(&[], &[(PRODUCER_BYTE_RATE, Some(1.0))]),
            alteration(
                &[(CLIENT_ID, Some("y"))],
                &[(CONSUMER_BYTE_RATE, Some(1.5))],
            ),
            alteration(
                &[(CLIENT_ID, Some("app"))],
                &[(CONSUMER_BYTE_RATE, Some(1.0))],
            ),
            alteration(&[(USER, Some(""))], &[(CONSUMER_BYTE_RATE, Some(1.0))]),
            alteration(
                &[(CLIENT_ID, Some("z"))],
                &[(CONSUMER_BYTE_RATE, Some(1.0)), (CONSUMER_BYTE_RATE, None)],
            ),
        ];
        let (records, outcomes) = q.plan(&entries);
        let codes: Vec<i16> = outcomes.iter().map(|o| o.error).collect();
        assert_eq!(codes, vec![0, 0, 42, 42, 42, 42, 42, 42, 42, 42]);
        assert!(outcomes[2].message.contains("greater than 0"));
        assert!(outcomes[3].message.contains("Invalid configuration key"));
        assert!(outcomes[7].message.contains("duplicate entity"));
        assert_eq!(records.len(), 2);
        // Applied, the same values again write nothing; removal of an absent key nothing.
        let mut q = q;
        for r in &records {
            let MetadataRecord::ClientQuota { entity, key, value } = r else {
                panic!("{r:?}")
            };
            q.apply(entity, key, *value);
        }
        let (again, _) = q.plan(&entries[..2]);
        assert!(again.is_empty());
        let (removed, outcomes) = q.plan(&[alteration(
            &[(CLIENT_ID, Some("app"))],
            &[(PRODUCER_BYTE_RATE, None), (CONSUMER_BYTE_RATE, None)],
        )]);
        assert_eq!(outcomes[0].error, 0);
        assert_eq!(removed.len(), 1);
        let mut snapshot = Vec::new();
        q.to_records(&mut snapshot);
        assert_eq!(snapshot.len(), 2);
    }

    #[test]
    fn record_round_trips_as_json() {
        let r = MetadataRecord::ClientQuota {
            entity: QuotaEntity {
                user: Some(EntityName::Default),
                client_id: name("app"),
            },
            key: PRODUCER_BYTE_RATE.into(),
            value: Some(QuotaValue(1048576.0)),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
    }
}
