//! The pure controller and image at scale (issue 22): creating topics up to N replicas (RF 3,
//! 1,000 partitions per CreateTopic, 140 brokers), fencing a broker (new leaders for every
//! partition it led, out of every ISR), a broker applying that delta to its image, and the
//! image written as records and rebuilt from them (a snapshot's build and load).
//!
//! ```text
//! cargo bench -p fjord-metadata --bench control_plane                 # 1,000,000 replicas
//! FJORD_BENCH_REPLICAS=300000 cargo bench -p fjord-metadata --bench control_plane
//! cargo bench -p fjord-metadata --bench control_plane -- --test       # smoke: 30,000 replicas
//! ```
//!
//! Before the timings, each operation is run once under a counting allocator and its
//! allocated bytes (and the live bytes it leaves behind: for a built image, its memory) are
//! printed to stderr. The smoke run (`--test`, which `scripts/test.sh` runs in CI) also fails
//! when an operation allocates more than its budget per replica (or per partition moved) —
//! about twice what it allocates now — so a per-partition allocation slipped into a hot path
//! shows up as a failed test, not only as a slower benchmark.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fjord_metadata::{
    ClusterImage, Controller, ControllerConfig, ControllerReply, ControllerRequest, MetadataRecord,
    NodeId, Uuid,
};

/// Counts the bytes allocated (and those live) so each operation's allocations can be shown.
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);

// The only unsafe code: forwarding to the system allocator, as GlobalAlloc requires.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BROKERS: NodeId = 140;
const PER_TOPIC: u32 = 1_000;
const RF: u16 = 3;
const NOW: i64 = 1_700_000_000_000;

