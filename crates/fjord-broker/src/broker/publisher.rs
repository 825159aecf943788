//! The metadata publisher: [`Broker::publish`] applies committed metadata records (or a whole
//! image) to the broker's image and then to the topics hosted here — the only place topics
//! change — logging and counting leader, ISR, fencing and reassignment changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use fjord_metadata::{ClusterImage, MetadataRecord, PartitionState, TopicImage};
use fjord_protocol::clock::now_ms;
use fjord_replication::Transition;
use fjord_storage::config::ThrottledReplicas;
use fjord_storage::LogConfig;
use uuid::Uuid;

use super::log_manager::open_logs;
use super::{partition_dir, Broker, Topic};
use crate::partition::{Partition, ReplicaState};
use crate::throttle::ReplicaThrottle;

/// A batch of metadata to publish to the broker's topics.
pub enum Publish<'a> {
    /// Records that follow what was applied before.
    Records(&'a [MetadataRecord]),
    /// A whole image (startup, or a broker too far behind the log): replaces the old one.
    Image(Box<ClusterImage>),
}

/// How many more partition changes of one batch are logged one by one.
struct ChangeLog {
    left: usize,
    suppressed: usize,
}

/// What the broker does for one topic after a metadata change.
struct TopicPlan {
    image: TopicImage,
    states: Vec<Option<PartitionState>>,
}

impl Broker {
    /// Apply a batch of committed metadata: update the image, then the topics hosted here
    /// (open logs of new local replicas, take new leaders and epochs, configs, deletions).
    /// `next_offset` is the metadata offset after the batch. The only place topics change.
    pub fn publish(&self, batch: Publish<'_>, next_offset: i64) {
        let _one_at_a_time = self.publishing.lock();
        let whole_image = matches!(batch, Publish::Image(_));
        let mut rates_changed = whole_image;
        let mut quotas_changed = whole_image;
        let mut touched: BTreeSet<Uuid> = BTreeSet::new();
        let mut removed: Vec<Uuid> = Vec::new();
        // A whole image, or a broker registration (its rack may be new), changes the racks of
        // every topic for the group assignors.
        let mut all_racks = false;
        {
            let mut image = self.image.write();
            match batch {
                Publish::Records(records) => {
                    for r in records {
                        let reassigning_before = reassignment_before(&image, r);
                        crate::maintenance::observe(&self.metrics.maintenance, &image, r);
                        image.apply(r);
                        if let Some(before) = reassigning_before {
                            self.count_reassignment(&image, r, before);
                        }
                        match r {
                            MetadataRecord::Topic { id, .. }
                            | MetadataRecord::PartitionCount { id, .. }
                            | MetadataRecord::TopicConfig { id, .. } => {
                                touched.insert(*id);
                            }
                            MetadataRecord::Partition { topic_id, .. }
                            | MetadataRecord::PartitionChange { topic_id, .. } => {
                                touched.insert(*topic_id);
                            }
                            MetadataRecord::RemoveTopic { id } => {
                                touched.remove(id);
                                removed.push(*id);
                            }
                            MetadataRecord::BrokerConfig { .. } => rates_changed = true,
                            MetadataRecord::ClientQuota { entity, key, value } => {
                                quotas_changed = true;
                                match value {
                                    Some(v) => {
                                        tracing::info!(%entity, key, value = v.0, "client quota set")
                                    }
                                    None => tracing::info!(%entity, key, "client quota removed"),
                                }
                            }
                            MetadataRecord::FenceBroker {
                                node_id,
                                broker_epoch,
                            } => {
                                tracing::warn!(
                                    node_id,
                                    broker_epoch,
                                    "broker fenced: it leads no partitions until it is unfenced"
                                );
                                self.metrics
                                    .broker_fencing
                                    .with_label_values(&["fence"])
                                    .inc();
                            }
                            MetadataRecord::UnfenceBroker {
                                node_id,
                                broker_epoch,
                            } => {
                                tracing::info!(node_id, broker_epoch, "broker unfenced");
                                self.metrics
                                    .broker_fencing
                                    .with_label_values(&["unfence"])
                                    .inc();
                            }
                            MetadataRecord::RegisterBroker {
                                node_id,
                                broker_epoch,
                                rack,
                                ..
                            } => {
                                all_racks = true;
                                tracing::info!(
                                    node_id,
                                    broker_epoch,
                                    rack = rack.as_deref().unwrap_or("-"),
                                    "broker registered"
                                );
                            }
                            _ => {}
                        }
                    }
                }
                Publish::Image(new) => {
                    removed = image
                        .topics()
                        .filter(|t| new.topic_by_id(&t.id).is_none())
                        .map(|t| t.id)
                        .collect();
                    touched = new.topics().map(|t| t.id).collect();
                    *image = *new;
                    all_racks = true;
                }
            }
            self.groups
                .update_topics(&image, &touched, &removed, all_racks);
            self.metrics
                .reassignments_in_progress
                .set(image.reassigning_count() as i64);
            if rates_changed {
                self.apply_throttle_rates(&image);
            }
            if quotas_changed {
                self.quotas.update(image.client_quotas());
            }
        }
        for id in removed {
            if let Some(t) = self.topic_by_id(&id) {
                self.remove_local(&t);
            }
        }
        // A topic replaced by another of the same name (snapshot) goes first.
        let plans: Vec<TopicPlan> = {
            let image = self.image.read();
            touched
                .iter()
                .filter_map(|id| {
                    let t = image.topic_by_id(id)?;
                    let states = (0..t.partitions)
                        .map(|p| image.partition(id, p).cloned())
                        .collect();
                    Some(TopicPlan {
                        image: t.clone(),
                        states,
                    })
                })
                .collect()
        };
        for plan in &plans {
            if let Some(old) = self.topic(&plan.image.name) {
                if old.id != plan.image.id {
                    self.remove_local(&old);
                }
            }
        }
        self.reconcile(plans);
        self.metrics.metadata_offset.set(next_offset);
        self.applied.send_replace(next_offset);
    }

