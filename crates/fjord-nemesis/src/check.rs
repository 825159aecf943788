//! The checkers: pure functions over a run's history and the log read back after the faults
//! healed. Each finding is an [`Anomaly`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::history::{CommitSample, MetaSample, Op, OpKind, Outcome};

/// Something the run found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// `lost`, `duplicated`, `moved`, `phantom`, `out-of-order`, `commit-backwards`,
    /// `two-leaders`, `unanswered`, `not-converged`, `panic`, `harness`.
    pub kind: String,
    pub detail: String,
}

impl Anomaly {
    pub fn new(kind: &str, detail: impl Into<String>) -> Anomaly {
        Anomaly {
            kind: kind.to_string(),
            detail: detail.into(),
        }
    }
}

/// When a node could not answer at all (killed or paused): a timeout to it then is excused.
#[derive(Debug, Clone, Serialize)]
pub struct Outage {
    pub node: usize,
    pub start: f64,
    pub end: f64,
}

/// Records read back from a partition: (offset, value), in the order returned.
pub type PartitionLog = Vec<(i64, String)>;

/// No acknowledged record lost or duplicated, offsets in order, nothing never written.
pub fn check_log(ops: &[Op], log: &BTreeMap<i32, PartitionLog>, out: &mut Vec<Anomaly>) {
    // value -> (partition, acknowledged offset if any)
    let mut attempted: HashMap<&str, i32> = HashMap::new();
    let mut acked: HashMap<&str, (i32, Option<i64>, f64)> = HashMap::new();
    for op in ops {
        if let OpKind::Produce { partition, values } = &op.kind {
            for (i, v) in values.iter().enumerate() {
                attempted.insert(v, *partition);
                if let Outcome::Ok { offset } = &op.outcome {
                    let at = offset.filter(|o| *o >= 0).map(|o| o + i as i64);
                    let e = acked
                        .entry(v)
                        .or_insert((*partition, at, op.end.unwrap_or(0.0)));
                    if e.1.is_none() {
                        e.1 = at;
                    }
                }
            }
        }
    }
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (p, records) in log {
        let mut last = -1i64;
        for (offset, value) in records {
            if *offset <= last {
                out.push(Anomaly::new(
                    "out-of-order",
                    format!("partition {p}: offset {offset} read after {last}"),
                ));
            }
            last = *offset;
            found.entry(value).or_default().push((*p, *offset));
        }
    }
    for (value, places) in &found {
        if places.len() > 1 {
            out.push(Anomaly::new(
                "duplicated",
                format!(
                    "value {value} is in the log {} times: {places:?}",
                    places.len()
                ),
            ));
        }
        match attempted.get(value) {
            None => out.push(Anomaly::new(
                "phantom",
                format!("value {value} at {places:?} was never produced"),
            )),
            Some(p) if places.iter().any(|(fp, _)| fp != p) => out.push(Anomaly::new(
                "phantom",
                format!("value {value} produced to partition {p} is at {places:?}"),
            )),
            _ => {}
        }
    }
    let mut lost: Vec<(&str, i32, Option<i64>, f64)> = Vec::new();
    for (value, (p, offset, at)) in &acked {
        match found.get(value) {
            None => lost.push((value, *p, *offset, *at)),
            Some(places) => {
                if let Some(o) = offset {
                    if !places.iter().any(|(fp, fo)| fp == p && fo == o) {
                        out.push(Anomaly::new(
                            "moved",
                            format!("value {value} acknowledged at {p}@{o} is at {places:?}"),
                        ));
                    }
                }
            }
        }
    }
    lost.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.cmp(&b.2)));
    if !lost.is_empty() {
        let total = lost.len();
        let sample: Vec<String> = lost
            .iter()
            .take(10)
            .map(|(v, p, o, at)| format!("{v} ({p}@{o:?}, acked at {at:.1}s)"))
            .collect();
        out.push(Anomaly::new(
            "lost",
            format!(
                "{total} acknowledged records are not in the log, e.g. {}",
                sample.join(", ")
            ),
        ));
    }
}

