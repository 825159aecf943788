//! The broker's view of its disk work: the disk I/O threads' queue and busy time and every
//! fsync of the process, exported as Prometheus metrics at scrape time (the counters live
//! where the work happens, in `fjord_storage::io` and `fjord_storage::fsync`).

use std::sync::atomic::Ordering;

use prometheus::{Counter, IntCounter, IntGauge, Registry};

use fjord_storage::io::IoThreads;

pub struct DiskMetrics {
    io_queued: IntGauge,
    io_jobs: IntCounter,
    io_busy_seconds: Counter,
    io_panics: IntCounter,
    fsyncs: IntCounter,
    fsync_seconds: Counter,
}

impl DiskMetrics {
    pub fn new(registry: &Registry) -> DiskMetrics {
        let m = DiskMetrics {
            io_queued: IntGauge::new(
                "io_queued_jobs",
                "Disk jobs (appends, flushes, truncations) queued or running on the I/O threads",
            )
            .expect("metric"),
            io_jobs: IntCounter::new("io_jobs_total", "Disk jobs run by the I/O threads")
                .expect("metric"),
            io_busy_seconds: Counter::new(
                "io_busy_seconds_total",
                "Seconds the I/O threads spent running disk jobs (all threads)",
            )
            .expect("metric"),
            io_panics: IntCounter::new(
                "io_job_panics_total",
                "Disk jobs that panicked (contained; the request got a storage error)",
            )
            .expect("metric"),
            fsyncs: IntCounter::new("fsyncs_total", "fsync calls by this process").expect("metric"),
            fsync_seconds: Counter::new(
                "fsync_seconds_total",
                "Seconds spent in fsync calls by this process",
            )
            .expect("metric"),
        };
        for c in [
            Box::new(m.io_queued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.io_jobs.clone()),
            Box::new(m.io_busy_seconds.clone()),
            Box::new(m.io_panics.clone()),
            Box::new(m.fsyncs.clone()),
            Box::new(m.fsync_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        m
    }

    /// Bring the exported values up to the counters'.
    pub fn update(&self, io: &IoThreads) {
        let s = io.stats();
        self.io_queued.set(s.queued.load(Ordering::Relaxed));
        catch_up(&self.io_jobs, s.jobs.load(Ordering::Relaxed));
        catch_up(&self.io_panics, s.panics.load(Ordering::Relaxed));
        catch_up_f(
            &self.io_busy_seconds,
            s.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        let (n, secs) = fjord_storage::fsync::stats();
        catch_up(&self.fsyncs, n);
        catch_up_f(&self.fsync_seconds, secs);
    }
}

fn catch_up(c: &IntCounter, to: u64) {
    let now = c.get();
    if to > now {
        c.inc_by(to - now);
    }
}

fn catch_up_f(c: &Counter, to: f64) {
    let now = c.get();
    if to > now {
        c.inc_by(to - now);
    }
}
