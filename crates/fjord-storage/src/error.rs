//! Storage errors. [`AppendError`] and [`ReadError`] go back to clients and map to Kafka error
//! codes; [`StorageError`] is mostly I/O and is reported as `KAFKA_STORAGE_ERROR`.

use fjord_protocol::batch::BatchError;
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::RecordsError;
use std::path::PathBuf;
use thiserror::Error;

/// A failure of the log itself (disk, corrupt metadata files) or an out-of-range request.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
    /// A copy (`std::io::Error` is not `Clone`: the copy keeps its kind and message), for
    /// one failure reported to several waiting requests.
    pub fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Io { path, source } => StorageError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StorageError::Corrupt { path, reason } => StorageError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            } => StorageError::OffsetOutOfRange {
                offset: *offset,
                log_start_offset: *log_start_offset,
                log_end_offset: *log_end_offset,
            },
        }
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            _ => ErrorCode::KafkaStorageError,
        }
    }
}

/// Why a produce was rejected. Nothing of the request was written when this is returned.
#[derive(Debug, Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("request records of {size} bytes exceed segment.bytes {max}")]
    RecordListTooLarge { size: usize, max: u64 },
    #[error("unsupported compression codec id {0}")]
    UnsupportedCompression(i16),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("producer {producer_id}: epoch {epoch} is older than current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "producer {producer_id}: out of order sequence {first_seq} (last appended {last_seq})"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        first_seq: i32,
        last_seq: i32,
    },
    /// A transaction marker from an older coordinator than the producer's last marker.
    #[error("producer {producer_id}: marker from coordinator epoch {coordinator_epoch}, older than {current}")]
    TransactionCoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// A transactional batch that would open a transaction the coordinator did not verify
    /// (KIP-890 part 1).
    #[error("producer {producer_id}: the partition was not verified as part of the transaction")]
    InvalidTxnState { producer_id: i64 },
    /// A follower append that does not continue the log: a batch starts before the expected
    /// offset (overlap) or after it (gap, outside compacted topics).
    #[error("follower append out of order: expected base offset {expected}, got {got}")]
    OutOfOrderOffsets { expected: i64, got: i64 },
    /// Refused by produce validation (`fjord_protocol::records`): the code Kafka's
    /// LogValidator would send and, for KIP-467, the records at fault.
    #[error("{0}")]
    Invalid(RecordsError),
    /// The bytes handed to `append_validated` are not the ones that were validated.
    #[error("records changed after validation ({validated} bytes validated, {got} given)")]
    NotValidated { validated: usize, got: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<RecordsError> for AppendError {
    fn from(e: RecordsError) -> Self {
        AppendError::Invalid(e)
    }
}

impl AppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendError::Corrupt(_) => ErrorCode::CorruptMessage,
            AppendError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            AppendError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            AppendError::RecordListTooLarge { .. } => ErrorCode::RecordListTooLarge,
            AppendError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompressionType,
            AppendError::InvalidRecord(_) => ErrorCode::InvalidRecord,
            AppendError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            AppendError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            AppendError::TransactionCoordinatorFenced { .. } => {
                ErrorCode::TransactionCoordinatorFenced
            }
            AppendError::InvalidTxnState { .. } => ErrorCode::InvalidTxnState,
            // Only the follower fetcher sees this: the batches are intact (CRC checked), it is
            // the fetch position and the log that disagree, a broker-side inconsistency.
            // CORRUPT_MESSAGE would blame the data (and is retriable for clients); Kafka's own
            // UnexpectedAppendOffsetException has no wire code either.
            AppendError::OutOfOrderOffsets { .. } => ErrorCode::UnknownServerError,
            AppendError::Invalid(e) => e.code,
            AppendError::NotValidated { .. } => ErrorCode::UnknownServerError,
            AppendError::Storage(e) => e.error_code(),
        }
    }
}

impl From<BatchError> for AppendError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::UnsupportedMagic(m) => AppendError::UnsupportedMagic(m),
            other => AppendError::Corrupt(other.to_string()),
        }
    }
}

/// Why a fetch could not be served.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("fetch offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ReadError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReadError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ReadError::Storage(e) => e.error_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire contract: which error becomes which code.
    #[test]
    fn error_codes_are_stable() {
        let cases: Vec<(AppendError, i16)> = vec![
            (AppendError::Corrupt("x".into()), 2),
            (AppendError::UnsupportedMagic(1), 43),
            (AppendError::MessageTooLarge { size: 1, max: 0 }, 10),
            (AppendError::RecordListTooLarge { size: 1, max: 0 }, 18),
            (AppendError::UnsupportedCompression(5), 76),
            (AppendError::InvalidRecord("k".into()), 87),
            (
                AppendError::InvalidProducerEpoch {
                    producer_id: 1,
                    epoch: 0,
                    current: 1,
                },
                47,
            ),
            (
                AppendError::OutOfOrderSequence {
                    producer_id: 1,
                    first_seq: 5,
                    last_seq: 1,
                },
                45,
            ),
            (
                AppendError::OutOfOrderOffsets {
                    expected: 3,
                    got: 5,
                },
                -1,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.error_code().code(), code, "{e}");
        }
        let r = ReadError::OffsetOutOfRange {
            offset: 0,
            log_start_offset: 1,
            log_end_offset: 2,
        };
        assert_eq!(r.error_code().code(), 1);
        let s = StorageError::io("/x", std::io::Error::other("boom"));
        assert_eq!(s.error_code().code(), 56);
    }
}
