//! The metadata feed: how a reader (a broker, or the RPC server for a remote broker) follows the
//! committed metadata log of one controller without touching Raft.
//!
//! The state machine keeps the most recent applied records in a [`RecordWindow`] and signals each
//! new metadata offset on a `watch` channel. [`MetadataFeed::fetch`] answers from the window, or
//! with the whole image ([`MetadataChunk::Image`]) when the reader is further behind
//! than the window reaches, as Kafka's brokers load a metadata snapshot before following the log.
//!
//! The image as records is built once and shared ([`ImageRecords`]) by every reader that falls
//! behind while it still joins the window; remote readers get it in parts of at most
//! [`MAX_PART_BYTES`] encoded (a million replicas make a 58 MiB image, more than one frame may
//! carry), each part asked for by the image's offset.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::state_machine::MetadataState;
use crate::{ClusterImage, MetadataRecord};

/// Records kept in the window unless configured otherwise.
pub const DEFAULT_WINDOW_RECORDS: usize = 100_000;

/// Most records in one [`MetadataChunk::Records`].
pub const MAX_CHUNK_RECORDS: usize = 10_000;

/// Largest encoded size of one part of an image sent to a remote reader (one record larger than
/// this makes a part of its own).
pub const MAX_PART_BYTES: usize = 4 << 20;

/// How long an image as records is kept after its last reader asked for it.
const IMAGE_IDLE: Duration = Duration::from_secs(30);

/// An answer to a metadata fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataChunk {
    /// Records starting at metadata offset `base` (may be empty when nothing new arrived within
    /// max_wait).
    Records {
        base: i64,
        records: Vec<MetadataRecord>,
    },
    /// The caller is behind the retained window: replace its image with this one; the next
    /// offset is `offset`. Never on the wire: a remote reader gets the image as records in
    /// parts ([`ImagePart`]) and builds it as they arrive.
    #[serde(skip)]
    Image {
        offset: i64,
        image: Box<ClusterImage>,
    },
}

impl MetadataChunk {
    /// The metadata offset a reader is at after applying this chunk.
    pub fn next_offset(&self) -> i64 {
        match self {
            MetadataChunk::Records { base, records } => base + records.len() as i64,
            MetadataChunk::Image { offset, .. } => *offset,
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

/// The image at metadata offset `offset` as records ([`ClusterImage::to_records`]), shared by the
/// readers that load it, and cut into parts for the wire on first use.
#[derive(Debug)]
pub struct ImageRecords {
    pub offset: i64,
    pub records: Vec<MetadataRecord>,
    parts: OnceLock<Vec<Range<usize>>>,
}

/// One part of an [`ImageRecords`] as sent to a remote reader: `records` are part `part` of
/// `parts`, in order; the reader is at `offset` once it has applied all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePart {
    pub offset: i64,
    pub part: u32,
    pub parts: u32,
    pub records: Vec<MetadataRecord>,
}

impl ImageRecords {
    pub fn new(offset: i64, records: Vec<MetadataRecord>) -> ImageRecords {
        ImageRecords {
            offset,
            records,
            parts: OnceLock::new(),
        }
    }

    /// The records cut into runs of at most `max_bytes` encoded (a record larger than that is
    /// a run of its own); at least one run, empty for an empty image.
    fn runs(&self, max_bytes: usize) -> Vec<Range<usize>> {
        let mut runs = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, r) in self.records.iter().enumerate() {
            let size = encoded_len(r);
            if i > start && bytes + size > max_bytes {
                runs.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += size + 1;
        }
        runs.push(start..self.records.len());
        runs
    }

    /// Part `part` of runs of at most `max_bytes` encoded, or `None` past the last. The runs
    /// are cut on the first call; later calls keep them whatever their `max_bytes`.
    pub fn part(&self, part: u32, max_bytes: usize) -> Option<ImagePart> {
        let ranges = self.parts.get_or_init(|| self.runs(max_bytes));
        let range = ranges.get(usize::try_from(part).ok()?)?;
        Some(ImagePart {
            offset: self.offset,
            part,
            parts: ranges.len().try_into().unwrap_or(u32::MAX),
            records: self.records[range.clone()].to_vec(),
        })
    }
}

/// The length of `record` encoded as JSON, without keeping the bytes.
fn encoded_len(record: &MetadataRecord) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can encoding a record.
    let _ = serde_json::to_writer(&mut count, record);
    count.0
}

/// What a reader gets: records from the window, or the shared image.
#[derive(Debug, Clone)]
pub enum FeedChunk {
    Records {
        base: i64,
        records: Vec<MetadataRecord>,
    },
    Image(Arc<ImageRecords>),
}

/// The image last built for readers behind the window, and when one last asked for it.
#[derive(Debug, Default)]
struct SharedImage {
    image: Option<Arc<ImageRecords>>,
    used: Option<Instant>,
}

/// A reader of one node's applied metadata. Cheap to clone; clones share the image built for
/// readers behind the window.
#[derive(Debug, Clone)]
pub struct MetadataFeed {
    state: Arc<RwLock<MetadataState>>,
    offsets: Arc<watch::Sender<i64>>,
    shared: Arc<Mutex<SharedImage>>,
}

impl MetadataFeed {
    pub(crate) fn new(state: Arc<RwLock<MetadataState>>, offsets: Arc<watch::Sender<i64>>) -> Self {
        MetadataFeed {
            state,
            offsets,
            shared: Arc::default(),
        }
    }

