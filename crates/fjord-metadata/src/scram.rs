//! SCRAM credentials in the metadata log, as KRaft keeps them (Kafka's
//! `UserScramCredentialRecord` / `RemoveUserScramCredentialRecord`): one record per user and
//! mechanism with the salt, stored key, server key and iteration count — never a password.
//! [`ScramImage`] is the image's part; [`Controller::alter_user_scram_credentials`] is Kafka's
//! `ScramControlManager` for AlterUserScramCredentials (KIP-554), and
//! [`ScramImage::describe`] answers DescribeUserScramCredentials from a broker's image.

use std::collections::{BTreeMap, BTreeSet};

use fjord_security::sasl::scram::{
    ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};
use serde::{Deserialize, Serialize};

use crate::controller::{Controller, ControllerResult};
use crate::MetadataRecord;

/// Kafka's error codes used here (kept as numbers: this crate does not depend on the wire
/// crate).
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// A credential as stored in a record (bytes as lowercase hex, readable in the JSON log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
    pub iterations: u32,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl StoredCredential {
    pub fn new(mech: ScramMechanism, c: &ScramCredential) -> Self {
        StoredCredential {
            mechanism: mech.name().to_string(),
            salt: hex(&c.salt),
            stored_key: hex(&c.stored_key),
            server_key: hex(&c.server_key),
            iterations: c.iterations,
        }
    }

    fn decode(&self) -> Option<(ScramMechanism, ScramCredential)> {
        Some((
            ScramMechanism::from_name(&self.mechanism)?,
            ScramCredential {
                salt: unhex(&self.salt)?,
                stored_key: unhex(&self.stored_key)?,
                server_key: unhex(&self.server_key)?,
                iterations: self.iterations,
            },
        ))
    }
}

/// Every user's SCRAM credentials, by user and mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScramImage {
    users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl ScramImage {
    /// Apply a SCRAM record; other records are not this module's (`false`). A record this
    /// version cannot read is logged and skipped (`true`: it was this module's).
    pub(crate) fn try_apply(&mut self, record: &MetadataRecord) -> bool {
        match record {
            MetadataRecord::UserScramCredential { name, credential } => {
                match credential.decode() {
                    Some((mech, c)) => {
                        self.users.entry(name.clone()).or_default().insert(mech, c);
                    }
                    None => tracing::warn!(
                        user = %name,
                        mechanism = %credential.mechanism,
                        "unreadable SCRAM credential record; skipped"
                    ),
                }
                true
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                if let (Some(mech), Some(creds)) = (
                    ScramMechanism::from_name(mechanism),
                    self.users.get_mut(name),
                ) {
                    creds.remove(&mech);
                    if creds.is_empty() {
                        self.users.remove(name);
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The credential of `user` for `mech`, for the SCRAM server.
    pub fn get(&self, user: &str, mech: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mech)
    }

    pub(crate) fn to_records(&self) -> impl Iterator<Item = MetadataRecord> + '_ {
        self.users.iter().flat_map(|(name, creds)| {
            creds
                .iter()
                .map(|(mech, c)| MetadataRecord::UserScramCredential {
                    name: name.clone(),
                    credential: StoredCredential::new(*mech, c),
                })
        })
    }

    /// DescribeUserScramCredentials: every user with credentials (`None` or an empty list),
    /// or the named ones, with Kafka's errors for unknown and repeated names.
    pub fn describe(&self, users: Option<&[String]>) -> Vec<UserCredentialsInfo> {
        let all = || -> Vec<UserCredentialsInfo> {
            self.users
                .iter()
                .map(|(name, creds)| UserCredentialsInfo {
                    user: name.clone(),
                    error: None,
                    mechanisms: creds.iter().map(|(m, c)| (*m, c.iterations)).collect(),
                })
                .collect()
        };
        let Some(users) = users.filter(|u| !u.is_empty()) else {
            return all();
        };
        let mut seen = BTreeSet::new();
        let duplicated: BTreeSet<&String> = users.iter().filter(|u| !seen.insert(*u)).collect();
        let mut done = BTreeSet::new();
        users
            .iter()
            .filter(|u| done.insert(*u))
            .map(|user| {
                if duplicated.contains(user) {
                    return UserCredentialsInfo::error(
                        user,
                        DUPLICATE_RESOURCE,
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    );
                }
                match self.users.get(user) {
                    Some(creds) => UserCredentialsInfo {
                        user: user.clone(),
                        error: None,
                        mechanisms: creds.iter().map(|(m, c)| (*m, c.iterations)).collect(),
                    },
                    None => UserCredentialsInfo::error(
                        user,
                        RESOURCE_NOT_FOUND,
                        "Attempt to describe a user credential that does not exist",
                    ),
                }
            })
            .collect()
    }
}

/// One user in a DescribeUserScramCredentials answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentialsInfo {
    pub user: String,
    /// Kafka's error code and message.
    pub error: Option<(i16, String)>,
    /// Mechanism and iterations of each credential.
    pub mechanisms: Vec<(ScramMechanism, u32)>,
}

impl UserCredentialsInfo {
    fn error(user: &str, code: i16, message: &str) -> Self {
        UserCredentialsInfo {
            user: user.to_string(),
            error: Some((code, message.to_string())),
            mechanisms: Vec::new(),
        }
    }
}

/// One alteration of AlterUserScramCredentials, as the broker forwards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramAlteration {
    Delete {
        user: String,
        /// The wire mechanism code (1 SHA-256, 2 SHA-512; others are refused).
        mechanism: i8,
    },
    Upsert {
        user: String,
        mechanism: i8,
        iterations: i32,
        salt: Vec<u8>,
        /// `Hi(password, salt, iterations)`, computed by the client (KIP-554).
        salted_password: Vec<u8>,
    },
}

impl ScramAlteration {
    fn user(&self) -> &str {
        match self {
            ScramAlteration::Delete { user, .. } | ScramAlteration::Upsert { user, .. } => user,
        }
    }

    fn mechanism(&self) -> i8 {
        match self {
            ScramAlteration::Delete { mechanism, .. }
            | ScramAlteration::Upsert { mechanism, .. } => *mechanism,
        }
    }
}

/// The outcome for one user of AlterUserScramCredentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramAlterationOutcome {
    pub user: String,
    /// 0, or Kafka's error code.
    pub error: i16,
    pub message: Option<String>,
}

