//! Configs as DescribeConfigs reports them: value, source and synonyms for every topic key
//! (from `fjord_storage::config::TOPIC_CONFIGS`) and every broker key, the dynamic ones
//! (replication throttle rates, from the metadata image) included.

use std::collections::BTreeMap;

use fjord_metadata::record::DYNAMIC_BROKER_CONFIGS;
use fjord_storage::config::{ConfigType, TOPIC_CONFIGS};
use fjord_storage::LogConfig;

use crate::broker::Broker;

/// Kafka's `ConfigSource` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// One config as reported to clients.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    /// Kafka's `ConfigType` wire value (DescribeConfigs v3+).
    pub config_type: i8,
    /// Highest-precedence first, the entry's own source included.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

fn wire_type(t: ConfigType) -> i8 {
    match t {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Long => 5,
        ConfigType::Double => 6,
        ConfigType::List => 7,
    }
}

/// Every topic-level key with its effective value for a topic.
pub fn topic_entries(
    b: &Broker,
    effective: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let value = effective.value_string(def.name).unwrap_or_default();
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_string(), v.clone(), ConfigSource::DynamicTopic));
            }
            if let Some(v) = b.config.explicit.get(def.broker_key) {
                synonyms.push((
                    def.broker_key.to_string(),
                    v.clone(),
                    ConfigSource::StaticBroker,
                ));
            }
            // A key without a broker-level counterpart defaults under its own name.
            let default_name = if def.broker_key.is_empty() {
                def.name
            } else {
                def.broker_key
            };
            synonyms.push((
                default_name.to_string(),
                def.default.to_string(),
                ConfigSource::Default,
            ));
            ConfigEntry {
                name: def.name.to_string(),
                value,
                source: synonyms[0].2,
                config_type: wire_type(def.ty),
                synonyms,
            }
        })
        .collect()
}

/// Every broker key (the broker's own and the `log.*` defaults it supplies to topics).
pub fn broker_entries(b: &Broker) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = b
        .config
        .broker_entries()
        .into_iter()
        .map(|(name, value, is_default)| {
            let source = if is_default {
                ConfigSource::Default
            } else {
                ConfigSource::StaticBroker
            };
            ConfigEntry {
                synonyms: vec![(name.clone(), value.clone(), source)],
                name,
                value,
                source,
                config_type: 2,
            }
        })
        .collect();
    for def in TOPIC_CONFIGS {
        if def.broker_key.is_empty() || out.iter().any(|e| e.name == def.broker_key) {
            continue;
        }
        let (value, source) = match b.config.explicit.get(def.broker_key) {
            Some(v) => (v.clone(), ConfigSource::StaticBroker),
            None => (
                b.config.log.value_string(def.name).unwrap_or_default(),
                ConfigSource::Default,
            ),
        };
        out.push(ConfigEntry {
            name: def.broker_key.to_string(),
            synonyms: vec![(def.broker_key.to_string(), value.clone(), source)],
            value,
            source,
            config_type: wire_type(def.ty),
        });
    }
    // Dynamic keys (replication throttle rates): this broker's value, else the cluster
    // default, else Kafka's default (no limit).
    b.with_image(|image| {
        let me = b.node_id();
        for key in DYNAMIC_BROKER_CONFIGS {
            let mut synonyms = Vec::new();
            if let Some(v) = image.broker_configs(Some(me)).and_then(|c| c.get(*key)) {
                synonyms.push((key.to_string(), v.clone(), ConfigSource::DynamicBroker));
            }
            if let Some(v) = image.broker_configs(None).and_then(|c| c.get(*key)) {
                synonyms.push((
                    key.to_string(),
                    v.clone(),
                    ConfigSource::DynamicDefaultBroker,
                ));
            }
            synonyms.push((key.to_string(), i64::MAX.to_string(), ConfigSource::Default));
            out.retain(|e| e.name != *key);
            out.push(ConfigEntry {
                name: key.to_string(),
                value: synonyms[0].1.clone(),
                source: synonyms[0].2,
                config_type: wire_type(ConfigType::Long),
                synonyms,
            });
        }
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Whether a broker key can be changed at run time (DescribeConfigs reports it writable).
pub fn is_dynamic_broker_key(key: &str) -> bool {
    DYNAMIC_BROKER_CONFIGS.contains(&key)
}
