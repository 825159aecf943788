//! Per-topic log configuration: [`LogConfig`] and [`TOPIC_CONFIGS`], the single table of
//! topic-level keys (Kafka names), the broker-level key that supplies each default, the type,
//! the Kafka default and the validation rule.
//!
//! The broker answers DescribeConfigs by walking [`TOPIC_CONFIGS`], validates CreateTopics /
//! AlterConfigs with [`validate_topic_config`], and delegates its own `log.*` keys to
//! [`LogConfig::broker_defaults`] (see [`is_broker_log_key`]).
//!
//! `compression.type` is accepted and stored exactly as sent: Fjord never recompresses on the
//! produce path, so every value behaves like `producer`.

use fjord_protocol::records::{AppendOrigin, RecordRules};
use std::collections::BTreeMap;
use thiserror::Error;

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

impl TimestampType {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// Effective configuration of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1 = keep forever.
    pub retention_ms: i64,
    /// -1 = no size limit.
    pub retention_bytes: i64,
    pub flush_messages: u64,
    pub flush_ms: i64,
    pub max_message_bytes: usize,
    pub cleanup_policy: CleanupPolicy,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub index_interval_bytes: usize,
    pub segment_index_bytes: usize,
    pub message_timestamp_type: TimestampType,
    /// How far in the past a CreateTime record's timestamp may be (produce validation).
    pub message_timestamp_before_max_ms: i64,
    /// How far in the future a CreateTime record's timestamp may be (Kafka 4.x: one hour).
    pub message_timestamp_after_max_ms: i64,
    pub file_delete_delay_ms: i64,
    /// Stored for the replication layer; the log does not use it.
    pub min_insync_replicas: i32,
    /// Stored for the replication layer; the log does not use it.
    pub unclean_leader_election_enable: bool,
    /// Stored as sent (see module docs).
    pub compression_type: String,
    /// Broker-level `producer.id.expiration.ms` (Kafka has no topic key for it).
    pub producer_id_expiration_ms: i64,
    /// Stored for the replication layer (reassignment throttles); the log does not use it.
    pub leader_replication_throttled_replicas: String,
    /// Stored for the replication layer (reassignment throttles); the log does not use it.
    pub follower_replication_throttled_replicas: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            cleanup_policy: CleanupPolicy::Delete,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3_600_000,
            min_cleanable_dirty_ratio: 0.5,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            file_delete_delay_ms: 60_000,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            compression_type: "producer".to_string(),
            producer_id_expiration_ms: 24 * 3_600_000,
            leader_replication_throttled_replicas: String::new(),
            follower_replication_throttled_replicas: String::new(),
        }
    }
}

/// A rejected config key or value. One line: key, value, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("unknown topic config '{key}'")]
    UnknownKey { key: String },
    #[error("invalid value '{value}' for config '{key}': {allowed}")]
    InvalidValue {
        key: String,
        value: String,
        allowed: String,
    },
}

impl ConfigError {
    pub fn error_code(&self) -> fjord_protocol::error::ErrorCode {
        fjord_protocol::error::ErrorCode::InvalidConfig
    }
}

/// Value type of a config, as Kafka reports it in DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

/// How a value is checked.
#[derive(Debug, Clone, Copy)]
pub enum Validator {
    /// Integer (of the config's type) at least this.
    AtLeast(i64),
    /// Floating point in the closed range.
    Between(f64, f64),
    /// One of these strings (exact, Kafka is case-sensitive here).
    OneOf(&'static [&'static str]),
    /// Comma-separated, non-empty, each item one of these.
    ListOf(&'static [&'static str]),
    /// `true` / `false`.
    Boolean,
    /// Any integer of the config's type.
    AnyInt,
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs separated by
    /// commas (see [`ThrottledReplicas`]).
    ThrottledReplicas,
}

/// One topic-level config key.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// Kafka topic-level name, e.g. `retention.ms`.
    pub name: &'static str,
    /// The broker-level key whose value is the default for this topic key ("" when the
    /// broker has none, as for the replication throttle lists).
    pub broker_key: &'static str,
    pub ty: ConfigType,
    /// Kafka's default, as a string.
    pub default: &'static str,
    pub validator: Validator,
}

const COMPRESSION_TYPES: &[&str] = &[
    "uncompressed",
    "none",
    "zstd",
    "lz4",
    "snappy",
    "gzip",
    "producer",
];

