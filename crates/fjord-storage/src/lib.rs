//! fjord-storage
pub mod cleaner;
pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod segment;

pub use config::{
    is_broker_log_key, validate_topic_config, CleanupPolicy, ConfigError, LogConfig, TimestampType,
    TopicConfigDef, TOPIC_CONFIGS,
};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{AppendInfo, Log, MaintenanceReport, ReadResult};
