//! The log manager: partition directories under `log.dirs` — opening partition logs (on many
//! threads at startup), closing them, deleting the directories of replicas and topics that
//! left this broker (stray and stale ones too), and `meta.properties`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fjord_storage::{Log, LogConfig};
use uuid::Uuid;

use super::{Broker, Topics, METADATA_DIR, PARTITION_METADATA_FILE, QUORUM_DIR};
use crate::partition::{Partition, ReplicaState};

impl Broker {
    /// Take the log of a partition this broker no longer hosts a replica of out of it and
    /// delete its directory (moved aside at once, removed in the background).
    pub(super) fn delete_replica(&self, p: &Arc<Partition>, state: &ReplicaState) {
        if p.take_log().is_none() {
            return;
        }
        self.metrics.partitions.dec();
        self.metrics.replicas_deleted.inc();
        let dir = partition_dir(&self.config.log_dir, &p.topic, p.index);
        tracing::info!(topic = %p.topic, partition = p.index, replicas = ?state.replicas,
            dir = %dir.display(),
            "replica moved off this broker: partition log deleted");
        discard_dirs(vec![self.doomed(&dir, p.topic_id, state.partition_epoch)]);
    }

    /// Where to move a partition directory before removing it: a name no live partition
    /// uses (`*-delete`, also removed at startup if a crash interrupts the removal).
    fn doomed(&self, dir: &Path, topic_id: Uuid, epoch: i32) -> Option<PathBuf> {
        let name = dir.file_name()?.to_string_lossy().to_string();
        let to = self
            .config
            .log_dir
            .join(format!("{name}.{}.{epoch}-delete", topic_id.simple()));
        match std::fs::rename(dir, &to) {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot move a partition directory aside for deletion");
                None
            }
        }
    }

    /// Delete directories of partitions whose replicas do not include this broker (a
    /// reassignment moved them while it was down). Call once the broker has applied the
    /// metadata log up to its own registration: the image then holds everything decided
    /// before this process started, so a replica it does not list is not coming back (a later
    /// reassignment back here starts a fresh copy). One listing of `log.dirs`, under the
    /// publishing lock (no log is opened meanwhile); partitions of unknown topics and without
    /// a state are left alone. Blocking: file-system calls.
    pub fn remove_stray_partition_dirs(&self) {
        let _one_at_a_time = self.publishing.lock();
        let Ok(entries) = std::fs::read_dir(&self.config.log_dir) else {
            return;
        };
        let me = self.node_id();
        let image = self.image.read();
        let mut doomed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with("-delete") || name == METADATA_DIR || name == QUORUM_DIR {
                continue;
            }
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let (Some(t), Ok(index)) = (image.topic(topic), index.parse::<u32>()) else {
                continue;
            };
            let Some(state) = image.partition(&t.id, index) else {
                continue;
            };
            if state.replicas.contains(&me) || !e.path().is_dir() {
                continue;
            }
            // Never one whose log is open here (it is still being served).
            if self
                .partition(topic, index as i32)
                .is_some_and(|p| p.has_log())
            {
                continue;
            }
            tracing::info!(topic, partition = index, replicas = ?state.replicas,
                dir = %e.path().display(),
                "this broker is no longer a replica of the partition: deleting its stray log");
            self.metrics.replicas_deleted.inc();
            doomed.push(self.doomed(&e.path(), t.id, state.partition_epoch));
        }
        drop(image);
        discard_dirs(doomed);
    }

    /// Flush and close every log (clean shutdown: the next start skips recovery).
    pub fn close_logs(&self) {
        for p in self.all_partitions() {
            if let Some(log) = p.take_log() {
                let dir = log.dir().to_path_buf();
                if let Err(e) = log.close() {
                    tracing::warn!(dir = %dir.display(), error = %e, "closing log failed");
                }
            }
        }
    }
}

/// Remove directories already moved aside, on a background thread.
fn discard_dirs(doomed: Vec<Option<PathBuf>>) {
    let doomed: Vec<PathBuf> = doomed.into_iter().flatten().collect();
    if doomed.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for d in doomed {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot remove a deleted partition directory");
            }
        }
    });
}

pub fn partition_dir(root: &Path, topic: &str, index: i32) -> PathBuf {
    root.join(format!("{topic}-{index}"))
}

/// Threads opening logs at startup. Each open is a few small synchronous file-system calls
/// (a directory listing, a `stat`, a small read); with a cold cache each waits on a random
/// read, so many threads keep the device busy. 100,000 partitions on 2 cores, after
/// `drop_caches`: 8 threads 10.7-26 s, 32 threads 6.8-7.2 s, 64 threads 5.6-6.5 s; with a
/// warm cache all ~1.5 s.
const LOG_OPEN_THREADS: usize = 64;

