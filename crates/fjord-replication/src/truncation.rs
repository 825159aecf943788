//! Where a follower truncates its log before it fetches from a new leader epoch (KIP-101 and
//! KIP-279).
//!
//! The follower asks the leader (OffsetForLeaderEpoch) for the end of its own latest epoch in
//! the leader's log. The leader answers with the largest epoch it has that is not above the one
//! asked for, and the offset where that epoch ends in its log. Records the follower has beyond
//! that point were never replicated to the leader: they are divergent (written by an old leader
//! that lost its leadership before they were committed) and are removed. Committed records are
//! on every ISR member, so the leader has them in the same epochs, and the truncation point is
//! never below them.
//!
//! When the leader's answer names an older epoch than the one asked for, the follower looks up
//! where *that* epoch ends in its own log; if it does not have that epoch either, it asks again
//! with the largest epoch it has below (KIP-279's extra round trips), until both logs agree on
//! an epoch.

/// What the follower does with the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Truncate the log to end at this offset (a no-op when it ends there or below), then
    /// fetch from there.
    TruncateTo(i64),
    /// Ask the leader again, for this epoch.
    AskAgain { epoch: i32 },
}

/// The first question is the follower's latest epoch. A follower whose log has no leader
/// epochs (an empty log) asks nothing: it keeps what is below its high watermark (Kafka's
/// fallback before KIP-101) and fetches the rest again.
pub fn no_epochs(log_end_offset: i64, high_watermark: i64) -> i64 {
    high_watermark.min(log_end_offset)
}

/// Decide from the leader's answer to OffsetForLeaderEpoch for `asked`.
///
/// - `leader`: `(epoch, end_offset)` from the leader, or `None` for its "undefined" answer
///   (-1, -1: it has no epoch at or below `asked`).
/// - `local_end_offset_for(epoch)`: the follower's own OffsetForLeaderEpoch on its log (the
///   largest local epoch `<= epoch` and where it ends), `None` if it has none.
pub fn decide(
    asked: i32,
    leader: Option<(i32, i64)>,
    local_end_offset_for: impl Fn(i32) -> Option<(i32, i64)>,
    log_end_offset: i64,
    high_watermark: i64,
) -> Decision {
    let Some((leader_epoch, leader_end)) = leader else {
        // The leader knows no epoch this old (its log starts later): keep only what is known
        // to be committed.
        return Decision::TruncateTo(no_epochs(log_end_offset, high_watermark));
    };
    if leader_epoch >= asked {
        return Decision::TruncateTo(leader_end.min(log_end_offset));
    }
    match local_end_offset_for(leader_epoch) {
        Some((local_epoch, local_end)) if local_epoch == leader_epoch => {
            Decision::TruncateTo(leader_end.min(local_end).min(log_end_offset))
        }
        Some((local_epoch, _)) => Decision::AskAgain { epoch: local_epoch },
        None => {
            Decision::TruncateTo(no_epochs(log_end_offset, high_watermark).min(leader_end.max(0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch cache as (epoch, start offset) pairs, with a log end.
    fn lookup(entries: &[(i32, i64)], leo: i64) -> impl Fn(i32) -> Option<(i32, i64)> + '_ {
        move |asked| {
            let i = entries.iter().rposition(|(e, _)| *e <= asked)?;
            let end = entries.get(i + 1).map_or(leo, |(_, start)| *start);
            Some((entries[i].0, end))
        }
    }

    #[test]
    fn same_epoch_truncates_to_the_leaders_end() {
        // Follower wrote 0..120 in epoch 1; the leader only got 0..100 of epoch 1.
        let f = [(0, 0), (1, 50)];
        let d = decide(1, Some((1, 100)), lookup(&f, 120), 120, 90);
        assert_eq!(d, Decision::TruncateTo(100));
        // A follower behind the leader keeps everything.
        assert_eq!(
            decide(1, Some((1, 100)), lookup(&f, 80), 80, 60),
            Decision::TruncateTo(80)
        );
    }

    #[test]
    fn older_epoch_from_the_leader_uses_the_local_end_of_that_epoch() {
        // Follower: epoch 0 at 0, epoch 2 at 40 (an old leader's, never replicated).
        // Leader: epoch 0 ends at 60 in its log (then epoch 3).
        let f = [(0, 0), (2, 40)];
        let d = decide(2, Some((0, 60)), lookup(&f, 70), 70, 30);
        assert_eq!(d, Decision::TruncateTo(40));
    }

    #[test]
    fn missing_epoch_asks_again() {
        // Follower has epochs 0 and 3; the leader's largest <= 3 is 2, which the follower
        // lacks: ask for 0, where both agree.
        let f = [(0, 0), (3, 40)];
        assert_eq!(
            decide(3, Some((2, 55)), lookup(&f, 70), 70, 30),
            Decision::AskAgain { epoch: 0 }
        );
        assert_eq!(
            decide(0, Some((0, 35)), lookup(&f, 70), 70, 30),
            Decision::TruncateTo(35)
        );
    }

    #[test]
    fn undefined_answer_keeps_the_committed_prefix() {
        let f = [(5, 0)];
        assert_eq!(
            decide(5, None, lookup(&f, 70), 70, 30),
            Decision::TruncateTo(30)
        );
        assert_eq!(no_epochs(10, 30), 10);
    }
}