/// The group's committed offsets never go backwards: every OffsetFetch sample (taken one
/// after the other) is at least the previous one, and at least every commit acknowledged
/// before the sample was sent.
pub fn check_commits(ops: &[Op], samples: &[CommitSample], out: &mut Vec<Anomaly>) {
    let mut by_partition: BTreeMap<i32, Vec<&CommitSample>> = BTreeMap::new();
    for s in samples {
        by_partition.entry(s.partition).or_default().push(s);
    }
    for (p, mut list) in by_partition {
        // One anomaly per partition: the first backward step, and how many samples were back.
        let mut first: Option<String> = None;
        let mut count = 0usize;
        let mut found = |detail: String| {
            count += 1;
            first.get_or_insert(detail);
        };
        list.sort_by(|a, b| a.start.total_cmp(&b.start));
        let mut prev: Option<&CommitSample> = None;
        for s in list {
            if let Some(pr) = prev {
                if s.offset < pr.offset && s.start >= pr.end {
                    found(format!(
                        "partition {p}: committed offset {} at {:.1}s, then {} at {:.1}s",
                        pr.offset, pr.end, s.offset, s.end
                    ));
                }
            }
            let acked_before = ops
                .iter()
                .filter_map(|op| match (&op.kind, &op.outcome, op.end) {
                    (OpKind::Commit { partition, offset }, Outcome::Ok { .. }, Some(end))
                        if *partition == p && end < s.start =>
                    {
                        Some(*offset)
                    }
                    _ => None,
                })
                .max();
            if let Some(c) = acked_before {
                if s.offset < c {
                    found(format!(
                        "partition {p}: commit of {c} acknowledged, later OffsetFetch at {:.1}s returned {}",
                        s.start, s.offset
                    ));
                }
            }
            prev = Some(s);
        }
        if let Some(detail) = first {
            out.push(Anomaly::new(
                "commit-backwards",
                format!("{detail} ({count} backward readings in all)"),
            ));
        }
    }
}

/// No two leaders for one partition leader epoch, over every node's Metadata answers.
pub fn check_leaders(samples: &[MetaSample], out: &mut Vec<Anomaly>) {
    let mut leaders: BTreeMap<(i32, i32), BTreeSet<i32>> = BTreeMap::new();
    for s in samples {
        if s.leader >= 0 && s.leader_epoch >= 0 {
            leaders
                .entry((s.partition, s.leader_epoch))
                .or_default()
                .insert(s.leader);
        }
    }
    for ((p, epoch), set) in leaders {
        if set.len() > 1 {
            let seen: Vec<String> = samples
                .iter()
                .filter(|s| s.partition == p && s.leader_epoch == epoch)
                .map(|s| format!("node {} said {} at {:.1}s", s.from_node, s.leader, s.at))
                .take(6)
                .collect();
            out.push(Anomaly::new(
                "two-leaders",
                format!(
                    "partition {p} epoch {epoch} has leaders {set:?}: {}",
                    seen.join("; ")
                ),
            ));
        }
    }
}