/// Replicas to create: 30,000 for a `--test` smoke run, else `FJORD_BENCH_REPLICAS` or 1M.
fn replicas() -> u64 {
    if std::env::args().any(|a| a == "--test") {
        return 30_000;
    }
    std::env::var("FJORD_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000)
}

/// The bytes an operation allocated and the bytes it left live.
struct Allocated {
    allocated: u64,
    live: i64,
}

/// In a smoke run, fail when `bytes` over `units` is more than `budget` a unit.
fn within_budget(smoke: bool, what: &str, bytes: i64, units: u64, budget: u64) {
    let per = bytes as f64 / units.max(1) as f64;
    eprintln!("  {what}: {per:.0} bytes per unit (budget {budget})");
    assert!(
        !smoke || per <= budget as f64,
        "{what}: {per:.0} bytes per unit, over the budget of {budget}"
    );
}

/// Run `f` once; print the bytes it allocated and the bytes it left live.
fn allocations<T>(what: &str, f: impl FnOnce() -> T) -> (T, Allocated) {
    let (a0, l0) = (
        ALLOCATED.load(Ordering::Relaxed),
        LIVE.load(Ordering::Relaxed),
    );
    let t = std::time::Instant::now();
    let out = f();
    let elapsed = t.elapsed();
    let allocated = ALLOCATED.load(Ordering::Relaxed) - a0;
    let live = LIVE.load(Ordering::Relaxed) as i64 - l0 as i64;
    eprintln!(
        "{what}: {elapsed:.2?}, allocated {:.1} MiB, live after {:.1} MiB",
        allocated as f64 / (1 << 20) as f64,
        live as f64 / (1 << 20) as f64
    );
    (out, Allocated { allocated, live })
}

/// A controller with `BROKERS` registered, unfenced brokers on three racks, and the records
/// that registered them.
fn cluster() -> (Controller, Vec<MetadataRecord>) {
    let mut c = Controller::new(ControllerConfig::default());
    let mut records = Vec::new();
    for i in 0..BROKERS {
        let node_id = 101 + i;
        let r = c
            .handle(
                ControllerRequest::RegisterBroker {
                    node_id,
                    incarnation_id: Uuid::from_u128(node_id as u128),
                    rack: Some(["a", "b", "c"][i as usize % 3].into()),
                    endpoints: vec![],
                },
                NOW,
            )
            .expect("register");
        let fjord_metadata::ControllerReply::Registered { broker_epoch } = r.response else {
            panic!("{:?}", r.response)
        };
        records.extend(r.records);
        let r = c
            .handle(
                ControllerRequest::Heartbeat {
                    node_id,
                    broker_epoch,
                    current_metadata_offset: broker_epoch,
                    want_fence: false,
                },
                NOW,
            )
            .expect("unfence");
        records.extend(r.records);
    }
    (c, records)
}

/// Create topics of `PER_TOPIC` partitions until `replicas` replicas exist; the records.
fn create_topics(c: &mut Controller, replicas: u64) -> Vec<MetadataRecord> {
    let topics = replicas.div_ceil(PER_TOPIC as u64 * RF as u64);
    let mut records = Vec::new();
    for i in 0..topics {
        let r = c
            .handle(
                ControllerRequest::CreateTopic {
                    name: format!("scale-{i:05}"),
                    topic_id: Uuid::from_u128(i as u128 + 1),
                    partitions: PER_TOPIC,
                    replication_factor: RF,
                    configs: BTreeMap::new(),
                    validate_only: false,
                },
                NOW,
            )
            .expect("create");
        records.extend(r.records);
    }
    records
}

/// A `validate_only` CreateTopic of `PER_TOPIC` partitions: placement checked, nothing changed.
trait ValidateOnly {
    fn clone_free_validate(&mut self) -> ControllerReply;
}

impl ValidateOnly for Controller {
    fn clone_free_validate(&mut self) -> ControllerReply {
        self.handle(
            ControllerRequest::CreateTopic {
                name: "validate-only".into(),
                topic_id: Uuid::from_u128(u128::MAX),
                partitions: PER_TOPIC,
                replication_factor: RF,
                configs: BTreeMap::new(),
                validate_only: true,
            },
            NOW,
        )
        .expect("validate")
        .response
    }
}

/// Fence broker 101 as a controlled shutdown does; the delta.
fn fence(c: &mut Controller) -> Vec<MetadataRecord> {
    let epoch = c.image().broker(101).expect("broker").broker_epoch;
    c.handle(
        ControllerRequest::Heartbeat {
            node_id: 101,
            broker_epoch: epoch,
            current_metadata_offset: epoch,
            want_fence: true,
        },
        NOW,
    )
    .expect("fence")
    .records
}

fn bench(c: &mut Criterion) {
    let replicas = replicas();
    let smoke = std::env::args().any(|a| a == "--test");
    let (base, mut created) = cluster();
    let mut full = base.clone();
    let (records, a) = allocations(&format!("create topics to {replicas} replicas"), || {
        create_topics(&mut full, replicas)
    });
    created.extend(records);
    eprintln!("  {} records", created.len());
    within_budget(
        smoke,
        "create, allocated per replica",
        a.allocated as i64,
        replicas,
        1_024,
    );
    let (image, a) = allocations("image built from those records (a broker's image)", || {
        ClusterImage::from_records(&created)
    });
    within_budget(smoke, "image, memory per replica", a.live, replicas, 256);
    drop(created);
    let (_, a) = allocations("validate_only CreateTopic of 1,000 partitions", || {
        full.clone_free_validate()
    });
    within_budget(
        smoke,
        "validate_only, allocated per replica in the cluster",
        a.allocated as i64,
        replicas,
        8,
    );
    let led = full.image().partitions_led_by(101).count() as u64;
    let mut fenced = full.clone();
    let (delta, a) = allocations(&format!("fence a broker leading {led} partitions"), || {
        fence(&mut fenced)
    });
    drop(fenced);
    eprintln!("  {} records in the delta", delta.len());
    within_budget(
        smoke,
        "fence, allocated per partition led",
        a.allocated as i64,
        led,
        3_072,
    );
    let mut applied = image.clone();
    let ((), a) = allocations("apply the fence delta to an image", || {
        for r in &delta {
            applied.apply(r);
        }
    });
    drop(applied);
    within_budget(
        smoke,
        "apply delta, allocated per partition led",
        a.allocated as i64,
        led,
        256,
    );
    let (snapshot, a) = allocations("image to records (snapshot build)", || image.to_records());
    within_budget(
        smoke,
        "snapshot build, allocated per replica",
        a.allocated as i64,
        replicas,
        320,
    );
    let (json, _) = allocations("records to JSON (snapshot encode)", || {
        serde_json::to_vec(&snapshot).map_or(0, |v| v.len())
    });
    eprintln!("  {:.1} MiB of JSON", json as f64 / (1 << 20) as f64);

    let mut g = c.benchmark_group(format!("control_plane_{replicas}_replicas"));
    g.sample_size(10);
    g.bench_function("create_topics", |b| {
        b.iter_batched(
            || base.clone(),
            // The controller is returned so that criterion drops it outside the timing.
            |mut c| {
                let n = create_topics(&mut c, replicas).len();
                (c, n)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("fence_broker", |b| {
        b.iter_batched(
            || full.clone(),
            |mut c| {
                let n = fence(&mut c).len();
                (c, n)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("apply_fence_delta", |b| {
        b.iter_batched(
            || image.clone(),
            |mut i| {
                for r in &delta {
                    i.apply(black_box(r));
                }
                i
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("image_to_records", |b| b.iter(|| image.to_records().len()));
    g.bench_function("image_from_records", |b| {
        b.iter(|| ClusterImage::from_records(black_box(&snapshot)).topic_count())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
