//! Topic administration through the controller: create topics (with or without an assignment),
//! add partitions, alter topic and dynamic broker configs, delete topics; and the submit paths
//! every such change takes ([`Broker::submit`], which returns once this broker has applied it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_metadata::{image::invalid_topic_name, ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use fjord_storage::LogConfig;
use uuid::Uuid;

use super::{Broker, Topic, TopicError};
use crate::control::{submit_error, ControlPlane, Deadline};

impl Broker {
    pub(super) fn submit_local(&self, req: ControllerRequest) -> anyhow::Result<ControllerReply> {
        let ControlPlane::Local(local) = &self.control else {
            anyhow::bail!("not a single node");
        };
        crate::control::submit_local_blocking(self, local, req)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Ask the controller for a change and return once this broker has applied it, within
    /// [`Deadline::standard`].
    pub async fn submit(&self, req: ControllerRequest) -> Result<ControllerReply, TopicError> {
        self.submit_until(req, Deadline::standard()).await
    }

    /// [`Broker::submit`] for a request with `timeout_ms` ([`Deadline::from_timeout_ms`]).
    pub async fn submit_within(
        &self,
        req: ControllerRequest,
        timeout_ms: i32,
    ) -> Result<ControllerReply, TopicError> {
        self.submit_until(req, Deadline::from_timeout_ms(timeout_ms))
            .await
    }

    /// Ask the controller for a change and return once this broker has applied it, or, by
    /// `deadline`, REQUEST_TIMED_OUT: the time covers reaching the active controller (hints,
    /// elections), its decision and commit, and this broker applying the result, so a
    /// leadership change or a controller that stops answering costs the client a retriable
    /// error, never its own timeout. A change whose outcome is unknown may still be committed
    /// (Kafka's at-least-once semantics for controller requests).
    pub async fn submit_until(
        &self,
        req: ControllerRequest,
        deadline: Deadline,
    ) -> Result<ControllerReply, TopicError> {
        let kind = req.kind();
        let started = tokio::time::Instant::now();
        let result = match &self.control {
            ControlPlane::Local(local) => {
                match tokio::time::timeout_at(
                    deadline.instant(),
                    crate::control::submit_local(self, local, req),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(TopicError::new(
                        ErrorCode::RequestTimedOut,
                        format!("{kind} was not made durable within {:?}", started.elapsed()),
                    )),
                }
            }
            ControlPlane::Quorum { client, .. } => {
                match client.submit(req, deadline.remaining()).await {
                    Ok(committed) => self
                        .wait_applied(committed.offset, deadline.remaining())
                        .await
                        .map(|()| committed.reply),
                    Err(e) => Err(submit_error(e)),
                }
            }
        };
        if let Err(e) = &result {
            crate::control::note_unanswered(self, kind, e, started.elapsed());
        }
        result
    }
    /// Wait until this broker has applied the metadata log up to `offset` (exclusive).
    pub async fn wait_applied(&self, offset: i64, timeout: Duration) -> Result<(), TopicError> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|applied| *applied >= offset).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(TopicError::new(
                ErrorCode::RequestTimedOut,
                format!("the change was committed at metadata offset {offset} but this broker has not applied it yet"),
            )),
        }
    }

    /// Create a topic (or, with `validate_only`, check that it could be created). -1 partitions
    /// or replication factor take the broker defaults. Returns the partition count, the
    /// replication factor and, unless validating, the topic as published here.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.check_new_topic(name)?;
        let partitions = if num_partitions == -1 {
            self.config.num_partitions
        } else {
            num_partitions
        };
        if partitions < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Number of partitions must be larger than 0 (got {num_partitions})."),
            ));
        }
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("Replication factor must be larger than 0 (got {replication_factor})."),
            ));
        }
        self.check_topic_configs(&configs)?;
        let request = ControllerRequest::CreateTopic {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions: partitions as u32,
            replication_factor: rf as u16,
            configs,
            validate_only,
        };
        self.submit_create_topic(
            name,
            partitions as u32,
            rf as u16,
            request,
            validate_only,
            deadline,
        )
        .await
    }

    /// Create a topic with the replicas of each partition given (partition `i` is
    /// `assignments[i]`, preferred leader first); the controller checks the brokers.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.check_new_topic(name)?;
        self.check_topic_configs(&configs)?;
        let partitions = assignments.len() as u32;
        let rf = assignments.first().map_or(0, |r| r.len() as u16);
        let request = ControllerRequest::CreateTopicAssigned {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            assignments,
            configs,
            validate_only,
        };
        self.submit_create_topic(name, partitions, rf, request, validate_only, deadline)
            .await
    }

    /// A new topic's name is valid and free.
    fn check_new_topic(&self, name: &str) -> Result<(), TopicError> {
        if let Some(why) = invalid_topic_name(name) {
            return Err(TopicError::new(ErrorCode::InvalidTopicException, why));
        }
        if self.topic(name).is_some() {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        Ok(())
    }

    /// A new topic's config overrides are valid.
    fn check_topic_configs(&self, configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
        LogConfig::from_overrides(&self.config.log, configs)
            .map(|_| ())
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))
    }

    async fn submit_create_topic(
        &self,
        name: &str,
        partitions: u32,
        rf: u16,
        request: ControllerRequest,
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.submit_until(request, deadline).await?;
        if validate_only {
            return Ok((partitions, rf, None));
        }
        let topic = self.existing_topic(name)?;
        tracing::info!(topic = name, id = %topic.id, partitions, replication_factor = rf, "topic created");
        Ok((partitions, rf, Some(topic)))
    }

    /// Grow a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(), TopicError> {
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
            ));
        }
        self.submit_until(
            ControllerRequest::CreatePartitions {
                name: name.to_string(),
                total: count as u32,
                validate_only,
            },
            deadline,
        )
        .await?;
        if !validate_only {
            tracing::info!(topic = name, from = current, to = count, "partitions added");
        }
        Ok(())
    }

    /// Apply config changes (`None` removes an override) after validating all of them.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(), TopicError> {
        let topic = self.existing_topic(name)?;
        let mut overrides = topic.overrides.clone();
        for (k, v) in changes {
            match v {
                Some(v) => {
                    overrides.insert(k.clone(), v.clone());
                }
                None => {
                    if fjord_storage::config::topic_config(k).is_none() {
                        return Err(TopicError::new(
                            ErrorCode::InvalidConfig,
                            format!("unknown topic config '{k}'"),
                        ));
                    }
                    overrides.remove(k);
                }
            }
        }
        LogConfig::from_overrides(&self.config.log, &overrides)
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        self.submit_until(
            ControllerRequest::AlterTopicConfigs {
                name: name.to_string(),
                changes: changes.to_vec(),
            },
            deadline,
        )
        .await?;
        tracing::info!(topic = name, ?changes, "topic config changed");
        Ok(())
    }

    /// Set or remove dynamic broker configs (the replication throttle rates) of broker
    /// `node_id` or the cluster default. The controller checks keys and values; with
    /// `validate_only` only the check runs.
    pub async fn alter_broker_configs(
        &self,
        node_id: Option<i32>,
        changes: Vec<(String, Option<String>)>,
        validate_only: bool,
        deadline: Deadline,
    ) -> Result<(), TopicError> {
        if validate_only {
            return fjord_metadata::rpc::check_broker_config_changes(&changes)
                .map_err(|e| TopicError::new(ErrorCode::from_i16(e.code()), e.to_string()));
        }
        self.submit_until(
            ControllerRequest::AlterBrokerConfigs {
                node_id,
                changes: changes.clone(),
            },
            deadline,
        )
        .await?;
        tracing::info!(
            broker = node_id.map_or_else(|| "cluster default".to_string(), |n| n.to_string()),
            ?changes,
            "dynamic broker config changed"
        );
        Ok(())
    }

    /// Delete a topic. Every broker moves its directories aside and removes them in the
    /// background when it applies the deletion; a topic recreated with the same name gets a new
    /// id and fresh directories.
    pub async fn delete_topic(&self, name: &str, deadline: Deadline) -> Result<(), TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::new(
                ErrorCode::TopicDeletionDisabled,
                "Topic deletion is disabled (delete.topic.enable=false).",
            ));
        }
        self.existing_topic(name)?;
        self.submit_until(
            ControllerRequest::DeleteTopic {
                name: name.to_string(),
            },
            deadline,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::tests::broker;

    #[tokio::test]
    async fn topic_lifecycle_survives_restart_and_recreate_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let (_, _, t) = b
            .create_topic("t", 2, 1, BTreeMap::new(), false, Deadline::standard())
            .await
            .unwrap();
        let t = t.unwrap();
        assert!(t
            .partitions
            .iter()
            .all(|p| p.is_leader() && p.leader_epoch() == 0));
        let e = b
            .create_topic("t", 2, 1, BTreeMap::new(), false, Deadline::standard())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TopicAlreadyExists);
        let code = |r: Result<(u32, u16, Option<Arc<Topic>>), TopicError>| r.unwrap_err().code;
        assert_eq!(
            code(
                b.create_topic(
                    "bad/name",
                    1,
                    1,
                    BTreeMap::new(),
                    false,
                    Deadline::standard()
                )
                .await
            ),
            ErrorCode::InvalidTopicException
        );
        assert_eq!(
            code(
                b.create_topic("x", 1, 3, BTreeMap::new(), false, Deadline::standard())
                    .await
            ),
            ErrorCode::InvalidReplicationFactor
        );
        // Validation only: nothing is created.
        b.create_topic("v", 4, 1, BTreeMap::new(), true, Deadline::standard())
            .await
            .unwrap();
        assert!(b.topic("v").is_none());
        b.create_partitions("t", 3, false, Deadline::standard())
            .await
            .unwrap();
        assert_eq!(
            b.create_partitions("t", 2, false, Deadline::standard())
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidPartitions
        );
        b.alter_topic_configs(
            "t",
            &[("retention.ms".into(), Some("1000".into()))],
            false,
            Deadline::standard(),
        )
        .await
        .unwrap();
        assert_eq!(
            b.alter_topic_configs(
                "t",
                &[("retention.ms".into(), Some("x".into()))],
                false,
                Deadline::standard()
            )
            .await
            .unwrap_err()
            .code,
            ErrorCode::InvalidConfig
        );
        let epoch = b.broker_epoch();
        assert!(epoch >= 0);
        let id = t.id;
        drop(t);
        drop(b);
        let b = broker(dir.path());
        // A single node keeps its registration across restarts.
        assert_eq!(b.broker_epoch(), epoch);
        let t = b.topic("t").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partitions.len(), 3);
        assert!(t.partitions.iter().all(|p| p.has_log() && p.is_leader()));
        assert_eq!(t.config.retention_ms, 1000);
        b.delete_topic("t", Deadline::standard()).await.unwrap();
        assert!(b.topic("t").is_none());
        let (_, _, t2) = b
            .create_topic("t", 1, 1, BTreeMap::new(), false, Deadline::standard())
            .await
            .unwrap();
        let t2 = t2.unwrap();
        assert_ne!(t2.id, id);
        assert_eq!(t2.partitions[0].offsets(), Some((0, 0)));
        // The old partition must not accept writes any more.
        assert!(t.partitions[0].offsets().is_none());
    }
}