    /// Bring the topics of `plans` in line with the image: open the logs of replicas that now
    /// live here, give every partition its new assignment (after its log is in place, so a new
    /// leader starts from its real log end) and start or stop following, then install the
    /// topics (so new partitions appear only when they can be served).
    fn reconcile(&self, plans: Vec<TopicPlan>) {
        let me = self.node_id();
        let now = now_ms();
        // The config is shared by a topic's partitions until each log takes its copy.
        let mut to_open: Vec<(Arc<Partition>, Arc<LogConfig>)> = Vec::new();
        let mut assignments: Vec<(Arc<Partition>, ReplicaState, Arc<str>)> = Vec::new();
        let mut to_install: Vec<Arc<Topic>> = Vec::with_capacity(plans.len());
        for plan in plans {
            let t = &plan.image;
            let existing = self.topic_by_id(&t.id);
            let config = LogConfig::from_overrides(&self.config.log, &t.configs).unwrap_or_else(|e| {
                tracing::warn!(topic = %t.name, error = %e, "invalid topic config in metadata; using broker defaults");
                self.config.log.clone()
            });
            let config_changed = existing
                .as_ref()
                .is_some_and(|old| old.overrides != t.configs);
            let shared_config = Arc::new(config.clone());
            assignments.reserve(plan.states.len());
            let name: Arc<str> = existing
                .as_ref()
                .map_or_else(|| Arc::from(t.name.as_str()), |old| old.name.clone());
            let throttled_list = |key: &str| {
                t.configs
                    .get(key)
                    .and_then(|v| ThrottledReplicas::parse(v).ok())
                    .unwrap_or_default()
            };
            let leader_list = throttled_list("leader.replication.throttled.replicas");
            let follower_list = throttled_list("follower.replication.throttled.replicas");
            let partitions: Vec<Arc<Partition>> = plan
                .states
                .iter()
                .enumerate()
                .map(|(i, state)| {
                    let throttle = state.as_ref().map_or_else(Default::default, |s| {
                        ReplicaThrottle::of(
                            i as u32,
                            me,
                            &s.adding_replicas,
                            &leader_list,
                            &follower_list,
                        )
                    });
                    let state =
                        state
                            .as_ref()
                            .map_or_else(ReplicaState::unknown, |s| ReplicaState {
                                replicas: s.replicas.clone(),
                                isr: s.isr.clone(),
                                leader: s.leader,
                                leader_epoch: s.leader_epoch,
                                partition_epoch: s.partition_epoch,
                            });
                    let p = match existing.as_ref().and_then(|old| old.partitions.get(i)) {
                        Some(p) => {
                            if config_changed {
                                p.update_config(config.clone());
                            }
                            p.clone()
                        }
                        None => Arc::new(Partition::new(name.clone(), t.id, i as i32, me)),
                    };
                    if state.replicas.contains(&me) && !p.has_log() {
                        to_open.push((p.clone(), shared_config.clone()));
                    }
                    p.set_throttle(throttle);
                    assignments.push((p.clone(), state, name.clone()));
                    p
                })
                .collect();
            to_install.push(Arc::new(Topic {
                name,
                id: t.id,
                partitions,
                config,
                overrides: t.configs.clone(),
            }));
        }
        // Logs, then assignments, then the topics: a new partition becomes visible (Metadata)
        // only with its log open and its leader and replicas set — never as a leaderless
        // partition with no replicas while thousands of logs are being opened. Followers and
        // the group coordinator hold the partition itself, so they need not wait for it.
        let count = open_logs(&self.config.log_dir, &to_open, &self.metrics);
        drop(to_open);
        self.metrics.partitions.add(count as i64);
        // One line per change, but a fenced broker moves thousands of partitions in one batch:
        // past this many, changes are counted and summed up in one line.
        let mut log_budget = ChangeLog {
            left: 100,
            suppressed: 0,
        };
        for (p, state, name) in assignments {
            if &*name == crate::groups::OFFSETS_TOPIC {
                self.groups
                    .leadership_changing(self, &p, state.leader == me);
            }
            let (old, transition) = p.set_state(state.clone(), now);
            self.report_change(&name, p.index as usize, &old, &state, &mut log_budget);
            match transition {
                Transition::BecameFollower { leader } => {
                    if p.has_log() {
                        self.fetchers.follow(&p, leader, state.leader_epoch);
                    }
                }
                Transition::BecameLeader | Transition::Stopped => self.fetchers.stop(&p),
                Transition::Unchanged => {}
            }
            if !state.replicas.is_empty() && !state.replicas.contains(&me) && p.has_log() {
                // A reassignment moved the replica away: its log goes.
                self.fetchers.stop(&p);
                self.delete_replica(&p, &state);
            }
        }
        for topic in to_install {
            self.install(topic);
        }
        if log_budget.suppressed > 0 {
            tracing::warn!(
                more = log_budget.suppressed,
                "more partition leader and ISR changes in this metadata batch (counted in metrics, not logged one by one)"
            );
        }
    }