/// Every request answered: none pending, and none timed out at a node that was up and not
/// paused for the whole wait.
pub fn check_answered(ops: &[Op], outages: &[Outage], out: &mut Vec<Anomaly>) {
    for op in ops {
        let end = op.end.unwrap_or(f64::MAX);
        let excused = |node: Option<usize>| {
            outages
                .iter()
                .any(|o| node.is_none_or(|n| n == o.node) && o.start <= end && o.end >= op.start)
        };
        match op.outcome {
            Outcome::Pending => out.push(Anomaly::new(
                "unanswered",
                format!(
                    "{} #{} by {} to node {:?} sent at {:.1}s never finished: {:?}",
                    op.kind.name(),
                    op.id,
                    op.client,
                    op.node,
                    op.start,
                    op.kind
                ),
            )),
            Outcome::Timeout if !excused(op.node) => out.push(Anomaly::new(
                "unanswered",
                format!(
                    "{} #{} by {} to node {:?} sent at {:.1}s: no answer by {:.1}s while the node was up: {:?}",
                    op.kind.name(),
                    op.id,
                    op.client,
                    op.node,
                    op.start,
                    end,
                    op.kind
                ),
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce(id: u64, p: i32, values: &[&str], outcome: Outcome) -> Op {
        Op {
            id,
            client: "t".into(),
            kind: OpKind::Produce {
                partition: p,
                values: values.iter().map(|s| s.to_string()).collect(),
            },
            node: Some(1),
            start: id as f64,
            end: Some(id as f64 + 0.5),
            outcome,
        }
    }

    fn log(entries: &[(i32, i64, &str)]) -> BTreeMap<i32, PartitionLog> {
        let mut m: BTreeMap<i32, PartitionLog> = BTreeMap::new();
        for (p, o, v) in entries {
            m.entry(*p).or_default().push((*o, v.to_string()));
        }
        m
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let ops = vec![
            produce(0, 0, &["a", "b"], Outcome::Ok { offset: Some(0) }),
            produce(1, 0, &["c"], Outcome::Timeout),
        ];
        let mut out = Vec::new();
        check_log(
            &ops,
            &log(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn lost_duplicated_moved_and_phantom_records_are_found() {
        let ops = vec![
            produce(0, 0, &["a", "b"], Outcome::Ok { offset: Some(0) }),
            produce(1, 0, &["c"], Outcome::Ok { offset: Some(2) }),
        ];
        let mut out = Vec::new();
        check_log(
            &ops,
            &log(&[(0, 0, "a"), (0, 1, "a"), (0, 3, "c"), (0, 4, "zz")]),
            &mut out,
        );
        let kinds: BTreeSet<&str> = out.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["duplicated", "lost", "moved", "phantom"]
                .into_iter()
                .collect(),
            "{out:?}"
        );
    }

    #[test]
    fn commits_going_backwards_are_found() {
        let commit = Op {
            id: 0,
            client: "c".into(),
            kind: OpKind::Commit {
                partition: 1,
                offset: 10,
            },
            node: Some(1),
            start: 0.0,
            end: Some(0.1),
            outcome: Outcome::Ok { offset: None },
        };
        let s = |start: f64, offset| CommitSample {
            start,
            end: start + 0.1,
            partition: 1,
            offset,
        };
        let mut out = Vec::new();
        check_commits(
            std::slice::from_ref(&commit),
            &[s(1.0, 10), s(2.0, 12)],
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        check_commits(&[commit], &[s(1.0, 12), s(2.0, 8)], &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].detail.contains("2 backward readings"), "{out:?}");
    }

    #[test]
    fn two_leaders_in_one_epoch_are_found() {
        let m = |node, leader, epoch| MetaSample {
            at: 0.0,
            from_node: node,
            partition: 0,
            leader,
            leader_epoch: epoch,
            isr: vec![],
        };
        let mut out = Vec::new();
        check_leaders(&[m(1, 1, 3), m(2, 1, 3), m(3, 2, 4)], &mut out);
        assert!(out.is_empty());
        check_leaders(&[m(1, 1, 3), m(2, 2, 3)], &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_timeout_is_excused_only_by_an_outage_of_its_node() {
        let ops = vec![produce(0, 0, &["a"], Outcome::Timeout)];
        let mut out = Vec::new();
        let outage = |node| Outage {
            node,
            start: 0.2,
            end: 3.0,
        };
        check_answered(&ops, &[outage(1)], &mut out);
        assert!(out.is_empty());
        check_answered(&ops, &[outage(2)], &mut out);
        assert_eq!(out.len(), 1);
    }
}