impl Controller {
    /// AlterUserScramCredentials: one outcome per user, in the order users first appear.
    /// A user with an invalid alteration, or with two alterations of one mechanism, changes
    /// nothing; the other users' alterations are applied (Kafka's `ScramControlManager`).
    pub fn alter_user_scram_credentials(
        &mut self,
        alterations: Vec<ScramAlteration>,
    ) -> ControllerResult<Vec<ScramAlterationOutcome>> {
        let mut order: Vec<String> = Vec::new();
        let mut by_user: BTreeMap<String, Vec<&ScramAlteration>> = BTreeMap::new();
        for a in &alterations {
            let list = by_user.entry(a.user().to_string()).or_default();
            if list.is_empty() {
                order.push(a.user().to_string());
            }
            list.push(a);
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(order.len());
        for user in order {
            let list = &by_user[&user];
            let check = || -> Result<Vec<MetadataRecord>, (i16, String)> {
                let mut mechs = BTreeSet::new();
                if list.iter().any(|a| !mechs.insert(a.mechanism())) {
                    return Err((
                        DUPLICATE_RESOURCE,
                        "A user credential cannot be altered twice in the same request".into(),
                    ));
                }
                if user.is_empty() {
                    return Err((UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into()));
                }
                let mut out = Vec::new();
                for a in list {
                    let mech = ScramMechanism::from_type_code(a.mechanism()).ok_or_else(|| {
                        (
                            UNSUPPORTED_SASL_MECHANISM,
                            format!("Unknown SCRAM mechanism {}", a.mechanism()),
                        )
                    })?;
                    match a {
                        ScramAlteration::Delete { .. } => {
                            if self.image().scram_credentials().get(&user, mech).is_none() {
                                return Err((
                                    RESOURCE_NOT_FOUND,
                                    "Attempt to delete a user credential that does not exist"
                                        .into(),
                                ));
                            }
                            out.push(MetadataRecord::RemoveUserScramCredential {
                                name: user.clone(),
                                mechanism: mech.name().to_string(),
                            });
                        }
                        ScramAlteration::Upsert {
                            iterations,
                            salt,
                            salted_password,
                            ..
                        } => {
                            if *iterations < MIN_ITERATIONS as i32 {
                                return Err((
                                    UNACCEPTABLE_CREDENTIAL,
                                    format!("Too few iterations: {iterations} (at least {MIN_ITERATIONS})"),
                                ));
                            }
                            if *iterations > MAX_ITERATIONS as i32 {
                                return Err((
                                    UNACCEPTABLE_CREDENTIAL,
                                    format!("Too many iterations: {iterations} (at most {MAX_ITERATIONS})"),
                                ));
                            }
                            if salt.is_empty() || salted_password.is_empty() {
                                return Err((
                                    UNACCEPTABLE_CREDENTIAL,
                                    "Salt and salted password must not be empty".into(),
                                ));
                            }
                            let c = ScramCredential::from_salted_password(
                                mech,
                                salted_password,
                                salt.clone(),
                                *iterations as u32,
                            );
                            out.push(MetadataRecord::UserScramCredential {
                                name: user.clone(),
                                credential: StoredCredential::new(mech, &c),
                            });
                        }
                    }
                }
                Ok(out)
            };
            match check() {
                Ok(recs) => {
                    for r in recs {
                        self.emit_record(&mut records, r);
                    }
                    results.push(ScramAlterationOutcome {
                        user,
                        error: 0,
                        message: None,
                    });
                }
                Err((error, message)) => results.push(ScramAlterationOutcome {
                    user,
                    error,
                    message: Some(message),
                }),
            }
        }
        ControllerResult {
            records,
            response: results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ClusterImage;

    fn upsert(user: &str, mech: i8, iterations: i32) -> ScramAlteration {
        ScramAlteration::Upsert {
            user: user.into(),
            mechanism: mech,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: vec![7; 32],
        }
    }

    #[test]
    fn alter_describe_delete() {
        let mut c = Controller::new(crate::controller::ControllerConfig::default());
        let r = c.alter_user_scram_credentials(vec![
            upsert("alice", 2, 8192),
            upsert("alice", 1, 4096),
            upsert("bob", 2, 100),
            upsert("carol", 3, 4096),
            upsert("dave", 2, 4096),
            ScramAlteration::Delete {
                user: "dave".into(),
                mechanism: 2,
            },
            ScramAlteration::Delete {
                user: "erin".into(),
                mechanism: 1,
            },
        ]);
        let codes: Vec<(String, i16)> = r
            .response
            .iter()
            .map(|o| (o.user.clone(), o.error))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("alice".into(), 0),
                ("bob".into(), UNACCEPTABLE_CREDENTIAL),
                ("carol".into(), UNSUPPORTED_SASL_MECHANISM),
                ("dave".into(), DUPLICATE_RESOURCE),
                ("erin".into(), RESOURCE_NOT_FOUND),
            ]
        );
        assert_eq!(r.records.len(), 2);
        let img = c.image().scram_credentials();
        let cred = img.get("alice", ScramMechanism::Sha512).unwrap();
        assert_eq!(cred.iterations, 8192);
        assert_eq!(
            cred,
            &ScramCredential::from_salted_password(
                ScramMechanism::Sha512,
                &[7; 32],
                b"salt".to_vec(),
                8192
            )
        );
        let d = img.describe(None);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].mechanisms,
            vec![
                (ScramMechanism::Sha256, 4096),
                (ScramMechanism::Sha512, 8192)
            ]
        );
        let d = img.describe(Some(&["zed".into(), "alice".into(), "zed".into()]));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].error.as_ref().unwrap().0, DUPLICATE_RESOURCE);
        assert!(d[1].error.is_none());
        assert_eq!(
            img.describe(Some(&["zed".into()]))[0]
                .error
                .as_ref()
                .unwrap()
                .0,
            RESOURCE_NOT_FOUND
        );

        // Snapshot round trip.
        let copy = ClusterImage::from_records(&c.image().to_records());
        assert_eq!(copy.scram_credentials(), c.image().scram_credentials());

        let r = c.alter_user_scram_credentials(vec![
            ScramAlteration::Delete {
                user: "alice".into(),
                mechanism: 1,
            },
            ScramAlteration::Delete {
                user: "alice".into(),
                mechanism: 2,
            },
        ]);
        assert_eq!(r.response[0].error, 0);
        assert!(c.image().scram_credentials().describe(None).is_empty());
    }

    #[test]
    fn records_keep_their_shape() {
        let r = MetadataRecord::UserScramCredential {
            name: "u".into(),
            credential: StoredCredential {
                mechanism: "SCRAM-SHA-256".into(),
                salt: "00ff".into(),
                stored_key: "01".into(),
                server_key: "02".into(),
                iterations: 4096,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"type":"UserScramCredential","name":"u","credential":{"mechanism":"SCRAM-SHA-256","salt":"00ff","stored_key":"01","server_key":"02","iterations":4096}}"#
        );
        let mut img = ScramImage::default();
        assert!(img.try_apply(&r));
        assert_eq!(
            img.get("u", ScramMechanism::Sha256).unwrap().salt,
            vec![0, 255]
        );
        // Unreadable: skipped, not a panic.
        let bad = MetadataRecord::UserScramCredential {
            name: "v".into(),
            credential: StoredCredential {
                mechanism: "SCRAM-SHA-1".into(),
                salt: "0".into(),
                stored_key: "zz".into(),
                server_key: "".into(),
                iterations: 1,
            },
        };
        assert!(img.try_apply(&bad));
        assert!(img.get("v", ScramMechanism::Sha256).is_none());
    }
}
