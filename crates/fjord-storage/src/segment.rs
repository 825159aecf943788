//! One log segment: `{base_offset:020}.log` plus its `.index` and `.timeindex`.
//!
//! The active (last) segment keeps its index in memory and grows it on append. Sealed segments
//! load their index from disk on first use (so opening a partition with many segments does not
//! read them), and rebuild it from the log if the files are missing or inconsistent.
//!
//! The log file itself is opened on first use, not when the log is opened: a broker with 100,000
//! partitions must not hold 100,000 file descriptors (or hit `ulimit -n`) before any of them is
//! read or written. Opening, recovery and creation leave the file closed.

use crate::error::StorageError;
use crate::index::SegmentIndex;
use bytes::Bytes;
use fjord_protocol::batch::{self, BatchError, BatchHeader, BatchIter, BATCH_HEADER_LEN};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `dir/{base:020}.{suffix}`
pub fn segment_path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// Read buffer size for sequential scans (recovery, index rebuild, compaction).
const SCAN_CHUNK: usize = 1 << 20;

/// How a scan over a file region ended.
#[derive(Debug)]
pub struct ScanEnd {
    /// Position after the last good batch.
    pub valid_end: u64,
    /// Why the scan stopped early, if it did.
    pub error: Option<BatchError>,
}

/// Walk the batches in `file[start..end)`, calling `f(position, header, batch_bytes)` for each
/// well-formed one (and CRC-valid, if `check_crc`). Stops at the first bad or truncated batch.
/// `f` returns false to stop early.
///
/// Reads the region in chunks of [`SCAN_CHUNK`] (or one batch, if larger) into one reused buffer
/// and walks each chunk with [`BatchIter`]; a batch cut by the end of a chunk is read again at
/// the start of the next, and only one cut by `end` is a truncated tail.
pub fn scan_file(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    check_crc: bool,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<bool, StorageError>,
) -> Result<ScanEnd, StorageError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = start;
    let mut want = SCAN_CHUNK;
    let stop = |valid_end, error| Ok(ScanEnd { valid_end, error });
    while pos < end {
        buf.resize((want as u64).min(end - pos) as usize, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io(path, e))?;
        let mut walked = 0;
        want = SCAN_CHUNK;
        for batch in BatchIter::new(&buf) {
            let b = match batch {
                Ok(b) => b,
                Err(BatchError::Truncated { needed, .. }) => {
                    let rest = end - (pos + walked as u64);
                    if needed as u64 > rest {
                        let have = rest as usize;
                        return stop(
                            pos + walked as u64,
                            Some(BatchError::Truncated { needed, have }),
                        );
                    }
                    // Cut by the chunk, not by `end`: read it whole from its start.
                    want = needed.max(SCAN_CHUNK);
                    break;
                }
                Err(e) => return stop(pos + walked as u64, Some(e)),
            };
            let at = pos + b.position as u64;
            if check_crc {
                if let Err(e) = batch::verify_crc(b.bytes, &b.header) {
                    return stop(at, Some(e));
                }
            }
            if !f(at, &b.header, b.bytes)? {
                return stop(pos + b.end() as u64, None);
            }
            walked = b.end();
        }
        pos += walked as u64;
    }
    stop(pos, None)
}

/// Whole batches as a byte range of a segment file: what a fetch sends. Holding it keeps the
/// file open; the connection writes it with `sendfile` (no copy through user space) or reads
/// it into memory ([`FileRange::read`]) when that is cheaper.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    position: u64,
    len: usize,
}

