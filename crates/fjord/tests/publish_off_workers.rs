//! Applying metadata changes must not stall the async workers (issue 14). On a single node,
//! creating or deleting a topic opens or removes one log per partition. That work once ran
//! on the worker that submitted the change, under the controller mutex, so with a few admin
//! clients creating big topics at once every worker waited (one publishing, the others for
//! the mutex) and requests that need no disk at all stalled for as long. Publishing now runs
//! on its own thread; here ApiVersions round trips on another connection must stay fast while
//! several clients create and delete many-partition topics.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Creators at once: more than the runtime's worker threads on a 2-core machine.
const CREATORS: usize = 3;
const PARTITIONS: &str = "1000";
/// The worst ApiVersions round trip allowed while topics come and go.
const BOUND: Duration = Duration::from_millis(300);

#[test]
fn creating_and_deleting_big_topics_never_stalls_other_requests() {
    let broker = Arc::new(FjordProcess::start(&[]));
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..CREATORS)
        .map(|i| {
            let (broker, stop, created) = (broker.clone(), stop.clone(), created.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("big-{i}-{round}");
                    broker
                        .cli(&["topic", "create", &name, "--partitions", PARTITIONS])
                        .success("create a big topic");
                    created.fetch_add(1, Ordering::Relaxed);
                    broker
                        .cli(&["topic", "delete", &name])
                        .success("delete a big topic");
                    round += 1;
                }
            })
        })
        .collect();

    // Probe once the first big topics exist (their logs are being opened and removed).
    assert!(
        wait_until(Duration::from_secs(60), || created.load(Ordering::Relaxed)
            >= 1),
        "no big topic was created"
    );
    let mut s = TcpStream::connect(broker.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let at_start = created.load(Ordering::Relaxed);
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end || created.load(Ordering::Relaxed) < at_start + CREATORS {
        trips += 1;
        worst = worst.max(api_versions_round_trip(&mut s, trips));
        std::thread::sleep(Duration::from_millis(5));
        if Instant::now() > end + Duration::from_secs(60) {
            break;
        }
    }
    let during = created.load(Ordering::Relaxed) - at_start;
    stop.store(true, Ordering::Relaxed);
    for c in creators {
        c.join().expect("creator thread");
    }
    broker.assert_no_panic_in_log();
    eprintln!(
        "worst ApiVersions round trip {worst:?} over {trips} trips; {during} topics of \
         {PARTITIONS} partitions created meanwhile"
    );
    assert!(
        during >= CREATORS,
        "only {during} big topics created while probing: the load did not keep publishing busy"
    );
    assert!(
        worst < BOUND,
        "an ApiVersions round trip took {worst:?} (bound {BOUND:?}) while {CREATORS} clients \
         created and deleted {PARTITIONS}-partition topics: a worker thread waited for \
         metadata publishing"
    );
}
