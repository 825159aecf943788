//! The durable metadata log: one JSON record per line, fsynced before a change is acknowledged.
//!
//! A crash can leave a torn last line; replay stops there and truncates it, so the log always
//! holds exactly the records that were acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::{ClusterImage, MetadataRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata log {path}: cannot encode record: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The metadata log file and the image it builds.
pub struct MetadataLog {
    path: PathBuf,
    file: File,
    image: ClusterImage,
    records: u64,
}

impl MetadataLog {
    /// Open (or create) the log at `dir/metadata.log` and replay it into an image.
    pub fn open(dir: &Path) -> Result<MetadataLog, StoreError> {
        let path = dir.join("metadata.log");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut image = ClusterImage::default();
        let mut good_len = 0u64;
        let mut records = 0;
        let mut reader = BufReader::new(file.try_clone().map_err(io)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                break; // torn write at the tail
            }
            match serde_json::from_slice::<MetadataRecord>(&line[..n - 1]) {
                Ok(rec) => {
                    image.apply(&rec);
                    records += 1;
                    good_len += n as u64;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), offset = good_len, error = %e,
                        "metadata log has an unreadable record; truncating there");
                    crate::note_corrupt_data();
                    break;
                }
            }
        }
        let len = file.metadata().map_err(io)?.len();
        if len != good_len {
            tracing::warn!(path = %path.display(), dropped_bytes = len - good_len,
                "truncating torn tail of the metadata log");
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(MetadataLog {
            path,
            file,
            image,
            records,
        })
    }

    /// Persist `records` with one write and one fsync, then apply them to the image.
    pub fn append_all(&mut self, records: &[MetadataRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record).map_err(|source| StoreError::Encode {
                path: self.path.clone(),
                source,
            })?;
            buf.push(b'\n');
        }
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        for record in records {
            self.image.apply(record);
        }
        self.records += records.len() as u64;
        Ok(())
    }

    /// Persist `record` (fsync) and then apply it to the image.
    pub fn append(&mut self, record: MetadataRecord) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(&record))
    }

    pub fn image(&self) -> &ClusterImage {
        &self.image
    }

    /// Records replayed or appended since open.
    pub fn record_count(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let mut log = MetadataLog::open(dir.path()).unwrap();
            log.append(MetadataRecord::Topic {
                name: "t".into(),
                id,
                partitions: 3,
                configs: BTreeMap::new(),
            })
            .unwrap();
            log.append(MetadataRecord::ProducerIds { next: 5000 })
                .unwrap();
        }
        // Simulate a crash in the middle of writing a third record.
        let path = dir.path().join("metadata.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"type":"RemoveTop"#).unwrap();
        drop(f);
        let mut log = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(log.image().topic("t").unwrap().partitions, 3);
        assert_eq!(log.image().next_producer_id(), 5000);
        assert_eq!(log.record_count(), 2);
        log.append(MetadataRecord::RemoveTopic { id }).unwrap();
        let log = MetadataLog::open(dir.path()).unwrap();
        assert!(log.image().topic("t").is_none());
        assert_eq!(log.record_count(), 3);
    }
}
