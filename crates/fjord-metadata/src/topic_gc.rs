//! Unused topics and their safe clean-up, in the spirit of LinkedIn's TopicGC. Pure: time
//! comes in as `now`, group facts come in from the brokers (the controller knows no groups).
//!
//! - [`TopicUsage`]: what the image knows of a topic's use — when it was created, last
//!   produced to, last fetched by a consumer ([`MetadataRecord::TopicActivity`], largest time
//!   kept) and whether GC marked it ([`MetadataRecord::TopicGcMark`]).
//! - [`Controller::topic_activity`]: brokers' coarse activity reports become records only for
//!   times that advanced; a marked topic used after its mark is unmarked in the same batch.
//! - [`plan`]: per topic, what GC does and why: **mark** an idle topic (phase 1), **delete** a
//!   topic marked at least `grace_ms` ago that is still idle (phase 2), **unmark** a marked
//!   topic that is in use again, **wait** for a mark's grace, or **skip** (internal, excluded
//!   by `topic.gc.exclude`, protected by a consumer group, in use, age unknown).
//! - [`Controller::topic_gc`]: the same plan on the active controller's image, carried out
//!   (records for marks, unmarks and deletions), so a broker's stale image never deletes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controller::{Controller, ControllerError, ControllerResult};
use crate::image::ClusterImage;
use crate::internal;
use crate::record::MetadataRecord;

/// What the image knows of one topic's use (all times in ms since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicUsage {
    /// When the topic was created; `None` for a topic created before activity tracking.
    pub created_ms: Option<i64>,
    /// The last accepted produce (as a broker sampled it, up to `topic.activity.flush.ms` late).
    pub last_produce_ms: Option<i64>,
    /// The last consumer fetch (replica fetches excluded), sampled the same way.
    pub last_fetch_ms: Option<i64>,
    /// When GC marked the topic for deletion (phase 1), if it is marked.
    pub marked_ms: Option<i64>,
}

impl TopicUsage {
    /// Merge a [`MetadataRecord::TopicActivity`]: the largest time of each kind wins; the
    /// creation time is set once.
    pub fn merge(&mut self, created: Option<i64>, produce: Option<i64>, fetch: Option<i64>) {
        if self.created_ms.is_none() {
            self.created_ms = created;
        }
        self.last_produce_ms = self.last_produce_ms.max(produce);
        self.last_fetch_ms = self.last_fetch_ms.max(fetch);
    }

    /// The last produce or consumer fetch.
    pub fn last_used_ms(&self) -> Option<i64> {
        self.last_produce_ms.max(self.last_fetch_ms)
    }

    /// Since when the topic has been idle: its last use, or its creation if never used.
    pub fn idle_since_ms(&self) -> Option<i64> {
        self.last_used_ms().or(self.created_ms)
    }

    /// How long the topic has been idle at `now`, if known.
    pub fn idle_ms(&self, now: i64) -> Option<i64> {
        self.idle_since_ms().map(|t| (now - t).max(0))
    }

    /// Whether the topic was used at or after its mark (so it must be unmarked).
    pub fn used_since_mark(&self) -> bool {
        matches!((self.marked_ms, self.last_used_ms()), (Some(m), Some(u)) if u >= m)
    }
}

/// One topic's activity as a broker saw it since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityUpdate {
    pub topic_id: Uuid,
    pub last_produce_ms: Option<i64>,
    pub last_fetch_ms: Option<i64>,
}

/// What one GC run considers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcParams {
    /// A topic is idle when neither produced to nor fetched by a consumer for this long.
    pub idle_ms: i64,
    /// A marked topic is deleted once marked this long and still idle (`topic.gc.grace.ms`).
    pub grace_ms: i64,
    /// Shell-style patterns of topics GC never touches (`topic.gc.exclude`).
    pub exclude: Vec<String>,
    /// `delete.topic.enable`: without it, GC marks but never deletes.
    pub delete_enabled: bool,
}

/// What GC does with one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GcAction {
    Delete,
    Mark,
    Unmark,
    /// Marked; deleted once the grace is over if still idle.
    Wait,
    Skip,
}

impl GcAction {
    pub fn name(self) -> &'static str {
        match self {
            GcAction::Delete => "delete",
            GcAction::Mark => "mark",
            GcAction::Unmark => "unmark",
            GcAction::Wait => "wait",
            GcAction::Skip => "skip",
        }
    }
}

/// One topic's decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcDecision {
    pub topic: String,
    pub topic_id: Uuid,
    pub action: GcAction,
    pub reason: String,
    #[serde(flatten)]
    pub usage: TopicUsage,
    /// How long the topic has been idle, when known.
    pub idle_ms: Option<i64>,
}

/// Topics consumer groups protect, with why (e.g. `group g: live members subscribed`).
/// Gathered by the brokers from their group coordinators.
pub type Protected = BTreeMap<String, String>;

