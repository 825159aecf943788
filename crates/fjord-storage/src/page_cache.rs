//! Whether a file range is in the page cache, so that a read of it will not wait for the disk.
//!
//! A fetch's records are sent with `sendfile` or read with `pread` on the async worker that
//! serves the connection. Both wait for the disk when the pages are not cached — a consumer
//! catching up from old segments, a follower restarting — and a worker that waits stalls
//! every connection it serves. [`is_cached`] asks the kernel (`cachestat(2)`, Linux 6.5+,
//! one system call, no I/O, no mapping) so the fetch path can read cold ranges on a blocking
//! thread instead, and keep the worker for the hot ones.
//!
//! [`simulate_cold_read`] makes first reads of sealed segments slow on demand (tests).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The kernel said `cachestat` does not exist (or is not allowed): stop asking.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `true` when every page of `[pos, pos + len)` of `file` is in the page cache, `false` when
/// some page is not (a read would go to the disk), `None` when the kernel cannot tell (a
/// kernel before 6.5, another OS): callers then read as if cached.
pub fn is_cached(file: &File, pos: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let cached_pages = cached_pages(file, pos, len)?;
    let page = page_size();
    let first = pos / page;
    let last = (pos + len - 1) / page;
    Some(cached_pages > last - first)
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(target_os = "linux")]
fn cached_pages(file: &File, pos: u64, len: u64) -> Option<u64> {
    /// `struct cachestat_range` of `<linux/mman.h>`.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// `struct cachestat` of `<linux/mman.h>`.
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // The same number on every architecture (syscalls added since Linux 5.1 share one table).
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: pos, len };
    let mut stat = Stat::default();
    // SAFETY: `cachestat(fd, range, stat, flags)` reads `range` and writes `stat`, both live,
    // properly laid out (`repr(C)`, the kernel's field order) and exclusively borrowed for
    // the call; an invalid fd is reported as EBADF, not undefined behaviour.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if r == 0 {
        return Some(stat.nr_cache);
    }
    let err = std::io::Error::last_os_error();
    if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
        UNSUPPORTED.store(true, Ordering::Relaxed);
        tracing::info!(
            "the kernel has no cachestat(2): fetches cannot tell cold reads from cached ones"
        );
    }
    None
}

#[cfg(not(target_os = "linux"))]
fn cached_pages(_file: &File, _pos: u64, _len: u64) -> Option<u64> {
    UNSUPPORTED.store(true, Ordering::Relaxed);
    None
}

/// Artificial delay in milliseconds for the first read of a sealed segment (loading its
/// index), `u64::MAX` until read from `FJORD_DEBUG_COLD_READ_DELAY_MS`: a cold disk on demand,
/// for tests that prove such reads never run on an async worker.
static COLD_READ_DELAY_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sleep as long as `FJORD_DEBUG_COLD_READ_DELAY_MS` says (normally zero: no sleep). Called
/// where a segment is first read from the disk.
pub fn simulate_cold_read() {
    let mut ms = COLD_READ_DELAY_MS.load(Ordering::Relaxed);
    if ms == u64::MAX {
        ms = std::env::var("FJORD_DEBUG_COLD_READ_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(u64::MAX - 1);
        COLD_READ_DELAY_MS.store(ms, Ordering::Relaxed);
    }
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Written, synced and dropped from the cache: cold; read back: cached.
    #[test]
    fn tells_cold_pages_from_cached_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        if is_cached(&f, 0, 1 << 20).is_none() {
            eprintln!("no cachestat(2) on this kernel: nothing to check");
            return;
        }
        assert_eq!(is_cached(&f, 0, 0), Some(true));
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert_eq!(is_cached(&f, 0, 1 << 20), Some(false));
        assert_eq!(is_cached(&f, 4096, 10), Some(false));
        let mut buf = vec![0u8; 8192];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 4096).unwrap();
        assert_eq!(is_cached(&f, 4096, 8192), Some(true));
        assert_eq!(is_cached(&f, 4100, 100), Some(true));
        assert_eq!(is_cached(&f, 0, 1 << 20), Some(false));
    }
}