impl FileRange {
    pub fn file(&self) -> &File {
        &self.file
    }
    /// Where the bytes start in the file.
    pub fn position(&self) -> u64 {
        self.position
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes, read from the file (the page cache) into memory.
    pub fn read(&self) -> std::io::Result<Bytes> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

impl fjord_protocol::codec::RecordData for FileRange {
    fn len(&self) -> usize {
        self.len
    }
    fn to_bytes(&self) -> Result<Bytes, String> {
        self.read().map_err(|e| format!("cannot read records: {e}"))
    }
}

pub struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    /// Opened on first use (see the module docs).
    /// Shared so a [`FileRange`] handed to a connection keeps the file open (and its bytes
    /// readable) even if the segment is closed, deleted or replaced meanwhile.
    file: OnceLock<Arc<File>>,
    /// Bytes in the log file.
    pub size: u64,
    /// For the active segment: last offset + 1. For a sealed segment: an upper bound (the next
    /// segment's base offset), since we do not scan sealed segments on open.
    pub next_offset: i64,
    index: OnceLock<SegmentIndex>,
    /// Append state, meaningful for the active segment only.
    pub bytes_since_index: usize,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch: `segment.ms` is measured from it (as Kafka does).
    pub rolling_base_timestamp: Option<i64>,
    pub created_ms: i64,
}

impl Segment {
    fn open_file(path: &Path, create: bool) -> Result<File, StorageError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(path, e))
    }

    fn new(base_offset: i64, path: PathBuf, file: Option<File>, size: u64, now_ms: i64) -> Segment {
        let cell = OnceLock::new();
        if let Some(f) = file {
            let _ = cell.set(Arc::new(f));
        }
        Segment {
            base_offset,
            path,
            file: cell,
            size,
            next_offset: base_offset,
            index: OnceLock::new(),
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            rolling_base_timestamp: None,
            created_ms: now_ms,
        }
    }

    /// A new, empty active segment.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, StorageError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = Self::open_file(&path, true).and_then(|f| {
            f.set_len(0)
                .map(|_| f)
                .map_err(|e| StorageError::io(&path, e))
        })?;
        drop(file);
        let s = Segment::new(base_offset, path, None, 0, now_ms);
        let _ = s.index.set(SegmentIndex::default());
        Ok(s)
    }

    /// A sealed segment, without reading it. Its index loads on first use.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
    ) -> Result<Segment, StorageError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let meta = std::fs::metadata(&path).map_err(|e| StorageError::io(&path, e))?;
        let created = mtime_ms(&meta);
        let mut s = Segment::new(base_offset, path, None, meta.len(), created);
        s.next_offset = next_base;
        Ok(s)
    }

    /// Open a segment to become active. With `recover`, every batch is CRC-checked and the file
    /// is truncated after the last good batch; returns the bytes dropped. Without, the index
    /// from disk is trusted and only the tail after its last entry is scanned.
    ///
    /// `index_files`: both index files exist (the caller listed the directory); if not, they
    /// are not read. Also returns the index as the files hold it (`None` if absent or
    /// unusable), for [`Segment::index_equals`]. The log file is opened only if there is
    /// something to scan.
    pub fn open_active(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_files: bool,
        index_interval: usize,
    ) -> Result<(Segment, u64, Option<SegmentIndex>), StorageError> {
        let mut s = Segment::open_sealed(dir, base_offset, base_offset)?;
        let mut start = 0u64;
        let mut idx = SegmentIndex::default();
        let on_disk = if index_files {
            SegmentIndex::load(&s.index_path(), &s.time_index_path(), s.size)
        } else {
            None
        };
        if !recover {
            if let Some(loaded) = on_disk.clone() {
                start = loaded.offsets.last().map_or(0, |e| e.1 as u64);
                idx = loaded;
                // Entries at or after `start` are re-added by the scan below.
                idx.offsets.pop();
                if let Some(&(_, rel)) = idx.times.last() {
                    s.max_timestamp = idx.times.last().map_or(-1, |e| e.0);
                    s.offset_of_max_timestamp = base_offset + rel as i64;
                }
            }
        }
        let _ = s.index.set(idx);
        if start > 0 {
            // The first batch's timestamp is the roll base; read just its header.
            if let Some(h) = s.read_header_at(0)? {
                s.rolling_base_timestamp = Some(h.max_timestamp);
            }
            // Force an entry for the first batch scanned, which we popped above.
            s.bytes_since_index = index_interval;
        }
        let end = s.size;
        if start >= end {
            // Nothing to scan (an empty segment): the file stays closed.
            return Ok((s, 0, on_disk));
        }
        let file = s
            .file()?
            .try_clone()
            .map_err(|e| StorageError::io(&s.path, e))?;
        let path = s.path.clone();
        let scan = scan_file(&file, &path, start, end, recover, |pos, h, _| {
            s.track_batch(pos, h, index_interval);
            Ok(true)
        })?;
        let mut dropped = 0;
        if scan.valid_end < end {
            dropped = end - scan.valid_end;
            tracing::warn!(
                segment = %path.display(),
                valid_bytes = scan.valid_end,
                dropped_bytes = dropped,
                reason = ?scan.error,
                "recovery truncated segment"
            );
            s.file()?
                .set_len(scan.valid_end)
                .map_err(|e| StorageError::io(&path, e))?;
            s.size = scan.valid_end;
        }
        // Close it again: opened on first read or write.
        s.file.take();
        Ok((s, dropped, on_disk))
    }

    /// The log file, opened on first use.
    pub fn file(&self) -> Result<&Arc<File>, StorageError> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = Arc::new(Self::open_file(&self.path, false)?);
        Ok(self.file.get_or_init(|| f))
    }

    /// Whether the file is open (nothing can have been written through a closed one).
    pub fn is_open(&self) -> bool {
        self.file.get().is_some()
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension(INDEX_SUFFIX)
    }
    pub fn time_index_path(&self) -> PathBuf {
        self.path.with_extension(TIME_INDEX_SUFFIX)
    }

    /// The index, loading or rebuilding it on first use.
    pub fn index(&self) -> Result<&SegmentIndex, StorageError> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        crate::page_cache::simulate_cold_read();
        let idx = match SegmentIndex::load(&self.index_path(), &self.time_index_path(), self.size) {
            Some(i) => i,
            None => {
                tracing::info!(segment = %self.path.display(), "rebuilding segment index");
                self.rebuild_index(4096)?
            }
        };
        Ok(self.index.get_or_init(|| idx))
    }

    /// Build an index by scanning the log (sealed segments: the interval is not stored, so use
    /// Kafka's default).
    fn rebuild_index(&self, interval: usize) -> Result<SegmentIndex, StorageError> {
        let mut tmp = Segment::new(
            self.base_offset,
            self.path.clone(),
            Some(
                self.file()?
                    .try_clone()
                    .map_err(|e| StorageError::io(&self.path, e))?,
            ),
            self.size,
            0,
        );
        let _ = tmp.index.set(SegmentIndex::default());
        scan_file(
            self.file()?,
            &self.path,
            0,
            self.size,
            false,
            |pos, h, _| {
                tmp.track_batch(pos, h, interval);
                Ok(true)
            },
        )?;
        tmp.seal_index();
        Ok(tmp.index.take().expect("set above"))
    }

    /// The index [`Segment::index`] would rebuild for a sealed segment holding `batches`
    /// ((position, header), in order), without reading its file: the cleaner knows them as
    /// it writes the file.
    pub(crate) fn index_of_batches<'a>(
        base_offset: i64,
        batches: impl IntoIterator<Item = (u64, &'a BatchHeader)>,
        interval: usize,
    ) -> SegmentIndex {
        let mut tmp = Segment::new(base_offset, PathBuf::new(), None, 0, 0);
        let _ = tmp.index.set(SegmentIndex::default());
        for (pos, h) in batches {
            tmp.track_batch(pos, h, interval);
        }
        tmp.seal_index();
        tmp.index.take().expect("set above")
    }

    /// Use `idx` as the in-memory index (one built with [`Segment::index_of_batches`] for
    /// exactly this file), unless one is loaded already.
    pub(crate) fn set_index(&self, idx: SegmentIndex) {
        let _ = self.index.set(idx);
    }

    /// Make sure the index is in memory and return it mutably (for the active segment).
    pub fn index_mut(&mut self) -> Result<&mut SegmentIndex, StorageError> {
        self.index()?;
        Ok(self.index.get_mut().expect("loaded"))
    }

    /// Record a batch written at `pos` in the in-memory index and append state.
    pub fn track_batch(&mut self, pos: u64, h: &BatchHeader, interval: usize) {
        let base = self.base_offset;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        if self.rolling_base_timestamp.is_none() {
            self.rolling_base_timestamp = Some(h.max_timestamp);
        }
        let max_ts = self.max_timestamp;
        let add = self.bytes_since_index >= interval;
        let idx = self
            .index
            .get_mut()
            .expect("active segment index is loaded");
        if add {
            idx.offsets
                .push(((h.base_offset - base) as u32, pos as u32));
            if idx.times.last().is_none_or(|t| max_ts > t.0) {
                // Kafka's entry: (max timestamp so far, offset of the batch that reached it).
                idx.times
                    .push((max_ts, (self.offset_of_max_timestamp - base) as u32));
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_size();
        self.next_offset = h.last_offset() + 1;
        self.size = self.size.max(pos + h.total_size() as u64);
    }

    /// Final time-index entry so the segment's largest timestamp is on disk (Kafka does the
    /// same at roll).
    pub fn seal_index(&mut self) {
        // Point at the batch that first reached the max (ListOffsets MAX_TIMESTAMP wants the
        // earliest record with it); every record up to there is <= max_ts either way.
        let (max_ts, last) = (self.max_timestamp, self.offset_of_max_timestamp);
        let base = self.base_offset;
        if let Some(idx) = self.index.get_mut() {
            if max_ts >= 0 && idx.times.last().is_none_or(|t| max_ts > t.0) && last >= base {
                idx.times.push((max_ts, (last - base) as u32));
            }
        }
    }

    /// Whether the index files already hold the in-memory index (true if it is not in memory:
    /// nothing to write). Missing or unusable files match an empty index: loading them falls
    /// back to a scan that yields the same. Reads only.
    pub fn index_matches_disk(&self) -> bool {
        let Some(mem) = self.index.get() else {
            return true;
        };
        match SegmentIndex::load(&self.index_path(), &self.time_index_path(), self.size) {
            Some(disk) => disk == *mem,
            None => mem.offsets.is_empty() && mem.times.is_empty(),
        }
    }

    /// [`Segment::index_matches_disk`] against an index already read from the files (`None`:
    /// missing or unusable).
    pub fn index_equals(&self, on_disk: Option<&SegmentIndex>) -> bool {
        let Some(mem) = self.index.get() else {
            return true;
        };
        match on_disk {
            Some(disk) => disk == mem,
            None => mem.offsets.is_empty() && mem.times.is_empty(),
        }
    }

    /// Write index files if the index is in memory.
    pub fn write_index(&self) -> Result<(), StorageError> {
        if let Some(idx) = self.index.get() {
            idx.write(&self.index_path(), &self.time_index_path())?;
        }
        Ok(())
    }

    pub fn index_full(&self, segment_index_bytes: usize) -> bool {
        match self.index.get() {
            Some(i) => {
                i.offsets.len() + 1 >= segment_index_bytes / crate::index::OFFSET_ENTRY_SIZE
                    || i.times.len() + 1 >= segment_index_bytes / crate::index::TIME_ENTRY_SIZE
            }
            None => false,
        }
    }

    /// Largest timestamp in the segment, for time retention and the compaction lag; file mtime
    /// if its records carry none (as Kafka), `i64::MIN` if it is empty.
    pub fn largest_timestamp(&self) -> Result<i64, StorageError> {
        if self.size == 0 {
            // Emptied by compaction (or new): no record to keep; mtime would mislead.
            return Ok(i64::MIN);
        }
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        if let Some((ts, _)) = self.index()?.max_timestamp() {
            return Ok(ts);
        }
        let meta = self
            .file()?
            .metadata()
            .map_err(|e| StorageError::io(&self.path, e))?;
        Ok(mtime_ms(&meta))
    }

    /// Header of the batch at `pos`, or None at end of file / torn tail.
    pub fn read_header_at(&self, pos: u64) -> Result<Option<BatchHeader>, StorageError> {
        if pos + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut hdr = [0u8; BATCH_HEADER_LEN];
        self.file()?
            .read_exact_at(&mut hdr, pos)
            .map_err(|e| StorageError::io(&self.path, e))?;
        match batch::parse_header_prefix(&hdr) {
            Ok(h) if pos + h.total_size() as u64 <= self.size => Ok(Some(h)),
            // A length that runs past the end (or cannot be a batch): a torn tail.
            Ok(_) | Err(BatchError::InvalidLength(_)) => Ok(None),
            Err(e) => Err(StorageError::Corrupt {
                path: self.path.clone(),
                reason: format!("batch at {pos}: {e}"),
            }),
        }
    }

    /// Position and header of the first batch whose last offset >= `offset`, starting from
    /// the index. None if the segment has no such batch.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut pos = self.index()?.lookup_offset(rel) as u64;
        while let Some(h) = self.read_header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The end of the whole batches that start at `from` (a batch boundary) and end at or
    /// below the file position `limit`: `from` itself if the first batch does not fit.
    /// Walks batch headers from the last indexed batch at or below `limit`, so at most about
    /// one index interval of headers is read, whatever the distance from `from`.
    pub fn whole_batches_end(&self, from: u64, limit: u64) -> Result<u64, StorageError> {
        let limit = limit.min(self.size);
        let indexed = u64::from(
            self.index()?
                .lookup_position(limit.min(u64::from(u32::MAX)) as u32),
        );
        let mut end = from.max(indexed);
        while let Some(h) = self.read_header_at(end)? {
            let next = end + h.total_size() as u64;
            if next > limit {
                break;
            }
            end = next;
        }
        Ok(end)
    }

    /// The file position of the first batch whose base offset is >= `offset` (the segment's
    /// size if none): where a read bounded by `offset` (a high watermark) stops. A batch that
    /// straddles `offset` is included, as a read of whole batches includes it.
    pub fn position_of_offset(&self, offset: i64) -> Result<u64, StorageError> {
        Ok(match self.find_batch(offset)? {
            Some((pos, h)) if h.base_offset >= offset => pos,
            Some((pos, h)) => pos + h.total_size() as u64,
            None => self.size,
        })
    }

    /// `len` bytes from `pos`, as a range of the open file (no bytes are read).
    pub fn range(&self, pos: u64, len: usize) -> Result<FileRange, StorageError> {
        Ok(FileRange {
            file: self.file()?.clone(),
            position: pos,
            len,
        })
    }

    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len];
        self.file()?
            .read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io(&self.path, e))?;
        Ok(buf)
    }

    /// Cut the segment so it holds only batches with base offset < `offset`.
    pub fn truncate_to(&mut self, offset: i64, index_interval: usize) -> Result<(), StorageError> {
        let cut = match self.find_batch(offset)? {
            Some((pos, h)) if h.base_offset >= offset => pos,
            // A batch straddles `offset`: Kafka truncates at batch granularity too.
            Some((pos, _)) => pos,
            None => self.size,
        };
        self.file()?
            .set_len(cut)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.size = cut;
        // Rebuild the in-memory state from what is left.
        self.index = OnceLock::new();
        let _ = self.index.set(SegmentIndex::default());
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.rolling_base_timestamp = None;
        self.next_offset = self.base_offset;
        let file = self
            .file()?
            .try_clone()
            .map_err(|e| StorageError::io(&self.path, e))?;
        let path = self.path.clone();
        scan_file(&file, &path, 0, cut, false, |pos, h, _| {
            self.track_batch(pos, h, index_interval);
            Ok(true)
        })?;
        Ok(())
    }

    /// Replace the in-memory index (after compaction rewrote the file).
    pub fn reset_index(&mut self) {
        self.index = OnceLock::new();
    }
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified().map_or(0, fjord_protocol::clock::unix_ms)
}