/// Every topic-level key Fjord accepts.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_key: "log.cleanup.policy",
        ty: ConfigType::List,
        default: "delete",
        validator: Validator::ListOf(&["compact", "delete"]),
    },
    TopicConfigDef {
        name: "compression.type",
        broker_key: "compression.type",
        ty: ConfigType::String,
        default: "producer",
        validator: Validator::OneOf(COMPRESSION_TYPES),
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_key: "log.cleaner.delete.retention.ms",
        ty: ConfigType::Long,
        default: "86400000",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_key: "log.segment.delete.delay.ms",
        ty: ConfigType::Long,
        default: "60000",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_key: "log.flush.interval.messages",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validator: Validator::AtLeast(1),
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_key: "log.flush.interval.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_key: "",
        ty: ConfigType::List,
        default: "",
        validator: Validator::ThrottledReplicas,
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_key: "log.index.interval.bytes",
        ty: ConfigType::Int,
        default: "4096",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_key: "",
        ty: ConfigType::List,
        default: "",
        validator: Validator::ThrottledReplicas,
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_key: "log.cleaner.max.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validator: Validator::AtLeast(1),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_key: "message.max.bytes",
        ty: ConfigType::Int,
        default: "1048588",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_key: "log.message.timestamp.after.max.ms",
        ty: ConfigType::Long,
        default: "3600000",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_key: "log.message.timestamp.before.max.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
        ty: ConfigType::String,
        default: "CreateTime",
        validator: Validator::OneOf(&["CreateTime", "LogAppendTime"]),
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_key: "log.cleaner.min.cleanable.ratio",
        ty: ConfigType::Double,
        default: "0.5",
        validator: Validator::Between(0.0, 1.0),
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_key: "log.cleaner.min.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "0",
        validator: Validator::AtLeast(0),
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_key: "min.insync.replicas",
        ty: ConfigType::Int,
        default: "1",
        validator: Validator::AtLeast(1),
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_key: "log.retention.bytes",
        ty: ConfigType::Long,
        default: "-1",
        validator: Validator::AnyInt,
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_key: "log.retention.ms",
        ty: ConfigType::Long,
        default: "604800000",
        validator: Validator::AtLeast(-1),
    },
    // Kafka 4.0 (KIP-1030) raised the minimum to 1 MiB. Tests that want tiny segments build a
    // LogConfig directly.
    TopicConfigDef {
        name: "segment.bytes",
        broker_key: "log.segment.bytes",
        ty: ConfigType::Int,
        default: "1073741824",
        validator: Validator::AtLeast(1024 * 1024),
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        broker_key: "log.index.size.max.bytes",
        ty: ConfigType::Int,
        default: "10485760",
        validator: Validator::AtLeast(4),
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_key: "log.roll.ms",
        ty: ConfigType::Long,
        default: "604800000",
        validator: Validator::AtLeast(1),
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_key: "unclean.leader.election.enable",
        ty: ConfigType::Boolean,
        default: "false",
        validator: Validator::Boolean,
    },
];

/// Broker-level keys read by [`LogConfig::broker_defaults`] that have no topic counterpart.
const EXTRA_BROKER_KEYS: &[&str] = &[
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "producer.id.expiration.ms",
];

/// Look up a topic-level key.
pub fn topic_config(key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == key)
}

/// Whether the broker's config loader should hand this key to [`LogConfig::broker_defaults`].
pub fn is_broker_log_key(key: &str) -> bool {
    !key.is_empty()
        && (TOPIC_CONFIGS.iter().any(|d| d.broker_key == key) || EXTRA_BROKER_KEYS.contains(&key))
}

fn invalid(key: &str, value: &str, allowed: String) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        allowed,
    }
}