    /// Count the reassignment step `record` made (the partition was `before` it): a new target
    /// (`started`), or the end of one (`completed` when the replicas are the target it had,
    /// else `cancelled`). The active controller logs each step; every broker counts them.
    fn count_reassignment(&self, image: &ClusterImage, record: &MetadataRecord, before: Before) {
        let MetadataRecord::PartitionChange {
            topic_id,
            partition,
            ..
        } = record
        else {
            return;
        };
        let Some(after) = image.partition(topic_id, *partition) else {
            return;
        };
        let results: &[&str] = match (before.reassigning, after.is_reassigning()) {
            (_, true) if !before.reassigning || after.target_replicas() != before.target => {
                &["started"]
            }
            (true, false) if after.replicas == before.target => &["completed"],
            (true, false) => &["cancelled"],
            // Only reassignments change the replicas: one already in sync (a reorder or only
            // removals) starts and completes in one record.
            (false, false) if after.replicas != before.target => &["started", "completed"],
            _ => return,
        };
        for result in results {
            self.metrics
                .reassignments
                .with_label_values(&[result])
                .inc();
        }
    }

    /// Take this broker's replication throttle rates from the image (its own dynamic config,
    /// else the cluster default; unset is unlimited), logging a change.
    fn apply_throttle_rates(&self, image: &ClusterImage) {
        let me = self.node_id();
        let now = now_ms();
        for (key, bucket) in [
            (
                "leader.replication.throttled.rate",
                &self.replication_quotas.leader,
            ),
            (
                "follower.replication.throttled.rate",
                &self.replication_quotas.follower,
            ),
        ] {
            let rate = image
                .broker_config(me, key)
                .and_then(|v| v.trim().parse::<u64>().ok());
            let mut b = bucket.lock();
            let before = b.rate();
            b.set_rate(rate, now);
            if b.rate() != before {
                tracing::info!(
                    key,
                    bytes_per_second = ?b.rate(),
                    "replication throttle rate changed (None: unlimited)"
                );
            }
        }
    }