/// Split `topic.gc.exclude` into patterns (comma-separated, blanks dropped).
pub fn split_patterns(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Compile exclusion patterns (`*`, `?`, `[abc]`), or say which one is invalid.
pub fn compile_patterns(patterns: &[String]) -> Result<Vec<glob::Pattern>, String> {
    patterns
        .iter()
        .map(|p| {
            glob::Pattern::new(p)
                .map_err(|e| format!("invalid topic.gc.exclude pattern {p:?}: {e}"))
        })
        .collect()
}

/// Topics GC never touches: internal ones and any whose name starts with `__`.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("__") || internal::is_internal(name)
}

/// A duration in ms as an operator reads it (`3d4h`, `90s`, `250ms`).
pub fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What GC would do with every topic of `image` at `now`, in topic-name order.
pub fn plan(
    image: &ClusterImage,
    now: i64,
    params: &GcParams,
    protected: &Protected,
) -> Result<Vec<GcDecision>, String> {
    let exclude = compile_patterns(&params.exclude)?;
    Ok(image
        .topics()
        .map(|t| {
            let usage = image.topic_usage(&t.id);
            let idle_ms = usage.idle_ms(now);
            let (action, reason) =
                decide(&t.name, &usage, idle_ms, now, params, &exclude, protected);
            GcDecision {
                topic: t.name.clone(),
                topic_id: t.id,
                action,
                reason,
                usage,
                idle_ms,
            }
        })
        .collect())
}

fn decide(
    name: &str,
    usage: &TopicUsage,
    idle_ms: Option<i64>,
    now: i64,
    params: &GcParams,
    exclude: &[glob::Pattern],
    protected: &Protected,
) -> (GcAction, String) {
    use GcAction::*;
    let marked = usage.marked_ms.is_some();
    // Lift a mark, or skip an unmarked topic, for `why`.
    let keep = |why: String| if marked { (Unmark, why) } else { (Skip, why) };
    if is_reserved(name) {
        return keep("internal topic (name starts with __)".into());
    }
    if let Some(p) = exclude.iter().find(|p| p.matches(name)) {
        return keep(format!("matches topic.gc.exclude pattern {:?}", p.as_str()));
    }
    if let Some(why) = protected.get(name) {
        return keep(why.clone());
    }
    if usage.used_since_mark() {
        return (Unmark, "used after it was marked".into());
    }
    let Some(idle) = idle_ms else {
        return (
            Skip,
            "age unknown: created before activity tracking (an executed GC run starts its clock)"
                .into(),
        );
    };
    if idle < params.idle_ms {
        let what = if usage.last_used_ms().is_some() {
            "used"
        } else {
            "created"
        };
        return keep(format!(
            "in use: {what} {} ago (idle threshold {})",
            human_ms(idle),
            human_ms(params.idle_ms)
        ));
    }
    match usage.marked_ms {
        None => (Mark, format!("idle for {}", human_ms(idle))),
        Some(m) if now - m < params.grace_ms => (
            Wait,
            format!(
                "marked {} ago; deleted after {} if still idle",
                human_ms(now - m),
                human_ms(params.grace_ms)
            ),
        ),
        Some(_) if !params.delete_enabled => (
            Skip,
            "grace over, but delete.topic.enable=false: not deleted".into(),
        ),
        Some(m) => (
            Delete,
            format!(
                "idle for {}, marked {} ago and unused since",
                human_ms(idle),
                human_ms(now - m)
            ),
        ),
    }
}

impl Controller {
    /// Brokers' activity reports: a record for each topic whose produce or fetch time
    /// advanced (unknown topics are ignored), and an unmark for each marked topic used at or
    /// after its mark. Answers the names of the topics unmarked.
    pub fn topic_activity(
        &mut self,
        updates: Vec<ActivityUpdate>,
    ) -> ControllerResult<Vec<String>> {
        let mut records = Vec::new();
        let mut unmarked = Vec::new();
        for u in updates {
            let Some(name) = self
                .image()
                .topic_by_id(&u.topic_id)
                .map(|t| t.name.clone())
            else {
                continue;
            };
            let before = self.image().topic_usage(&u.topic_id);
            let produce = u
                .last_produce_ms
                .filter(|t| Some(*t) > before.last_produce_ms);
            let fetch = u.last_fetch_ms.filter(|t| Some(*t) > before.last_fetch_ms);
            if produce.is_none() && fetch.is_none() {
                continue;
            }
            self.emit_record(
                &mut records,
                MetadataRecord::TopicActivity {
                    id: u.topic_id,
                    created_ms: None,
                    last_produce_ms: produce,
                    last_fetch_ms: fetch,
                },
            );
            if self.image().topic_usage(&u.topic_id).used_since_mark() {
                tracing::info!(topic = %name, marked_ms = ?before.marked_ms,
                    last_produce_ms = ?produce, last_fetch_ms = ?fetch,
                    "topic GC: marked topic used again; unmarked");
                self.emit_record(
                    &mut records,
                    MetadataRecord::TopicGcMark {
                        id: u.topic_id,
                        marked_ms: None,
                    },
                );
                unmarked.push(name);
            }
        }
        ControllerResult {
            records,
            response: unmarked,
        }
    }