    /// Records from metadata offset `from`. When there are none yet (`from` is the current
    /// offset, or ahead of it), waits up to `max_wait` for some and otherwise answers an empty
    /// [`MetadataChunk::Records`] at `from`. A reader older than the window gets a snapshot.
    pub async fn fetch(&self, from: i64, max_wait: Duration) -> MetadataChunk {
        match self.fetch_shared(from, max_wait).await {
            FeedChunk::Records { base, records } => MetadataChunk::Records { base, records },
            FeedChunk::Image(shared) => {
                let offset = shared.offset;
                // Half a second of CPU at a million replicas: off the async workers.
                let image = tokio::task::spawn_blocking(move || {
                    ClusterImage::from_records(&shared.records)
                })
                .await
                .expect("building an image from records does not panic");
                MetadataChunk::Image {
                    offset,
                    image: Box::new(image),
                }
            }
        }
    }

    /// [`fetch`](Self::fetch) with the image shared rather than copied.
    pub async fn fetch_shared(&self, from: i64, max_wait: Duration) -> FeedChunk {
        // Subscribe before reading: an offset published after the read wakes us.
        let mut changes = self.offsets.subscribe();
        let deadline = Instant::now() + max_wait;
        loop {
            if let Some(chunk) = self.read(from) {
                return chunk;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (the sender lives as long as the feed, so `changed` cannot fail).
                _ => {
                    return FeedChunk::Records {
                        base: from,
                        records: Vec::new(),
                    }
                }
            }
        }
    }

    /// What is available from `from` right now; `None` when nothing is.
    fn read(&self, from: i64) -> Option<FeedChunk> {
        let mut shared = self.shared.lock().expect("shared image lock");
        let state = self.state.read().expect("state lock");
        let now = Instant::now();
        if shared
            .used
            .is_some_and(|t| now.duration_since(t) > IMAGE_IDLE)
        {
            shared.image = None;
        }
        if from >= state.offset {
            return None;
        }
        if let Some(records) = state.window.read(from, MAX_CHUNK_RECORDS) {
            return Some(FeedChunk::Records {
                base: from,
                records,
            });
        }
        // Behind the window: the shared image serves while a reader at its offset can go on
        // from the window.
        let image = match &shared.image {
            Some(i) if i.offset >= state.window.base() => i.clone(),
            _ => {
                let i = Arc::new(ImageRecords::new(state.offset, state.image.to_records()));
                shared.image = Some(i.clone());
                i
            }
        };
        shared.used = Some(now);
        Some(FeedChunk::Image(image))
    }

    /// The shared image at metadata offset `offset`, if it is still held (a remote reader
    /// fetching its parts).
    pub fn shared_image(&self, offset: i64) -> Option<Arc<ImageRecords>> {
        let mut shared = self.shared.lock().expect("shared image lock");
        let image = shared.image.clone().filter(|i| i.offset == offset)?;
        shared.used = Some(Instant::now());
        Some(image)
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
        let MetadataChunk::Image { offset, image } = feed.fetch(1, none).await else {
            panic!("expected the image")
        };
        assert_eq!(offset, 6);
        assert_eq!(*image, feed.image().0);
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

    #[test]
    fn image_parts_cover_the_records_in_order_within_the_byte_limit() {
        let records: Vec<_> = (0..100).map(record).collect();
        let image = ImageRecords::new(7, records.clone());
        let max = 200;
        let first = image.part(0, max).unwrap();
        assert!(first.parts > 1, "{first:?}");
        let mut all = Vec::new();
        for part in 0..first.parts {
            let p = image.part(part, max).unwrap();
            assert_eq!((p.offset, p.part, p.parts), (7, part, first.parts));
            let bytes: usize = p.records.iter().map(|r| encoded_len(r) + 1).sum();
            assert!(
                bytes <= max + 1 || p.records.len() == 1,
                "part {part}: {bytes}"
            );
            assert!(!p.records.is_empty());
            all.extend(p.records);
        }
        assert_eq!(all, records);
        assert_eq!(image.part(first.parts, max), None);
        // One record larger than the limit is a part of its own; an empty image is one part.
        let tiny = ImageRecords::new(1, records[..3].to_vec());
        assert_eq!(tiny.part(0, 1).unwrap().parts, 3);
        let empty = ImageRecords::new(0, Vec::new()).part(0, max).unwrap();
        assert_eq!((empty.parts, empty.records.len()), (1, 0));
    }

    #[tokio::test]
    async fn readers_behind_the_window_share_one_image_while_it_joins_the_window() {
        let (feed, state) = feed_with(6, 4);
        let none = Duration::ZERO;
        let FeedChunk::Image(a) = feed.fetch_shared(1, none).await else {
            panic!("expected the image")
        };
        assert_eq!(a.offset, 6);
        push(&feed, &state, record(6));
        // The window still reaches offset 6: the same image serves the next reader.
        let FeedChunk::Image(b) = feed.fetch_shared(0, none).await else {
            panic!("expected the image")
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert!(feed.shared_image(6).is_some());
        for i in 7..11 {
            push(&feed, &state, record(i));
        }
        // Offset 6 has left the window: a new image, and the old one is gone.
        let FeedChunk::Image(c) = feed.fetch_shared(0, none).await else {
            panic!("expected the image")
        };
        assert_eq!(c.offset, 11);
        assert_eq!(&ClusterImage::from_records(&c.records), &feed.image().0);
        assert!(feed.shared_image(6).is_none());
        assert!(feed.shared_image(11).is_some());
    }
}