    /// Log and count what an operator cares about in a partition's new state: leader changes
    /// (INFO) and ISR shrinks and expands (WARN, with the replicas that left or joined).
    fn report_change(
        &self,
        topic: &str,
        partition: usize,
        old: &ReplicaState,
        new: &ReplicaState,
        budget: &mut ChangeLog,
    ) {
        if old.replicas.is_empty() {
            return; // first state seen here: not a change
        }
        if old.leader == new.leader && old.isr == new.isr {
            return;
        }
        if new.leader != old.leader && new.leader >= 0 && !old.isr.contains(&new.leader) {
            // Never budget-suppressed: every one may have lost acknowledged records.
            self.metrics.unclean_elections.inc();
            tracing::warn!(topic, partition, leader = new.leader, previous_isr = ?old.isr,
                leader_epoch = new.leader_epoch,
                "unclean leader election applied: the new leader was not in the ISR");
        }
        if budget.left == 0 {
            budget.suppressed += 1;
            let shrink = old.isr.iter().any(|r| !new.isr.contains(r));
            let expand = new.isr.iter().any(|r| !old.isr.contains(r));
            if old.leader != new.leader {
                self.metrics.leader_changes.inc();
            }
            if shrink {
                self.metrics
                    .isr_changes
                    .with_label_values(&["shrink"])
                    .inc();
            }
            if expand {
                self.metrics
                    .isr_changes
                    .with_label_values(&["expand"])
                    .inc();
            }
            return;
        }
        budget.left -= 1;
        if old.leader != new.leader {
            tracing::info!(
                topic,
                partition,
                leader = new.leader,
                previous = old.leader,
                leader_epoch = new.leader_epoch,
                "partition leader changed"
            );
            self.metrics.leader_changes.inc();
        }
        let left: Vec<i32> = old
            .isr
            .iter()
            .filter(|r| !new.isr.contains(r))
            .copied()
            .collect();
        let joined: Vec<i32> = new
            .isr
            .iter()
            .filter(|r| !old.isr.contains(r))
            .copied()
            .collect();
        if !left.is_empty() {
            tracing::warn!(topic, partition, removed = ?left, isr = ?new.isr, leader = new.leader,
                "ISR shrink");
            self.metrics
                .isr_changes
                .with_label_values(&["shrink"])
                .inc();
        }
        if !joined.is_empty() {
            tracing::warn!(topic, partition, added = ?joined, isr = ?new.isr, leader = new.leader,
                "ISR expand");
            self.metrics
                .isr_changes
                .with_label_values(&["expand"])
                .inc();
        }
    }

    /// Take a deleted topic out of the map and remove its local directories.
    fn remove_local(&self, topic: &Arc<Topic>) {
        {
            let mut t = self.topics.write();
            if t.by_id
                .get(&topic.id)
                .is_some_and(|x| Arc::ptr_eq(x, topic))
            {
                t.by_id.remove(&topic.id);
            }
            if t.by_name
                .get(&*topic.name)
                .is_some_and(|x| Arc::ptr_eq(x, topic))
            {
                t.by_name.remove(&*topic.name);
            }
        }
        let mut doomed = Vec::new();
        let mut hosted = 0;
        for p in &topic.partitions {
            self.fetchers.stop(p);
            if p.take_log().is_none() {
                continue;
            }
            hosted += 1;
            let from = partition_dir(&self.config.log_dir, &topic.name, p.index);
            let to = self.config.log_dir.join(format!(
                "{}-{}.{}-delete",
                topic.name,
                p.index,
                topic.id.simple()
            ));
            match std::fs::rename(&from, &to) {
                Ok(()) => doomed.push(to),
                Err(e) => {
                    tracing::warn!(dir = %from.display(), error = %e, "cannot move deleted partition aside")
                }
            }
        }
        self.metrics.partitions.sub(hosted);
        if !doomed.is_empty() {
            std::thread::spawn(move || {
                for d in doomed {
                    if let Err(e) = std::fs::remove_dir_all(&d) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot remove deleted partition");
                    }
                }
            });
        }
        tracing::info!(topic = %topic.name, id = %topic.id, "topic deleted");
    }

    fn install(&self, topic: Arc<Topic>) {
        let mut t = self.topics.write();
        t.by_id.insert(topic.id, topic.clone());
        t.by_name.insert(topic.name.to_string(), topic);
    }
}

/// A partition's reassignment state before a record that may change it.
struct Before {
    reassigning: bool,
    target: Vec<i32>,
}

/// The reassignment state of the partition `record` changes, if it touches its replicas or
/// its adding or removing replicas.
fn reassignment_before(image: &ClusterImage, record: &MetadataRecord) -> Option<Before> {
    match record {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            replicas,
            adding_replicas,
            removing_replicas,
            ..
        } if replicas.is_some() || adding_replicas.is_some() || removing_replicas.is_some() => {
            image.partition(topic_id, *partition).map(|s| Before {
                reassigning: s.is_reassigning(),
                target: s.target_replicas(),
            })
        }
        _ => None,
    }
}
