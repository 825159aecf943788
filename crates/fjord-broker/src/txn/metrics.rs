//! The transaction coordinator's metrics, registered on first use.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct TxnMetrics {
    /// Transactional ids coordinated here, by state (`Ongoing` is the open transactions).
    pub transactions: IntGaugeVec,
    pub shards_loaded: IntGauge,
    pub shard_changes: IntCounterVec,
    /// Transactions completed (the CompleteCommit / CompleteAbort record written), by result.
    pub completed: IntCounterVec,
    /// From the prepare record replicated to every partition's marker written.
    pub marker_seconds: Histogram,
    /// Marker sends that failed (to be retried), by error.
    pub markers_failed: IntCounterVec,
    pub timed_out: IntCounter,
    pub fenced: IntCounter,
    pub expired: IntCounter,
}

impl TxnMetrics {
    pub fn new(registry: &Registry) -> TxnMetrics {
        let transactions = IntGaugeVec::new(
            Opts::new(
                "txn_coordinator_transactions",
                "Transactional ids this broker coordinates, by state (Ongoing: open transactions)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let shards_loaded = IntGauge::new(
            "txn_coordinator_shards_loaded",
            "__transaction_state partitions whose transactional ids this broker coordinates",
        )
        .expect("valid metric");
        let shard_changes = IntCounterVec::new(
            Opts::new(
                "txn_coordinator_shard_changes_total",
                "Transaction coordinator shards loaded or unloaded, by reason (elected, lost_leadership, append_failed)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let completed = IntCounterVec::new(
            Opts::new(
                "transactions_completed_total",
                "Transactions completed by this coordinator, by result (commit, abort)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let marker_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "txn_marker_seconds",
                "Time from a transaction's prepare record being replicated until every partition has its commit or abort marker",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets")),
        )
        .expect("valid metric");
        let markers_failed = IntCounterVec::new(
            Opts::new(
                "txn_markers_failed_total",
                "WriteTxnMarkers sends to a partition leader that failed and are retried, by error",
            ),
            &["error"],
        )
        .expect("valid metric");
        let timed_out = IntCounter::new(
            "transactions_timed_out_total",
            "Open transactions aborted by the coordinator because they outlived their transaction.timeout.ms",
        )
        .expect("valid metric");
        let fenced = IntCounter::new(
            "transactions_fenced_total",
            "Open transactions aborted because a new producer initialized their transactional id",
        )
        .expect("valid metric");
        let expired = IntCounter::new(
            "transactional_ids_expired_total",
            "Transactional ids removed after transactional.id.expiration.ms without a transaction",
        )
        .expect("valid metric");
        // Registration fails only if another runtime in this process registered first.
        let _ = registry.register(Box::new(transactions.clone()));
        let _ = registry.register(Box::new(shards_loaded.clone()));
        let _ = registry.register(Box::new(shard_changes.clone()));
        let _ = registry.register(Box::new(completed.clone()));
        let _ = registry.register(Box::new(marker_seconds.clone()));
        let _ = registry.register(Box::new(markers_failed.clone()));
        let _ = registry.register(Box::new(timed_out.clone()));
        let _ = registry.register(Box::new(fenced.clone()));
        let _ = registry.register(Box::new(expired.clone()));
        TxnMetrics {
            transactions,
            shards_loaded,
            shard_changes,
            completed,
            marker_seconds,
            markers_failed,
            timed_out,
            fenced,
            expired,
        }
    }
}
