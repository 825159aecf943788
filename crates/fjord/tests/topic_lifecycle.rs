//! Deleting a topic and creating one with the same name gives a fresh, empty, working topic.

mod common;

use std::time::Duration;

use common::records::{self, Expect};
use common::{ck_consume, ck_produce, FjordProcess};

#[test]
fn deleted_then_recreated_topic_is_empty_and_works() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("phoenix", 2, &[]);
    ck_produce(&broker, "phoenix", 500, &[]);
    assert_eq!(ck_consume(&broker, "phoenix", 500).len(), 500);

    broker
        .python("admin.py", &["delete", "phoenix"])
        .success("delete topic");
    let gone = common::wait_until(Duration::from_secs(15), || {
        let out = broker.python("admin.py", &["list"]).success("list");
        let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
        v["topics"].get("phoenix").is_none()
    });
    assert!(gone, "phoenix still in metadata 15 s after delete");

    broker
        .python(
            "admin.py",
            &[
                "create",
                "phoenix",
                "--partitions",
                "3",
                "--retry-exists",
                "15",
            ],
        )
        .success("recreate topic");
    let empty = ck_consume(&broker, "phoenix", 0);
    assert!(
        empty.is_empty(),
        "recreated topic should be empty, found {} records, first {:?}",
        empty.len(),
        empty.first()
    );

    // Fresh data lands at offset 0 of the new partitions.
    let acks = ck_produce(&broker, "phoenix", 300, &["--headers"]);
    assert!(acks.iter().all(|a| a.partition < 3));
    let dump = ck_consume(&broker, "phoenix", 300);
    records::assert_dump_matches(
        &dump,
        &Expect {
            count: 300,
            pad: 0,
            headers: true,
            timestamp_base: None,
        },
    );
    broker.assert_no_panic_in_log();
}
