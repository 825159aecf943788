//! The metadata feed: how a reader (a broker, or the RPC server for a remote broker) follows the
//! committed metadata log of one controller without touching Raft.
//!
//! The state machine keeps the most recent applied records in a [`RecordWindow`] and signals each
//! new metadata offset on a `watch` channel. [`MetadataFeed::fetch`] answers from the window, or
//! with the whole image as records ([`MetadataChunk::Snapshot`]) when the reader is further behind
//! than the window reaches, as Kafka's brokers load a metadata snapshot before following the log.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::state_machine::MetadataState;
use crate::{ClusterImage, MetadataRecord};

/// Records kept in the window unless configured otherwise.
pub const DEFAULT_WINDOW_RECORDS: usize = 100_000;

/// Most records in one [`MetadataChunk::Records`].
pub const MAX_CHUNK_RECORDS: usize = 10_000;

/// An answer to a metadata fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataChunk {
    /// Records starting at metadata offset `base` (may be empty when nothing new arrived within
    /// max_wait).
    Records {
        base: i64,
        records: Vec<MetadataRecord>,
    },
    /// The caller is behind the retained window: replace the image with these records
    /// ([`ClusterImage::to_records`] of the current image); the next offset is `offset`.
    Snapshot {
        offset: i64,
        records: Vec<MetadataRecord>,
    },
}

impl MetadataChunk {
    /// The metadata offset a reader is at after applying this chunk.
    pub fn next_offset(&self) -> i64 {
        match self {
            MetadataChunk::Records { base, records } => base + records.len() as i64,
            MetadataChunk::Snapshot { offset, .. } => *offset,
        }
    }
}

/// The most recent applied records: `records[i]` has metadata offset `base + i`, and
/// `base + len` is the next offset. Holds at most `cap` records, dropping the oldest.
#[derive(Debug, Clone)]
pub struct RecordWindow {
    records: VecDeque<MetadataRecord>,
    base: i64,
    cap: usize,
}

impl Default for RecordWindow {
    fn default() -> Self {
        RecordWindow::new(DEFAULT_WINDOW_RECORDS)
    }
}

impl RecordWindow {
    /// An empty window at offset 0 keeping up to `cap` records.
    pub fn new(cap: usize) -> RecordWindow {
        RecordWindow {
            records: VecDeque::new(),
            base: 0,
            cap,
        }
    }

    /// The offset of the oldest record kept.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// The offset the next record will have.
    pub fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    pub fn push(&mut self, record: MetadataRecord) {
        self.records.push_back(record);
        while self.records.len() > self.cap {
            self.records.pop_front();
            self.base += 1;
        }
    }

    /// Forget every record: the next one has offset `offset` (a snapshot was loaded).
    pub fn reset(&mut self, offset: i64) {
        self.records.clear();
        self.base = offset;
    }

    /// Up to `max` records from offset `from` (fewer at the end of the window); `None` when
    /// `from` is older than the window.
    pub fn read(&self, from: i64, max: usize) -> Option<Vec<MetadataRecord>> {
        if from < self.base {
            return None;
        }
        let skip = usize::try_from(from - self.base).unwrap_or(usize::MAX);
        Some(self.records.iter().skip(skip).take(max).cloned().collect())
    }
}

/// A reader of one node's applied metadata. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetadataFeed {
    state: Arc<RwLock<MetadataState>>,
    offsets: Arc<watch::Sender<i64>>,
}

impl MetadataFeed {
    pub(crate) fn new(state: Arc<RwLock<MetadataState>>, offsets: Arc<watch::Sender<i64>>) -> Self {
        MetadataFeed { state, offsets }
    }