impl TopicConfigDef {
    /// Check `value` against this key's type and rule. `key` is the name used in the error
    /// (the topic or the broker key, whichever the caller was given).
    fn check(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        let v = value.trim();
        let int_range = |min: i64| -> Result<(), ConfigError> {
            let (lo, hi, tyname) = match self.ty {
                ConfigType::Int => (i32::MIN as i64, i32::MAX as i64, "int"),
                _ => (i64::MIN, i64::MAX, "long"),
            };
            let lo = lo.max(min);
            let allowed = if min == i64::MIN {
                format!("a {tyname} in [{lo}, {hi}]")
            } else {
                format!("a {tyname} >= {min} (at most {hi})")
            };
            match v.parse::<i64>() {
                Ok(n) if n >= lo && n <= hi => Ok(()),
                _ => Err(invalid(key, value, allowed)),
            }
        };
        match self.validator {
            Validator::AtLeast(min) => int_range(min),
            Validator::AnyInt => int_range(i64::MIN),
            Validator::Between(lo, hi) => match v.parse::<f64>() {
                Ok(x) if x >= lo && x <= hi => Ok(()),
                _ => Err(invalid(key, value, format!("a number in [{lo}, {hi}]"))),
            },
            Validator::Boolean => match v.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(invalid(key, value, "true or false".into())),
            },
            Validator::OneOf(options) => {
                if options.contains(&v) {
                    Ok(())
                } else {
                    Err(invalid(
                        key,
                        value,
                        format!("one of {}", options.join(", ")),
                    ))
                }
            }
            Validator::ThrottledReplicas => {
                ThrottledReplicas::parse(v).map(|_| ()).map_err(|why| {
                    invalid(
                        key,
                        value,
                        format!("'*' or a comma-separated list of partition:broker pairs ({why})"),
                    )
                })
            }
            Validator::ListOf(options) => {
                let items: Vec<&str> = v.split(',').map(str::trim).collect();
                if !items.is_empty() && items.iter().all(|i| options.contains(i)) {
                    Ok(())
                } else {
                    Err(invalid(
                        key,
                        value,
                        format!("a comma-separated list of {}", options.join(", ")),
                    ))
                }
            }
        }
    }
}

/// Which replicas of a topic a replication throttle applies to (Kafka's
/// `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`):
/// none, all (`*`), or listed `partition:broker` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Listed(Vec<(u32, i32)>),
}

impl ThrottledReplicas {
    /// Parse a config value (already trimmed or not); the error says what is wrong.
    pub fn parse(v: &str) -> Result<ThrottledReplicas, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(ThrottledReplicas::None);
        }
        if v == "*" {
            return Ok(ThrottledReplicas::All);
        }
        let mut pairs = Vec::new();
        for item in v.split(',').map(str::trim) {
            let parsed = item.split_once(':').and_then(|(p, b)| {
                Some((p.trim().parse::<u32>().ok()?, b.trim().parse::<i32>().ok()?))
            });
            match parsed {
                Some((p, b)) if b >= 0 => pairs.push((p, b)),
                _ => return Err(format!("'{item}' is not partition:broker")),
            }
        }
        Ok(ThrottledReplicas::Listed(pairs))
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn contains(&self, partition: u32, broker: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(pairs) => pairs.contains(&(partition, broker)),
        }
    }
}

/// Validate one topic-level key/value (unknown keys are an error).
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let def = topic_config(key).ok_or_else(|| ConfigError::UnknownKey {
        key: key.to_string(),
    })?;
    def.check(key, value)
}

fn parse_cleanup_policy(v: &str) -> CleanupPolicy {
    let (mut c, mut d) = (false, false);
    for item in v.split(',').map(str::trim) {
        c |= item == "compact";
        d |= item == "delete";
    }
    match (c, d) {
        (true, true) => CleanupPolicy::CompactDelete,
        (true, false) => CleanupPolicy::Compact,
        _ => CleanupPolicy::Delete,
    }
}

impl LogConfig {
    /// What produce validation enforces for this log (see `fjord_protocol::records`).
    pub fn record_rules(&self, now_ms: i64, origin: AppendOrigin) -> RecordRules {
        RecordRules {
            compacted: self.cleanup_policy.compacts(),
            log_append_time: self.message_timestamp_type == TimestampType::LogAppendTime,
            timestamp_before_max_ms: self.message_timestamp_before_max_ms,
            timestamp_after_max_ms: self.message_timestamp_after_max_ms,
            max_message_bytes: self.max_message_bytes,
            now_ms,
            origin,
        }
    }

