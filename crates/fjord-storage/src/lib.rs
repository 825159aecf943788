//! Partition logs for Fjord: what Kafka calls UnifiedLog / LocalLog / LogSegment, simplified.
//!
//! The broker calls [`Log`] with raw record-batch v2 bytes. The append path validates batch
//! headers and CRC32C, patches base offset, leader epoch (and LogAppendTime) in place in one
//! reused buffer and issues one write; records are decoded only to check keys on compacted
//! topics, for timestamp lookups and by the cleaner. A follower appends the leader's batches
//! as they are with [`Log::append_as_follower`] (offsets and epochs kept, producer state and
//! the epoch cache updated from them); the high watermark the replication layer computes is
//! kept in bounds by the log and checkpointed with it.
//!
//! # On-disk layout (one directory per partition)
//!
//! ```text
//! 00000000000000000000.log        record batches, exactly as fetched by consumers
//! 00000000000000000000.index      sparse offset index: rel_offset u32 | position u32
//! 00000000000000000000.timeindex  time index: max_timestamp i64 | rel_offset u32
//! 00000000000000001234.log ...    next segment, named by its base offset
//! 00000000000000001234.snapshot   producer state as of offset 1234 (JSON), on roll/close if changed
//! leader-epoch-checkpoint         Kafka text format: 0 / count / "epoch start_offset" lines
//! log-start-offset-checkpoint     log start offset raised by retention / DeleteRecords
//! recovery-point-offset-checkpoint  everything below was fsynced
//! high-watermark-checkpoint       high watermark, on checkpoint/close if changed (none if empty)
//! cleaner-offset-checkpoint.json  first dirty offset + tombstone timers (compacted topics)
//! clean-shutdown                  written by close() (not for an empty log), removed before the next change
//! *.cleaned / *.swap / *.deleted / *.tmp   transient; tidied on open
//! ```
//!
//! # Modules
//!
//! - [`segment`]: one `.log` file with its indexes. The active segment keeps the index in
//!   memory; sealed segments load theirs lazily on first use (rebuilding it from the log if
//!   missing or inconsistent), so opening a partition touches only the last segment.
//! - [`index`]: the sparse offset / time index, written whole via temp file + rename.
//! - [`producer_state`]: idempotent-producer dedup and sequence checks, last 5 batches per
//!   producer id; snapshots + header replay restore it after restart or crash.
//! - [`epoch`]: the leader-epoch cache behind OffsetForLeaderEpoch.
//! - [`log`]: [`Log`] itself, one file per concern: `log/mod.rs` (the struct, accessors,
//!   high watermark, shared types), `load.rs` (open, directory tidy, recovery, producer-state
//!   load, close), `append.rs` (leader and follower append, flush-policy count, roll),
//!   `flush.rs` (the flush split around the fsyncs), `read.rs` (reads, timestamp lookups),
//!   `retention.rs` (maintenance, retention, DeleteRecords, segment deletion) and
//!   `truncate.rs` (follower truncation).
//! - [`cleaner`]: compaction (plan and build on `&Log`, install on `&mut Log`).
//! - [`config`]: [`LogConfig`] and the table of topic config keys ([`TOPIC_CONFIGS`]).
//!
//! # Recovery
//!
//! Without the clean-shutdown marker, segments from the recovery point on (at least the
//! last) are checked batch by batch — length, magic, CRC — and truncated at the first bad or
//! torn batch; their indexes are rebuilt, producer state is replayed from the latest snapshot,
//! and the leader-epoch cache is cut to the new log end. An interrupted compaction swap is
//! completed from its `.swap` file.
//!
//! Open, flush and close write only what changed (a broker may hold 100,000 partitions, and
//! every temp file + rename allocates an inode): the active index only if it differs from its
//! files, the recovery point only if it moved, a producer snapshot at close only if none at
//! the log end holds the current state, the cleaner checkpoint and high watermark only if
//! they changed. The clean-shutdown marker stays on disk after a clean open and is removed
//! only before the first change to the segments, the log start or the epoch cache
//! (`Log::mark_dirty`): until then the segments are exactly what the clean close left, so a
//! crash needs no recovery. An untouched partition costs no write at all on open and
//! close; an unclean open writes nothing if recovery changed nothing.
//!
//! Open lists the partition directory once and reads only the files that listing shows
//! (checkpoints, the active segment's indexes, the newest producer snapshot); with the
//! newest snapshot at the log end (as after a clean close) it replays nothing. A clean open
//! of an empty partition is one listing and one `stat` of its segment.
//!
//! # Concurrency
//!
//! `read`, `offset_for_timestamp` and `max_timestamp` take `&self` and use positional reads;
//! everything that mutates takes `&mut self`. The broker wraps a `Log` in a lock (e.g.
//! `parking_lot::RwLock`) so fetches run concurrently and segment deletion can never race a
//! read.

pub mod cleaner;
pub mod config;
pub mod epoch;
pub mod error;
pub mod fsync;
pub mod index;
pub mod io;
pub mod log;
pub mod page_cache;
pub mod producer_state;
pub mod segment;

pub use cleaner::CleanReport;
pub use config::{
    is_broker_log_key, topic_config, validate_topic_config, CleanupPolicy, ConfigError, ConfigType,
    LogConfig, TimestampType, TopicConfigDef, TOPIC_CONFIGS,
};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{AppendInfo, FlushPlan, Log, MaintenanceReport, OpenReport, ReadResult, TxnCheck};
pub use segment::FileRange;