    /// Records from metadata offset `from`. When there are none yet (`from` is the current
    /// offset, or ahead of it), waits up to `max_wait` for some and otherwise answers an empty
    /// [`MetadataChunk::Records`] at `from`. A reader older than the window gets a snapshot.
    pub async fn fetch(&self, from: i64, max_wait: Duration) -> MetadataChunk {
        // Subscribe before reading: an offset published after the read wakes us.
        let mut changes = self.offsets.subscribe();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if let Some(chunk) = self.read(from) {
                return chunk;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (the sender lives as long as the feed, so `changed` cannot fail).
                _ => {
                    return MetadataChunk::Records {
                        base: from,
                        records: Vec::new(),
                    }
                }
            }
        }
    }

    /// What is available from `from` right now; `None` when nothing is.
    fn read(&self, from: i64) -> Option<MetadataChunk> {
        let state = self.state.read().expect("state lock");
        if from >= state.offset {
            return None;
        }
        Some(match state.window.read(from, MAX_CHUNK_RECORDS) {
            Some(records) => MetadataChunk::Records {
                base: from,
                records,
            },
            None => MetadataChunk::Snapshot {
                offset: state.offset,
                records: state.image.to_records(),
            },
        })
    }

    /// The next metadata offset (records applied on this node).
    pub fn offset(&self) -> i64 {
        self.state.read().expect("state lock").offset
    }

    /// The image at [`offset`](Self::offset), and that offset.
    pub fn image(&self) -> (ClusterImage, i64) {
        let state = self.state.read().expect("state lock");
        (state.image.clone(), state.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> MetadataRecord {
        MetadataRecord::ProducerIds { next: i }
    }

    #[test]
    fn window_keeps_the_newest_records() {
        let mut w = RecordWindow::new(3);
        assert_eq!((w.base(), w.end()), (0, 0));
        assert_eq!(w.read(0, 10), Some(vec![]));
        for i in 0..5 {
            w.push(record(i));
        }
        assert_eq!((w.base(), w.end()), (2, 5));
        assert_eq!(w.read(1, 10), None);
        assert_eq!(w.read(2, 10), Some(vec![record(2), record(3), record(4)]));
        assert_eq!(w.read(3, 1), Some(vec![record(3)]));
        assert_eq!(w.read(5, 10), Some(vec![]));
        w.reset(42);
        assert_eq!((w.base(), w.end()), (42, 42));
        assert_eq!(w.read(41, 10), None);
        w.push(record(42));
        assert_eq!(w.read(42, 10), Some(vec![record(42)]));
    }

    #[test]
    fn zero_window_keeps_nothing() {
        let mut w = RecordWindow::new(0);
        w.push(record(0));
        assert_eq!((w.base(), w.end()), (1, 1));
        assert_eq!(w.read(0, 10), None);
    }

    fn feed_with(records: i64, cap: usize) -> (MetadataFeed, Arc<RwLock<MetadataState>>) {
        let state = MetadataState {
            window: RecordWindow::new(cap),
            ..Default::default()
        };
        let state = Arc::new(RwLock::new(state));
        let feed = MetadataFeed::new(state.clone(), Arc::new(watch::channel(0).0));
        for i in 0..records {
            push(&feed, &state, record(i));
        }
        (feed, state)
    }

    fn push(feed: &MetadataFeed, state: &RwLock<MetadataState>, r: MetadataRecord) {
        let offset = {
            let mut s = state.write().unwrap();
            s.image.apply(&r);
            s.window.push(r);
            s.offset += 1;
            s.offset
        };
        feed.offsets.send_replace(offset);
    }

    #[tokio::test]
    async fn fetch_reads_the_window_and_snapshots_behind_it() {
        let (feed, _) = feed_with(6, 4);
        let none = Duration::ZERO;
        assert_eq!(
            feed.fetch(3, none).await,
            MetadataChunk::Records {
                base: 3,
                records: vec![record(3), record(4), record(5)]
            }
        );
        let MetadataChunk::Snapshot { offset, records } = feed.fetch(1, none).await else {
            panic!("expected a snapshot")
        };
        assert_eq!(offset, 6);
        assert_eq!(&ClusterImage::from_records(&records), &feed.image().0);
        for from in [6, 9] {
            assert_eq!(
                feed.fetch(from, Duration::from_millis(20)).await,
                MetadataChunk::Records {
                    base: from,
                    records: vec![]
                }
            );
        }
    }

    #[tokio::test]
    async fn fetch_waits_for_the_next_record() {
        let (feed, state) = feed_with(2, 10);
        let waiter = tokio::spawn({
            let feed = feed.clone();
            async move { feed.fetch(2, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        push(&feed, &state, record(2));
        let chunk = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("long poll woke up")
            .unwrap();
        assert_eq!(
            chunk,
            MetadataChunk::Records {
                base: 2,
                records: vec![record(2)]
            }
        );
        assert_eq!(chunk.next_offset(), 3);
    }
}