/// Open the logs of `work` on [`LOG_OPEN_THREADS`] threads and install each in its partition
/// as soon as it is open; returns how many opened. Logs are installed where they are opened
/// rather than collected: 100,000 of them in one vector is ~50 MB, and growing it leaves the
/// allocator holding more.
pub(super) fn open_logs(
    root: &Path,
    work: &[(Arc<Partition>, Arc<LogConfig>)],
    metrics: &crate::metrics::Metrics,
) -> usize {
    use std::sync::atomic::AtomicUsize;
    let open_one = |(p, c): &(Arc<Partition>, Arc<LogConfig>)| -> bool {
        match open_partition_log(root, &p.topic, p.topic_id, p.index, c) {
            Ok((log, report)) => {
                // A torn tail after a crash is routine (storage warns); lost files or
                // segments are not.
                if !report.corrupt_files.is_empty() || report.deleted_segments > 0 {
                    tracing::error!(topic = %p.topic, partition = p.index,
                        corrupt_files = report.corrupt_files.len(),
                        truncated_bytes = report.truncated_bytes,
                        deleted_segments = report.deleted_segments,
                        "partition log opened without data that was unreadable on disk");
                }
                if !report.is_clean() {
                    metrics.note_log_open(&report);
                }
                p.install_log(log);
                true
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %format!("{e:#}"), "cannot open partition log");
                false
            }
        }
    };
    if work.len() < 8 {
        return work.iter().filter(|w| open_one(w)).count();
    }
    let threads = LOG_OPEN_THREADS.min(work.len());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut opened = 0;
                    while let Some(w) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        opened += open_one(w) as usize;
                    }
                    opened
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("log opening thread panicked"))
            .sum()
    })
}

/// Open a partition directory, first moving aside one that belongs to an older topic of the
/// same name (its `partition.metadata` names another topic id).
fn open_partition_log(
    root: &Path,
    topic: &str,
    id: Uuid,
    index: i32,
    config: &LogConfig,
) -> anyhow::Result<(Log, fjord_storage::OpenReport)> {
    let dir = partition_dir(root, topic, index);
    let meta = dir.join(PARTITION_METADATA_FILE);
    let expected = format!("version: 0\ntopic_id: {id}\n");
    // The common case on a restart (the file names this topic) costs one open and read.
    let found = read_small_file(&meta, expected.len());
    if !matches!(&found, Ok(s) if *s == expected.as_bytes()) {
        if found.is_ok() {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to a deleted topic; removing it");
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        if !meta.exists() {
            let tmp = dir.join("partition.metadata.tmp");
            std::fs::write(&tmp, &expected)?;
            std::fs::rename(&tmp, &meta)?;
        }
    }
    Log::open_with_report(&dir, config.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// The contents of a file expected to hold about `expect` bytes, with one `read` when it does
/// (no `stat` for a size hint, as `std::fs::read` makes).
fn read_small_file(path: &Path, expect: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    // One byte more than expected, so a longer file needs a second read to be seen whole.
    let mut buf = vec![0u8; expect + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                // A regular file returns fewer bytes than asked only at its end.
                if len < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Remove `*-delete` directories left by a crash during deletion, and partition directories of
/// topics that no longer exist.
pub(super) fn remove_stale_partition_dirs(root: &Path, topics: &Topics) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // The type comes with the listing (no `stat` per entry), except for symlinks.
        let is_dir = match e.file_type() {
            Ok(t) if t.is_symlink() => e.path().is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if name == METADATA_DIR || name == QUORUM_DIR || !is_dir {
            continue;
        }
        let stale = if name.ends_with("-delete") {
            true
        } else if let Some((topic, idx)) = name.rsplit_once('-') {
            match (topics.by_name.get(topic), idx.parse::<usize>()) {
                (Some(t), Ok(i)) => i >= t.partitions.len(),
                _ => true,
            }
        } else {
            false
        };
        if stale {
            tracing::info!(dir = %e.path().display(), "removing directory of a deleted topic");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The cluster id of a quorum: derived from `controller.quorum.voters`, so every node of the
/// cluster computes the same id without a separate format step.
pub(super) fn quorum_cluster_id(voters: &BTreeMap<u64, String>) -> String {
    let text: String = voters.iter().map(|(id, a)| format!("{id}@{a},")).collect();
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x84222325_cbf29ce4);
    base64_uuid(Uuid::from_u64_pair(hi, lo))
}

/// Read or create `meta.properties` (cluster.id, node.id) like Kafka; a node id or cluster id
/// that does not match the data directory is a startup error. `cluster_id` is the id a quorum
/// member must have; a single node makes a random one on first start.
pub(super) fn load_meta_properties(
    dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> anyhow::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut cluster = None;
        let mut node = None;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "cluster.id" => cluster = Some(v.trim().to_string()),
                    "node.id" => node = v.trim().parse::<i32>().ok(),
                    _ => {}
                }
            }
        }
        if let Some(n) = node {
            if n != node_id {
                anyhow::bail!(
                    "node.id {node_id} does not match node.id {n} in {}; use the same node.id or another log.dirs",
                    path.display()
                );
            }
        }
        if let Some(c) = cluster {
            if let Some(want) = cluster_id {
                if c != want {
                    anyhow::bail!(
                        "{} belongs to cluster {c}, but controller.quorum.voters makes this cluster {want}; use another log.dirs",
                        path.display()
                    );
                }
            }
            return Ok(c);
        }
    }
    let cluster_id = cluster_id.map_or_else(|| base64_uuid(Uuid::new_v4()), str::to_string);
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"),
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(cluster_id)
}

/// Kafka prints cluster ids as URL-safe base64 of a UUID without padding.
fn base64_uuid(id: Uuid) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc = 0u32;
    let mut bits = 0;
    for &byte in b {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::broker::tests::broker;

    #[test]
    fn cluster_id_is_stable_and_22_chars() {
        let dir = tempfile::tempdir().unwrap();
        let a = broker(dir.path()).cluster_id.clone();
        let b = broker(dir.path()).cluster_id.clone();
        assert_eq!(a, b);
        assert_eq!(a.len(), 22);
    }
}