    /// Run [`plan`] on this controller's image at `now` and carry it out with
    /// `execute`: mark, unmark, delete (as DeleteTopics would), and start the clock of topics
    /// whose age is unknown. Without `execute` nothing is written (a dry run).
    pub fn topic_gc(
        &mut self,
        params: &GcParams,
        protected: &Protected,
        execute: bool,
        now: i64,
    ) -> Result<ControllerResult<Vec<GcDecision>>, ControllerError> {
        let decisions =
            plan(self.image(), now, params, protected).map_err(ControllerError::InvalidConfig)?;
        let mut records = Vec::new();
        if execute {
            for d in &decisions {
                let (id, name) = (d.topic_id, d.topic.as_str());
                match d.action {
                    GcAction::Mark | GcAction::Unmark => {
                        let marked_ms = (d.action == GcAction::Mark).then_some(now);
                        tracing::info!(topic = name, action = d.action.name(), reason = %d.reason, "topic GC");
                        self.emit_record(
                            &mut records,
                            MetadataRecord::TopicGcMark { id, marked_ms },
                        );
                    }
                    GcAction::Delete => {
                        tracing::info!(topic = name, reason = %d.reason, "topic GC: deleting topic");
                        match self.delete_topic(name) {
                            Ok(r) => records.extend(r.records),
                            Err(e) => {
                                tracing::warn!(topic = name, error = %e, "topic GC: deletion refused")
                            }
                        }
                    }
                    GcAction::Skip if d.idle_ms.is_none() && !is_reserved(name) => {
                        self.emit_record(
                            &mut records,
                            MetadataRecord::TopicActivity {
                                id,
                                created_ms: Some(now),
                                last_produce_ms: None,
                                last_fetch_ms: None,
                            },
                        );
                    }
                    GcAction::Wait | GcAction::Skip => {}
                }
            }
        }
        Ok(ControllerResult {
            records,
            response: decisions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;

    fn params(idle_ms: i64, grace_ms: i64, exclude: &[&str]) -> GcParams {
        GcParams {
            idle_ms,
            grace_ms,
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            delete_enabled: true,
        }
    }

    /// A controller with topics created at `created` (ms); `__consumer_offsets` among them.
    fn controller(topics: &[&str], created: i64) -> Controller {
        let mut c = Controller::new(ControllerConfig::default());
        c.register_broker(
            crate::controller::BrokerRegistration {
                node_id: 1,
                incarnation_id: Uuid::new_v4(),
                rack: None,
                endpoints: vec![],
            },
            0,
        )
        .unwrap();
        let epoch = c.image().broker(1).unwrap().broker_epoch;
        c.heartbeat(
            crate::controller::BrokerHeartbeat {
                node_id: 1,
                broker_epoch: epoch,
                current_metadata_offset: i64::MAX,
                want_fence: false,
            },
            0,
        )
        .unwrap();
        for name in topics.iter().copied().chain(["__consumer_offsets"]) {
            c.handle(
                crate::ControllerRequest::CreateTopic {
                    name: name.into(),
                    topic_id: Uuid::new_v4(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: Default::default(),
                    validate_only: false,
                },
                created,
            )
            .unwrap();
        }
        c
    }

    fn id(c: &Controller, name: &str) -> Uuid {
        c.image().topic(name).unwrap().id
    }

    fn actions(d: &[GcDecision]) -> BTreeMap<String, GcAction> {
        d.iter().map(|d| (d.topic.clone(), d.action)).collect()
    }

    #[test]
    fn idle_topics_are_marked_then_deleted_after_grace_and_others_skipped() {
        let mut c = controller(
            &[
                "idle", "produced", "fetched", "keep-me", "__mine", "grouped",
            ],
            0,
        );
        let p = params(1_000, 500, &["keep-*"]);
        let now = 10_000;
        let updates = vec![
            ActivityUpdate {
                topic_id: id(&c, "produced"),
                last_produce_ms: Some(9_500),
                last_fetch_ms: None,
            },
            ActivityUpdate {
                topic_id: id(&c, "fetched"),
                last_produce_ms: None,
                last_fetch_ms: Some(9_800),
            },
        ];
        let r = c.topic_activity(updates.clone());
        assert_eq!(r.records.len(), 2);
        // The same report again writes nothing: times did not advance.
        assert!(c.topic_activity(updates).records.is_empty());
        let protected: Protected = [(
            "grouped".to_string(),
            "group g: live members subscribed".to_string(),
        )]
        .into();
        let dry = c.topic_gc(&p, &protected, false, now).unwrap();
        assert!(dry.records.is_empty(), "a dry run writes nothing");
        let a = actions(&dry.response);
        assert_eq!(a["idle"], GcAction::Mark);
        for skipped in [
            "produced",
            "fetched",
            "keep-me",
            "__mine",
            "__consumer_offsets",
            "grouped",
        ] {
            assert_eq!(a[skipped], GcAction::Skip, "{skipped}");
        }
        // Phase 1 marks; within the grace it waits; after it, deletes.
        let r = c.topic_gc(&p, &protected, true, now).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(c.image().topic_usage(&id(&c, "idle")).marked_ms, Some(now));
        let r = c.topic_gc(&p, &protected, true, now + 100).unwrap();
        assert_eq!(actions(&r.response)["idle"], GcAction::Wait);
        assert!(r.records.is_empty());
        let r = c.topic_gc(&p, &protected, true, now + 600).unwrap();
        assert_eq!(actions(&r.response)["idle"], GcAction::Delete);
        assert!(c.image().topic("idle").is_none());
        assert!(c.image().topic("__consumer_offsets").is_some());
    }

    #[test]
    fn a_topic_used_after_its_mark_is_unmarked_and_not_deleted() {
        let mut c = controller(&["t"], 0);
        let p = params(1_000, 500, &[]);
        c.topic_gc(&p, &Protected::new(), true, 5_000).unwrap();
        let t = id(&c, "t");
        assert_eq!(c.image().topic_usage(&t).marked_ms, Some(5_000));
        let r = c.topic_activity(vec![ActivityUpdate {
            topic_id: t,
            last_produce_ms: None,
            last_fetch_ms: Some(5_200),
        }]);
        assert_eq!(r.response, vec!["t".to_string()]);
        assert_eq!(c.image().topic_usage(&t).marked_ms, None);
        // Grace passed since the mark, but the topic was used: idle again from its fetch.
        let r = c.topic_gc(&p, &Protected::new(), true, 5_800).unwrap();
        assert_eq!(actions(&r.response)["t"], GcAction::Skip);
        assert!(c.image().topic("t").is_some());
    }

    #[test]
    fn marked_topics_protected_later_are_unmarked_and_deletion_can_be_disabled() {
        let mut c = controller(&["t", "u"], 0);
        let mut p = params(1_000, 0, &[]);
        c.topic_gc(&p, &Protected::new(), true, 5_000).unwrap();
        let protected: Protected = [("t".to_string(), "group g".to_string())].into();
        p.delete_enabled = false;
        let r = c.topic_gc(&p, &protected, true, 6_000).unwrap();
        let a = actions(&r.response);
        assert_eq!(a["t"], GcAction::Unmark);
        assert_eq!(a["u"], GcAction::Skip);
        assert!(c.image().topic("u").is_some());
        assert_eq!(c.image().topic_usage(&id(&c, "t")).marked_ms, None);
    }

    #[test]
    fn usage_survives_snapshots_and_unknown_ages_start_counting() {
        let mut c = controller(&["t"], 0);
        let t = id(&c, "t");
        c.topic_activity(vec![ActivityUpdate {
            topic_id: t,
            last_produce_ms: Some(7),
            last_fetch_ms: Some(9),
        }]);
        c.topic_gc(&params(1, 1_000, &[]), &Protected::new(), true, 100)
            .unwrap();
        let img = c.image().clone();
        let again = ClusterImage::from_records(&img.to_records());
        assert_eq!(again.topic_usage(&t), img.topic_usage(&t));
        assert_eq!(
            again.topic_usage(&t),
            TopicUsage {
                created_ms: Some(0),
                last_produce_ms: Some(7),
                last_fetch_ms: Some(9),
                marked_ms: Some(100),
            }
        );
        // A topic record written before tracking: age unknown, then the clock starts.
        let mut img = ClusterImage::default();
        let u = Uuid::new_v4();
        img.apply(&MetadataRecord::Topic {
            name: "old".into(),
            id: u,
            partitions: 1,
            configs: Default::default(),
        });
        let d = plan(&img, 50, &params(1, 1, &[]), &Protected::new()).unwrap();
        assert_eq!(d[0].action, GcAction::Skip);
        assert!(d[0].reason.contains("age unknown"), "{}", d[0].reason);
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern() {
        let e = compile_patterns(&split_patterns("ok-*, [bad")).unwrap_err();
        assert!(e.contains("[bad"), "{e}");
        assert_eq!(split_patterns(" a , ,b*"), vec!["a", "b*"]);
        assert_eq!(human_ms(90_000), "90s");
        assert_eq!(human_ms(3 * 86_400_000 + 3_600_000), "3d1h");
    }
}
