//! The metadata storage's disk work as Prometheus metrics, read at scrape time from the
//! counters `fjord_metadata::persist` keeps (the metadata crate has no registry):
//!
//! - `fjord_metadata_fsyncs_total{file}` and `fjord_metadata_fsync_seconds_total{file}`: fsyncs
//!   of the Raft log, Raft state, snapshot or single node's `metadata.log`, and the seconds
//!   spent in them (on the metadata disk threads, never on an async worker);
//! - `fjord_metadata_group_commit_appends`: a histogram of appends made durable per fsync by
//!   group commit (Raft log entries batches, or single-node controller batches).

use fjord_metadata::persist::{self, GROUP_COMMIT_BUCKETS};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};

const FSYNCS: (&str, &str) = (
    "metadata_fsyncs_total",
    "fsyncs of the metadata storage, by file (raft_log, raft_state, snapshot, metadata_log)",
);
const FSYNC_SECONDS: (&str, &str) = (
    "metadata_fsync_seconds_total",
    "Seconds spent in fsyncs of the metadata storage, by file",
);
const GROUP_COMMIT: (&str, &str) = (
    "metadata_group_commit_appends",
    "Appends made durable by one metadata log fsync (group commit)",
);

/// Register with the broker's registry (it adds the `fjord_` prefix).
pub struct MetadataDiskCollector {
    descs: Vec<Desc>,
}

impl MetadataDiskCollector {
    pub fn new() -> MetadataDiskCollector {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("valid metric description")
        };
        MetadataDiskCollector {
            descs: vec![
                desc(FSYNCS, &["file"]),
                desc(FSYNC_SECONDS, &["file"]),
                desc(GROUP_COMMIT, &[]),
            ],
        }
    }
}

impl Default for MetadataDiskCollector {
    fn default() -> Self {
        Self::new()
    }
}

fn family((name, help): (&str, &str), kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(file: &str, value: f64) -> Metric {
    let mut label = LabelPair::default();
    label.set_name("file".to_string());
    label.set_value(file.to_string());
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_label(vec![label]);
    m.set_counter(c);
    m
}

impl Collector for MetadataDiskCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = persist::stats();
        let fsyncs = stats
            .fsyncs
            .iter()
            .map(|(kind, n, _)| counter(kind.label(), *n as f64))
            .collect();
        let seconds = stats
            .fsyncs
            .iter()
            .map(|(kind, _, secs)| counter(kind.label(), *secs))
            .collect();
        let mut h = Histogram::default();
        h.set_bucket(
            GROUP_COMMIT_BUCKETS
                .iter()
                .zip(&stats.group_commits_cumulative)
                .map(|(bound, count)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound as f64);
                    b.set_cumulative_count(*count);
                    b
                })
                .collect(),
        );
        h.set_sample_count(stats.group_commits_cumulative.last().copied().unwrap_or(0));
        h.set_sample_sum(stats.group_commit_appends as f64);
        let mut m = Metric::default();
        m.set_histogram(h);
        vec![
            family(FSYNCS, MetricType::COUNTER, fsyncs),
            family(FSYNC_SECONDS, MetricType::COUNTER, seconds),
            family(GROUP_COMMIT, MetricType::HISTOGRAM, vec![m]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_with_the_registry_prefix() {
        let registry = prometheus::Registry::new_custom(Some("fjord".into()), None).unwrap();
        registry
            .register(Box::new(MetadataDiskCollector::new()))
            .unwrap();
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("fjord_metadata_fsyncs_total{file=\"raft_log\"}"),
            "{text}"
        );
        assert!(text.contains("fjord_metadata_fsync_seconds_total{file=\"metadata_log\"}"));
        assert!(text.contains("fjord_metadata_group_commit_appends_bucket{le=\"+Inf\"}"));
    }
}
