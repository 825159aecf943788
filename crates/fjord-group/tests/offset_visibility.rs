//! An offset commit is visible to OffsetFetch only once its record is in the log (Kafka keeps
//! it in `pendingOffsetCommits` until the append completes). Found by the nemesis harness
//! (docs/testing.md, Findings: `dirty-offset-read`): a coordinator cut off from its followers
//! answered OffsetFetch with a commit that then failed, and the next coordinator, rightly,
//! had the older offset — a reader saw the group's offset go back.

use fjord_group::coordinator::{CommitPartition, CommitRequest};
use fjord_group::{Config, Coordinator, ErrorCode};

fn commit(offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: None,
        }],
    }
}

fn fetched(c: &Coordinator) -> Option<i64> {
    c.fetch_offsets("g", None)
        .into_iter()
        .find_map(|(t, p, o)| (t == "t" && p == 0).then_some(o?.offset))
}

#[test]
fn a_commit_is_not_fetched_before_its_record_is_appended() {
    let mut c = Coordinator::new(Config::default());
    let (errors, fx) = c.commit_offsets(commit(10), 0);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(
        fx.records.len(),
        1,
        "the commit's record is still to be appended"
    );
    assert_eq!(fetched(&c), None, "fetched before the append completed");
    // The runtime reports the record on every in-sync replica: now it is committed.
    c.commits_replicated(fx.commits);
    assert_eq!(fetched(&c), Some(10));
}
