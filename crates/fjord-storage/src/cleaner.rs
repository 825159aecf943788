//! Log compaction (stub).
use crate::error::StorageError;
use crate::log::Log;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerCheckpoint {
    pub first_dirty_offset: i64,
}
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CleanReport {}
impl CleanerCheckpoint {
    pub fn load(_dir: &Path) -> Result<Self, StorageError> {
        Ok(Self::default())
    }
    pub fn persist(&self, _dir: &Path) -> Result<(), StorageError> {
        Ok(())
    }
    pub fn forget_segment(&mut self, _b: i64) {}
    pub fn truncate(&mut self, _leo: i64) {}
}
pub fn maybe_clean(_log: &mut Log, _now: i64) -> Result<Option<CleanReport>, StorageError> {
    Ok(None)
}