    /// Apply one already-validated topic-level key.
    fn set(&mut self, key: &str, v: &str) {
        let v = v.trim();
        let long = || v.parse::<i64>().expect("validated");
        match key {
            "cleanup.policy" => self.cleanup_policy = parse_cleanup_policy(v),
            "compression.type" => self.compression_type = v.to_string(),
            "delete.retention.ms" => self.delete_retention_ms = long(),
            "file.delete.delay.ms" => self.file_delete_delay_ms = long(),
            "flush.messages" => self.flush_messages = long() as u64,
            "flush.ms" => self.flush_ms = long(),
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas = v.to_string()
            }
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas = v.to_string()
            }
            "index.interval.bytes" => self.index_interval_bytes = long() as usize,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = long(),
            "max.message.bytes" => self.max_message_bytes = long() as usize,
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms = long(),
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms = long(),
            "message.timestamp.type" => {
                self.message_timestamp_type = if v == "LogAppendTime" {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                }
            }
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = v.parse().expect("validated")
            }
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = long(),
            "min.insync.replicas" => self.min_insync_replicas = long() as i32,
            "retention.bytes" => self.retention_bytes = long(),
            "retention.ms" => self.retention_ms = long(),
            "segment.bytes" => self.segment_bytes = long() as u64,
            "segment.index.bytes" => self.segment_index_bytes = long() as usize,
            "segment.ms" => self.segment_ms = long(),
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = v.eq_ignore_ascii_case("true")
            }
            other => unreachable!("key {other} is in TOPIC_CONFIGS but not handled"),
        }
    }

    /// The effective config of a topic: `base` (the broker defaults) with topic overrides.
    pub fn from_overrides(
        base: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, ConfigError> {
        let mut c = base.clone();
        for (k, v) in overrides {
            validate_topic_config(k, v)?;
            c.set(k, v);
        }
        Ok(c)
    }

    /// Broker-level defaults from the broker's properties (Kafka key names). Keys that are not
    /// log keys are ignored. Like Kafka, `log.retention.ms` wins over `.minutes` over `.hours`,
    /// and `log.roll.ms` over `log.roll.hours`.
    pub fn broker_defaults(props: &BTreeMap<String, String>) -> Result<LogConfig, ConfigError> {
        let mut c = LogConfig::default();
        for def in TOPIC_CONFIGS {
            if let Some(v) = props.get(def.broker_key) {
                def.check(def.broker_key, v)?;
                c.set(def.name, v);
            }
        }
        let long_at_least = |key: &str, min: i64| -> Result<Option<i64>, ConfigError> {
            match props.get(key) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(n) if n >= min => Ok(Some(n)),
                    _ => Err(invalid(key, v, format!("a long >= {min}"))),
                },
            }
        };
        let hours = long_at_least("log.retention.hours", -1)?;
        let minutes = long_at_least("log.retention.minutes", -1)?;
        if !props.contains_key("log.retention.ms") {
            let ms = match (minutes, hours) {
                (Some(m), _) => Some(if m < 0 { -1 } else { m.saturating_mul(60_000) }),
                (None, Some(h)) => Some(if h < 0 {
                    -1
                } else {
                    h.saturating_mul(3_600_000)
                }),
                _ => None,
            };
            if let Some(ms) = ms {
                c.retention_ms = ms;
            }
        }
        if !props.contains_key("log.roll.ms") {
            if let Some(h) = long_at_least("log.roll.hours", 1)? {
                c.segment_ms = h.saturating_mul(3_600_000);
            }
        }
        if let Some(ms) = long_at_least("producer.id.expiration.ms", 1)? {
            c.producer_id_expiration_ms = ms;
        }
        Ok(c)
    }

    /// The value of a topic-level key in this config, rendered as Kafka would (for
    /// DescribeConfigs). `None` for unknown keys.
    pub fn value_string(&self, key: &str) -> Option<String> {
        Some(match key {
            "cleanup.policy" => self.cleanup_policy.as_str().to_string(),
            "compression.type" => self.compression_type.clone(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "file.delete.delay.ms" => self.file_delete_delay_ms.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas.clone()
            }
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas.clone()
            }
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.type" => self.message_timestamp_type.as_str().to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election_enable.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_table() {
        let d = LogConfig::default();
        for def in TOPIC_CONFIGS {
            def.check(def.name, def.default).unwrap();
            assert_eq!(
                d.value_string(def.name).as_deref(),
                Some(def.default),
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn every_key_is_settable() {
        // `set` panics on keys it does not handle; apply each default through it.
        let mut c = LogConfig::default();
        for def in TOPIC_CONFIGS {
            c.set(def.name, def.default);
        }
        assert_eq!(c, LogConfig::default());
    }

    #[test]
    fn throttled_replica_lists() {
        assert_eq!(ThrottledReplicas::parse(""), Ok(ThrottledReplicas::None));
        assert_eq!(ThrottledReplicas::parse(" * "), Ok(ThrottledReplicas::All));
        let t = ThrottledReplicas::parse("0:1, 1:2,0:3").unwrap();
        assert!(t.contains(0, 1) && t.contains(1, 2) && t.contains(0, 3));
        assert!(!t.contains(1, 1));
        for bad in ["0", "a:1", "0:1,", "0:-1", "*,0:1"] {
            assert!(ThrottledReplicas::parse(bad).is_err(), "{bad}");
            let e = validate_topic_config("leader.replication.throttled.replicas", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("partition:broker"), "{e}");
        }
        let c = LogConfig::from_overrides(
            &LogConfig::default(),
            &map(&[("follower.replication.throttled.replicas", "0:4")]),
        )
        .unwrap();
        assert_eq!(c.follower_replication_throttled_replicas, "0:4");
        assert!(!is_broker_log_key(""));
    }

    #[test]
    fn unknown_key_rejected() {
        let e = validate_topic_config("retention.millis", "1").unwrap_err();
        assert!(e.to_string().contains("retention.millis"), "{e}");
    }

    #[test]
    fn bad_values_name_key_value_and_allowed() {
        for (k, v, want) in [
            ("retention.ms", "-2", ">= -1"),
            ("retention.ms", "abc", "long"),
            ("segment.bytes", "1000", ">= 1048576"),
            ("segment.bytes", "99999999999", "int"),
            ("cleanup.policy", "compact,remove", "compact, delete"),
            ("cleanup.policy", "", "compact, delete"),
            ("min.cleanable.dirty.ratio", "1.5", "[0, 1]"),
            (
                "message.timestamp.type",
                "createtime",
                "CreateTime, LogAppendTime",
            ),
            ("unclean.leader.election.enable", "yes", "true or false"),
            ("compression.type", "brotli", "zstd"),
        ] {
            let e = validate_topic_config(k, v).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(v) && e.contains(want), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn overrides_apply() {
        let c = LogConfig::from_overrides(
            &LogConfig::default(),
            &map(&[
                ("cleanup.policy", "delete, compact"),
                ("retention.ms", "-1"),
                ("message.timestamp.type", "LogAppendTime"),
                ("min.cleanable.dirty.ratio", "0.1"),
                ("compression.type", "none"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(c.retention_ms, -1);
        assert_eq!(c.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(c.compression_type, "none");
        assert!(LogConfig::from_overrides(&c, &map(&[("flush.ms", "-5")])).is_err());
    }

    #[test]
    fn broker_defaults_hours_minutes_ms() {
        let c = LogConfig::broker_defaults(&map(&[("log.retention.hours", "1")])).unwrap();
        assert_eq!(c.retention_ms, 3_600_000);
        let c = LogConfig::broker_defaults(&map(&[
            ("log.retention.hours", "1"),
            ("log.retention.minutes", "2"),
        ]))
        .unwrap();
        assert_eq!(c.retention_ms, 120_000);
        let c = LogConfig::broker_defaults(&map(&[
            ("log.retention.ms", "5"),
            ("log.retention.minutes", "2"),
            ("log.roll.hours", "3"),
            ("log.segment.bytes", "2097152"),
            ("log.cleanup.policy", "compact"),
            ("broker.rack", "r1"),
        ]))
        .unwrap();
        assert_eq!(c.retention_ms, 5);
        assert_eq!(c.segment_ms, 3 * 3_600_000);
        assert_eq!(c.segment_bytes, 2_097_152);
        assert_eq!(c.cleanup_policy, CleanupPolicy::Compact);
        let e = LogConfig::broker_defaults(&map(&[("log.segment.bytes", "x")])).unwrap_err();
        assert!(e.to_string().contains("log.segment.bytes"));
        assert!(is_broker_log_key("log.retention.hours"));
        assert!(is_broker_log_key("log.segment.delete.delay.ms"));
        assert!(!is_broker_log_key("broker.rack"));
    }
}
