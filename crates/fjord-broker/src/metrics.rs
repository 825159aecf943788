//! Prometheus metrics, served on the admin port at `/metrics`.

use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the broker exports.
pub struct Metrics {
    pub registry: Registry,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub messages_in: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_latency: HistogramVec,
    pub connections: IntGauge,
    pub connections_closed_bad_frame: IntCounter,
    /// Connections closed right after accept, by `reason` (`max_connections_per_ip`).
    pub connections_rejected: IntCounterVec,
    /// Connections the broker closed, by `reason`: `idle` (nothing for
    /// `connections.max.idle.ms`), `incomplete_request` (a request begun but not finished in
    /// that time: slowloris).
    pub connections_closed: IntCounterVec,
    /// Seconds the acceptor did not accept because the broker held `max.connections`
    /// (Kafka's AcceptorBlockedPercent).
    pub acceptor_blocked_seconds: Counter,
    /// Request memory reserved from the `queued.max.request.bytes` pool (Kafka's
    /// MemoryPoolUsed / MemoryPoolAvailable).
    pub memory_pool_used: IntGauge,
    pub memory_pool_available: IntGauge,
    /// Seconds connections waited for request memory (Kafka's MemoryPoolDepletedTimeTotal).
    pub memory_pool_depleted_seconds: Counter,
    pub partitions: IntGauge,
    pub log_size: IntGaugeVec,
    /// Group rebalances started, by group type (classic, consumer).
    pub group_rebalances: IntCounterVec,
    /// Members of all groups on this coordinator.
    pub group_members: IntGauge,
    /// Groups on this coordinator.
    pub groups: IntGauge,
    /// Leader changes of partitions this broker knows, seen in the metadata log.
    pub leader_changes: IntCounter,
    /// The next metadata offset this broker will apply (records applied).
    pub metadata_offset: IntGauge,
    /// This broker's epoch (KIP-380), -1 before registration.
    pub broker_epoch: IntGauge,
    /// 1 while the controller says this broker is fenced.
    pub broker_fenced: IntGauge,
    /// Registrations of this broker with the controller (each gives a new epoch).
    pub broker_registrations: IntCounter,
    /// Fence and unfence records seen in the metadata log, by `change` (fence, unfence).
    pub broker_fencing: IntCounterVec,
    /// ISR changes of partitions seen in the metadata log, by `change` (shrink, expand).
    pub isr_changes: IntCounterVec,
    /// 1 while this node is the active controller.
    pub controller_active: IntGauge,
    /// Partitions led here whose ISR is smaller than their replica set.
    pub under_replicated: IntGauge,
    /// Partitions led here whose ISR is below `min.insync.replicas` (acks=all fails).
    pub under_min_isr: IntGauge,
    /// Partitions without a leader, in this broker's view of the cluster.
    pub offline: IntGauge,
    /// Record bytes served to consumers, by the `role` this broker has for the partition
    /// (`leader`, or `follower` for KIP-392 follower fetching).
    pub consumer_fetch_bytes: IntCounterVec,
    /// Record bytes this broker fetched from leaders as a follower.
    pub replica_fetch_bytes: IntCounter,
    /// Fetch record bytes (consumers and followers) sent from segment files with `sendfile`,
    /// never copied through user space.
    pub fetch_zero_copy_bytes: IntCounter,
    /// Fetch record bytes not in the page cache, read on a blocking thread rather than sent
    /// or read from the disk on an async worker.
    pub fetch_cold_read_bytes: IntCounter,
    /// Offsets removed by follower truncation (divergent records).
    pub truncated_offsets: IntCounter,
    /// Consumer fetches answered with a preferred read replica (KIP-392).
    pub preferred_replica_redirects: IntCounter,
    /// ISR changes this broker proposed as leader, by `change` (shrink, expand) and `outcome`.
    pub isr_proposals: IntCounterVec,
    /// acks=all produces that timed out waiting for the ISR.
    pub acks_all_timeouts: IntCounter,
    /// Changes sent to the controller (forwarded admin requests and the broker's own) that
    /// ended in a retriable error instead of a result, by `request` and `error`
    /// (`REQUEST_TIMED_OUT`: not decided and applied here by the request's deadline;
    /// `NOT_CONTROLLER`; `KAFKA_STORAGE_ERROR` on a single node).
    pub controller_requests_failed: IntCounterVec,
    /// Leader elections of a replica that was not in the ISR, seen in the metadata log.
    pub unclean_elections: IntCounter,
    /// Unreadable data found when reading back from disk and skipped, by `source`:
    /// `checkpoint` (partition checkpoint files and producer snapshots, deleted),
    /// `segment` (segments deleted after a corrupt batch), `consumer_offsets` (batches or
    /// records of `__consumer_offsets` skipped by group replay), `metadata` (Raft log entries,
    /// state file or snapshot of the metadata quorum).
    pub corrupt_data_skipped: IntCounterVec,
    /// Bytes cut from partition segments by recovery at a corrupt or torn batch.
    pub recovery_truncated_bytes: IntCounter,
    /// Log compaction passes, by `result`: `completed` (installed), `stale` (abandoned because
    /// the log was truncated or changed while the pass was built without the lock).
    pub log_compaction_passes: IntCounterVec,
    /// Partitions with a reassignment (KIP-455) in progress, in this broker's view.
    pub reassignments_in_progress: IntGauge,
    /// Reassignments seen in the metadata log, by `result`: `started` (a new target, also one
    /// replacing a target in progress), `completed`, `cancelled`.
    pub reassignments: IntCounterVec,
    /// Partition logs deleted here because this broker no longer hosts a replica of them
    /// (moved away by a reassignment, also found at startup).
    pub replicas_deleted: IntCounter,
    /// Reassignment bytes under a replication throttle, by `side`: `leader` (served to
    /// followers being added), `follower` (fetched as one).
    pub replication_throttled_bytes: IntCounterVec,
    /// Fetches in which throttled partitions were left out because the rate was spent, by
    /// `side`.
    pub replication_throttled_fetches: IntCounterVec,
    /// Maintenance mode: brokers in maintenance, drains, changes seen.
    pub maintenance: crate::maintenance::MaintenanceMetrics,
    /// The continuous balancer: rounds, moves, imbalance.
    pub balancer: crate::balancer::BalancerMetrics,
    /// Incremental fetch sessions (KIP-227), both sides, and follower fencing (KIP-903).
    pub fetch_sessions: FetchSessionMetrics,
    /// SASL authentications and unauthenticated connections closed (`crate::sasl`).
    pub sasl: crate::sasl::SaslMetrics,
    /// TLS handshakes and certificate reloads (`crate::tls`).
    pub tls: crate::tls::TlsMetrics,
    /// Authorization decisions (`crate::authz`).
    pub authz: crate::authz::AuthzMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("fjord".into()), None).expect("valid prefix");
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "bytes_in_total",
                "Record bytes appended by produce requests",
            ),
            &["topic"],
        )
        .expect("metric");
        let bytes_out = IntCounterVec::new(
            Opts::new("bytes_out_total", "Record bytes returned by fetch requests"),
            &["topic"],
        )
        .expect("metric");
        let messages_in = IntCounterVec::new(
            Opts::new("messages_in_total", "Records appended by produce requests"),
            &["topic"],
        )
        .expect("metric");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests handled, by API"),
            &["api"],
        )
        .expect("metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "request_errors_total",
                "Error codes returned in responses, by API and error",
            ),
            &["api", "error"],
        )
        .expect("metric");
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "request_latency_seconds",
                "Time from a request being read to its response being queued, by API",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["api"],
        )
        .expect("metric");
        let connections = IntGauge::new("connections", "Open client connections").expect("metric");
        let connections_closed_bad_frame = IntCounter::new(
            "connections_closed_bad_request_total",
            "Connections closed because a frame or request could not be decoded",
        )
        .expect("metric");
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "connections_rejected_total",
                "Connections closed right after accept because of a connection limit, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        connections_rejected.with_label_values(&["max_connections_per_ip"]);
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "Connections closed by the broker for idleness (idle) or for a request not completed within connections.max.idle.ms (incomplete_request)",
            ),
            &["reason"],
        )
        .expect("metric");
        for reason in ["idle", "incomplete_request"] {
            connections_closed.with_label_values(&[reason]);
        }
        let acceptor_blocked_seconds = Counter::new(
            "acceptor_blocked_seconds_total",
            "Time the listener did not accept connections because max.connections were open",
        )
        .expect("metric");
        let memory_pool_used = IntGauge::new(
            "memory_pool_used_bytes",
            "Bytes reserved by requests read but not yet handled (queued.max.request.bytes pool)",
        )
        .expect("metric");
        let memory_pool_available = IntGauge::new(
            "memory_pool_available_bytes",
            "Bytes left in the queued.max.request.bytes pool",
        )
        .expect("metric");
        let memory_pool_depleted_seconds = Counter::new(
            "memory_pool_depleted_seconds_total",
            "Time connections waited for request memory (reading paused)",
        )
        .expect("metric");
        let partitions =
            IntGauge::new("partitions", "Partitions hosted on this broker").expect("metric");
        let log_size = IntGaugeVec::new(
            Opts::new("log_size_bytes", "Size of all partition logs of a topic"),
            &["topic"],
        )
        .expect("metric");
        let group_rebalances = IntCounterVec::new(
            Opts::new(
                "group_rebalances_total",
                "Group rebalances (classic) and group epoch bumps (consumer)",
            ),
            &["type"],
        )
        .expect("metric");
        let group_members =
            IntGauge::new("group_members", "Members of all consumer groups").expect("metric");
        let groups =
            IntGauge::new("groups", "Consumer groups on this coordinator").expect("metric");
        let leader_changes = IntCounter::new(
            "partition_leader_changes_total",
            "Partition leader changes applied from the metadata log",
        )
        .expect("metric");
        let metadata_offset = IntGauge::new(
            "metadata_applied_offset",
            "Metadata records applied by this broker",
        )
        .expect("metric");
        let broker_epoch =
            IntGauge::new("broker_epoch", "This broker's epoch (KIP-380)").expect("metric");
        let broker_fenced = IntGauge::new(
            "broker_fenced",
            "1 while the controller reports this broker as fenced",
        )
        .expect("metric");
        let broker_registrations = IntCounter::new(
            "broker_registrations_total",
            "Registrations of this broker with the controller",
        )
        .expect("metric");
        let broker_fencing = IntCounterVec::new(
            Opts::new(
                "cluster_broker_fencing_total",
                "Brokers fenced or unfenced, as seen in the metadata log",
            ),
            &["change"],
        )
        .expect("metric");
        let isr_changes = IntCounterVec::new(
            Opts::new(
                "isr_changes_total",
                "Partition ISR shrinks and expands, as seen in the metadata log",
            ),
            &["change"],
        )
        .expect("metric");
        let controller_active = IntGauge::new(
            "controller_active",
            "1 while this node is the active controller",
        )
        .expect("metric");
        let under_replicated = IntGauge::new(
            "under_replicated_partitions",
            "Partitions led by this broker with fewer in-sync replicas than replicas",
        )
        .expect("metric");
        let under_min_isr = IntGauge::new(
            "under_min_isr_partitions",
            "Partitions led by this broker whose ISR is below min.insync.replicas",
        )
        .expect("metric");
        let offline = IntGauge::new(
            "offline_partitions",
            "Partitions without a leader in this broker's view of the cluster",
        )
        .expect("metric");
        let consumer_fetch_bytes = IntCounterVec::new(
            Opts::new(
                "consumer_fetch_bytes_total",
                "Record bytes served to consumers, by this broker's role for the partition",
            ),
            &["role"],
        )
        .expect("metric");
        let replica_fetch_bytes = IntCounter::new(
            "replica_fetch_bytes_total",
            "Record bytes fetched from leaders by this broker as a follower",
        )
        .expect("metric");
        let fetch_zero_copy_bytes = IntCounter::new(
            "fetch_zero_copy_bytes_total",
            "Fetch record bytes sent from segment files with sendfile (no copy in user space)",
        )
        .expect("metric");
        let fetch_cold_read_bytes = IntCounter::new(
            "fetch_cold_read_bytes_total",
            "Fetch record bytes not in the page cache, read on a blocking thread (not on an async worker)",
        )
        .expect("metric");
        let truncated_offsets = IntCounter::new(
            "log_truncated_offsets_total",
            "Offsets removed from follower logs by truncation to the leader's epoch end",
        )
        .expect("metric");
        let preferred_replica_redirects = IntCounter::new(
            "preferred_read_replica_redirects_total",
            "Consumer fetches answered with a preferred read replica in the client's rack",
        )
        .expect("metric");
        let isr_proposals = IntCounterVec::new(
            Opts::new(
                "isr_proposals_total",
                "ISR changes proposed by this broker as leader (AlterPartition)",
            ),
            &["change", "outcome"],
        )
        .expect("metric");
        let acks_all_timeouts = IntCounter::new(
            "produce_acks_all_timeouts_total",
            "acks=all produces that timed out waiting for the in-sync replicas",
        )
        .expect("metric");
        let controller_requests_failed = IntCounterVec::new(
            Opts::new(
                "controller_requests_failed_total",
                "Changes sent to the controller answered with a retriable error instead of a result (the request's deadline passed, no active controller), by request and error",
            ),
            &["request", "error"],
        )
        .expect("metric");
        let unclean_elections = IntCounter::new(
            "unclean_leader_elections_total",
            "Partition leaders elected from outside the ISR, as seen in the metadata log",
        )
        .expect("metric");
        let corrupt_data_skipped = IntCounterVec::new(
            Opts::new(
                "corrupt_data_skipped_total",
                "Unreadable data read back from disk and skipped (checkpoint files, segments after a corrupt batch, __consumer_offsets batches and records)",
            ),
            &["source"],
        )
        .expect("metric");
        let recovery_truncated_bytes = IntCounter::new(
            "log_recovery_truncated_bytes_total",
            "Bytes cut from partition segments by recovery at a corrupt or torn batch",
        )
        .expect("metric");
        let log_compaction_passes = IntCounterVec::new(
            Opts::new(
                "log_compaction_passes_total",
                "Log compaction passes: completed, or stale (abandoned: the log changed while the pass was built)",
            ),
            &["result"],
        )
        .expect("metric");
        let reassignments_in_progress = IntGauge::new(
            "reassignments_in_progress",
            "Partitions with a reassignment in progress (adding or removing replicas)",
        )
        .expect("metric");
        let reassignments = IntCounterVec::new(
            Opts::new(
                "reassignments_total",
                "Partition reassignments seen in the metadata log, by result (started, completed, cancelled)",
            ),
            &["result"],
        )
        .expect("metric");
        let replicas_deleted = IntCounter::new(
            "replicas_deleted_total",
            "Partition logs deleted because this broker no longer hosts a replica of the partition",
        )
        .expect("metric");
        let replication_throttled_bytes = IntCounterVec::new(
            Opts::new(
                "replication_throttled_bytes_total",
                "Reassignment bytes under a replication throttle, by side (leader, follower)",
            ),
            &["side"],
        )
        .expect("metric");
        let replication_throttled_fetches = IntCounterVec::new(
            Opts::new(
                "replication_throttled_fetches_total",
                "Fetches that left throttled reassignment partitions out (rate spent), by side",
            ),
            &["side"],
        )
        .expect("metric");
        for m in [
            Box::new(leader_changes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(replication_throttled_bytes.clone()),
            Box::new(replication_throttled_fetches.clone()),
            Box::new(reassignments_in_progress.clone()),
            Box::new(reassignments.clone()),
            Box::new(replicas_deleted.clone()),
            Box::new(corrupt_data_skipped.clone()),
            Box::new(recovery_truncated_bytes.clone()),
            Box::new(log_compaction_passes.clone()),
            Box::new(unclean_elections.clone()),
            Box::new(under_replicated.clone()),
            Box::new(under_min_isr.clone()),
            Box::new(offline.clone()),
            Box::new(consumer_fetch_bytes.clone()),
            Box::new(replica_fetch_bytes.clone()),
            Box::new(fetch_zero_copy_bytes.clone()),
            Box::new(fetch_cold_read_bytes.clone()),
            Box::new(truncated_offsets.clone()),
            Box::new(preferred_replica_redirects.clone()),
            Box::new(isr_proposals.clone()),
            Box::new(acks_all_timeouts.clone()),
            Box::new(controller_requests_failed.clone()),
            Box::new(broker_fencing.clone()),
            Box::new(isr_changes.clone()),
            Box::new(controller_active.clone()),
            Box::new(metadata_offset.clone()),
            Box::new(broker_epoch.clone()),
            Box::new(broker_fenced.clone()),
            Box::new(broker_registrations.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(messages_in.clone()),
            Box::new(requests.clone()),
            Box::new(request_errors.clone()),
            Box::new(request_latency.clone()),
            Box::new(connections.clone()),
            Box::new(connections_closed_bad_frame.clone()),
            Box::new(connections_rejected.clone()),
            Box::new(connections_closed.clone()),
            Box::new(acceptor_blocked_seconds.clone()),
            Box::new(memory_pool_used.clone()),
            Box::new(memory_pool_available.clone()),
            Box::new(memory_pool_depleted_seconds.clone()),
            Box::new(partitions.clone()),
            Box::new(log_size.clone()),
            Box::new(group_rebalances.clone()),
            Box::new(group_members.clone()),
            Box::new(groups.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        registry
            .register(Box::new(crate::metadata_disk::MetadataDiskCollector::new()))
            .expect("unique metric");
        let maintenance = crate::maintenance::MaintenanceMetrics::new(&registry);
        let balancer = crate::balancer::BalancerMetrics::new(&registry);
        let fetch_sessions = FetchSessionMetrics::new(&registry);
        let sasl = crate::sasl::SaslMetrics::new(&registry);
        let tls = crate::tls::TlsMetrics::new(&registry);
        let authz = crate::authz::AuthzMetrics::new(&registry);
        Metrics {
            registry,
            bytes_in,
            bytes_out,
            messages_in,
            requests,
            request_errors,
            request_latency,
            connections,
            connections_closed_bad_frame,
            connections_rejected,
            connections_closed,
            acceptor_blocked_seconds,
            memory_pool_used,
            memory_pool_available,
            memory_pool_depleted_seconds,
            partitions,
            log_size,
            group_rebalances,
            group_members,
            groups,
            leader_changes,
            metadata_offset,
            broker_epoch,
            broker_fenced,
            broker_registrations,
            broker_fencing,
            isr_changes,
            controller_active,
            under_replicated,
            under_min_isr,
            offline,
            consumer_fetch_bytes,
            replica_fetch_bytes,
            fetch_zero_copy_bytes,
            fetch_cold_read_bytes,
            truncated_offsets,
            preferred_replica_redirects,
            isr_proposals,
            acks_all_timeouts,
            controller_requests_failed,
            unclean_elections,
            corrupt_data_skipped,
            recovery_truncated_bytes,
            log_compaction_passes,
            reassignments_in_progress,
            reassignments,
            replicas_deleted,
            replication_throttled_bytes,
            replication_throttled_fetches,
            maintenance,
            balancer,
            fetch_sessions,
            sasl,
            tls,
            authz,
        }
    }

    /// Count what opening a partition log found unreadable.
    pub fn note_log_open(&self, report: &fjord_storage::OpenReport) {
        self.corrupt_data_skipped
            .with_label_values(&["checkpoint"])
            .inc_by(report.corrupt_files.len() as u64);
        self.corrupt_data_skipped
            .with_label_values(&["segment"])
            .inc_by(report.deleted_segments);
        self.recovery_truncated_bytes.inc_by(report.truncated_bytes);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        // The metadata quorum's storage counts in its own crate (no registry there).
        let metadata = self.corrupt_data_skipped.with_label_values(&["metadata"]);
        let n = fjord_metadata::corrupt_data_skipped();
        if n > metadata.get() {
            metadata.inc_by(n - metadata.get());
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

/// Incremental fetch sessions (KIP-227): the broker's session cache, the follower's requests,
/// and follower fetches refused for a stale broker epoch (KIP-903).
pub struct FetchSessionMetrics {
    /// Sessions in this broker's cache, by `kind` (follower, consumer).
    pub sessions: IntGaugeVec,
    /// Sessions evicted from the cache to make room for a new one.
    pub evictions: IntCounter,
    /// Follower fetches refused because they carried an older broker epoch than the one
    /// registered for the follower (KIP-903).
    pub stale_broker_epoch: IntCounter,
    /// Fetch requests this broker sent to leaders as a follower, by `kind` (full,
    /// incremental).
    pub replica_fetch_requests: IntCounterVec,
    /// Partitions listed in those requests, by `kind`: an incremental fetch lists only the
    /// partitions whose fetch position changed.
    pub replica_fetch_request_partitions: IntCounterVec,
    /// Follower sessions replaced by a full fetch after a failed request, by `error`.
    pub replica_fetch_session_resets: IntCounterVec,
}

impl FetchSessionMetrics {
    fn new(registry: &Registry) -> FetchSessionMetrics {
        let sessions = IntGaugeVec::new(
            Opts::new(
                "fetch_sessions",
                "Incremental fetch sessions cached on this broker, by kind (follower, consumer)",
            ),
            &["kind"],
        )
        .expect("metric");
        let evictions = IntCounter::new(
            "fetch_session_evictions_total",
            "Fetch sessions evicted from the cache to make room for a new one",
        )
        .expect("metric");
        let stale_broker_epoch = IntCounter::new(
            "fetch_stale_broker_epoch_total",
            "Follower fetches refused with STALE_BROKER_EPOCH (older than the registered broker epoch)",
        )
        .expect("metric");
        let replica_fetch_requests = IntCounterVec::new(
            Opts::new(
                "replica_fetch_requests_total",
                "Fetch requests sent to leaders as a follower, by kind (full, incremental)",
            ),
            &["kind"],
        )
        .expect("metric");
        let replica_fetch_request_partitions = IntCounterVec::new(
            Opts::new(
                "replica_fetch_request_partitions_total",
                "Partitions listed in fetch requests sent as a follower, by kind (full, incremental)",
            ),
            &["kind"],
        )
        .expect("metric");
        let replica_fetch_session_resets = IntCounterVec::new(
            Opts::new(
                "replica_fetch_session_resets_total",
                "Follower fetch sessions restarted with a full fetch after a failed request, by error",
            ),
            &["error"],
        )
        .expect("metric");
        for kind in ["follower", "consumer"] {
            sessions.with_label_values(&[kind]);
        }
        for kind in ["full", "incremental"] {
            replica_fetch_requests.with_label_values(&[kind]);
            replica_fetch_request_partitions.with_label_values(&[kind]);
        }
        for m in [
            Box::new(sessions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(evictions.clone()),
            Box::new(stale_broker_epoch.clone()),
            Box::new(replica_fetch_requests.clone()),
            Box::new(replica_fetch_request_partitions.clone()),
            Box::new(replica_fetch_session_resets.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        FetchSessionMetrics {
            sessions,
            evictions,
            stale_broker_epoch,
            replica_fetch_requests,
            replica_fetch_request_partitions,
            replica_fetch_session_resets,
        }
    }

    /// Copy the cache's session counts; `evictions_before`: its eviction count before the
    /// request at hand.
    pub fn observe(&self, cache: &crate::fetch_session::FetchSessionCache, evictions_before: u64) {
        let (followers, consumers) = cache.counts();
        self.sessions
            .with_label_values(&["follower"])
            .set(followers as i64);
        self.sessions
            .with_label_values(&["consumer"])
            .set(consumers as i64);
        let evicted = cache.evictions().saturating_sub(evictions_before);
        if evicted > 0 {
            self.evictions.inc_by(evicted);
            tracing::info!(
                evicted,
                followers,
                consumers,
                "fetch session cache full: evicted a session to make room for a new one"
            );
        }
    }

    /// A follower fetch request sent: `full` or incremental, listing `partitions`.
    pub fn replica_fetch_sent(&self, full: bool, partitions: usize) {
        let kind = if full { "full" } else { "incremental" };
        self.replica_fetch_requests.with_label_values(&[kind]).inc();
        self.replica_fetch_request_partitions
            .with_label_values(&[kind])
            .inc_by(partitions as u64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
