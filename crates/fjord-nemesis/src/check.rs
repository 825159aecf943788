//! The checkers: pure functions over a run's history and the log read back after the faults
//! healed. Each finding is an [`Anomaly`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::history::{CommitSample, MetaSample, Op, OpKind, Outcome};

/// Something the run found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// `lost`, `duplicated`, `moved`, `phantom`, `out-of-order`, `commit-backwards`,
    /// `two-leaders`, `unanswered`, `not-converged`, `commit-lost`, `dirty-offset-read`,
    /// `panic`, `raft-reversion-panic`, `raft-stopped`; for transactions `txn-lost`,
    /// `txn-duplicated`, `txn-aborted-visible`, `txn-partial`, `txn-phantom`, `txn-unresolved`.
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

/// The group's committed offsets never go backwards, over the OffsetFetch samples (taken one
/// after the other, each from the coordinator the sampler knew):
///
/// - `commit-backwards` (anomaly): a node's readings go back, or a node returns less than a
///   commit it acknowledged itself before the reading was sent;
/// - `dirty-offset-read` (anomaly): a reading returned an offset no commit had been
///   acknowledged with yet, and a later reading (from any node) returned less: a commit was
///   visible before it was durable and then lost (Kafka shows a commit only once replicated);
/// - `stale-offset-read` (a note in `notes`, not an anomaly): a node returned less than a
///   commit another node had acknowledged, i.e. a deposed coordinator answered from its cache
///   until it learned of the new leader (Kafka has the same window).
pub fn check_commits(
    ops: &[Op],
    samples: &[CommitSample],
    out: &mut Vec<Anomaly>,
    notes: &mut Vec<String>,
) {
    let mut by_partition: BTreeMap<i32, Vec<&CommitSample>> = BTreeMap::new();
    for s in samples {
        by_partition.entry(s.partition).or_default().push(s);
    }
    // Acknowledged commits per partition: (offset, acknowledged at, by node, sent at).
    type Ack = (i64, f64, Option<usize>, f64);
    let mut acks: BTreeMap<i32, Vec<Ack>> = BTreeMap::new();
    for op in ops {
        if let (OpKind::Commit { partition, offset }, Outcome::Ok { .. }, Some(end)) =
            (&op.kind, &op.outcome, op.end)
        {
            acks.entry(*partition)
                .or_default()
                .push((*offset, end, op.node, op.start));
        }
    }
    for (p, mut list) in by_partition {
        list.sort_by(|a, b| a.start.total_cmp(&b.start));
        let acks = acks.remove(&p).unwrap_or_default();
        let mut first: BTreeMap<&str, (String, usize)> = BTreeMap::new();
        let mut found = |kind: &'static str, detail: String| {
            let e = first.entry(kind).or_insert((detail, 0));
            e.1 += 1;
        };
        // The highest reading so far that no acknowledged commit covered when it was read.
        let mut dirty: Option<&CommitSample> = None;
        let mut last_by_node: BTreeMap<usize, &CommitSample> = BTreeMap::new();
        for s in &list {
            let s = *s;
            if let Some(pr) = last_by_node.get(&s.node) {
                if s.offset < pr.offset {
                    found(
                        "commit-backwards",
                        format!(
                            "partition {p}: node {} returned committed offset {} at {:.1}s, then {} at {:.1}s",
                            s.node, pr.offset, pr.end, s.offset, s.end
                        ),
                    );
                }
            }
            if let Some(d) = dirty {
                if s.offset < d.offset {
                    found(
                        "dirty-offset-read",
                        format!(
                            "partition {p}: node {} returned {} at {:.1}s before any commit of it was acknowledged; node {} returned {} at {:.1}s",
                            d.node, d.offset, d.end, s.node, s.offset, s.end
                        ),
                    );
                }
            }
            // A reading is covered by a commit acknowledged by then, or by one the same node
            // was handling when it answered and acknowledged later (a write that took effect).
            let covered = |r: &CommitSample| {
                acks.iter().any(|(a, at, by, sent)| {
                    *a >= r.offset && (*at <= r.end || (*by == Some(r.node) && *sent <= r.end))
                })
            };
            if !covered(s) && dirty.is_none_or(|d| s.offset > d.offset) {
                dirty = Some(s);
            } else if dirty.is_some_and(covered) {
                dirty = None;
            }
            let before = acks
                .iter()
                .filter(|(_, at, _, _)| *at < s.start)
                .max_by_key(|(o, _, _, _)| *o);
            if let Some((c, at, by, _)) = before {
                if s.offset < *c {
                    let kind = if *by == Some(s.node) {
                        "commit-backwards"
                    } else {
                        "stale-offset-read"
                    };
                    found(
                        kind,
                        format!(
                            "partition {p}: commit of {c} acknowledged at {at:.1}s by node {}, OffsetFetch at {:.1}s from node {} returned {}",
                            by.map_or("?".to_string(), |n| n.to_string()),
                            s.start,
                            s.node,
                            s.offset
                        ),
                    );
                }
            }
            last_by_node.insert(s.node, s);
        }
        for (kind, (detail, count)) in first {
            let text = format!("{detail} ({count} such readings)");
            if kind == "stale-offset-read" {
                notes.push(format!("[{kind}] {text}"));
            } else {
                out.push(Anomaly::new(kind, text));
            }
        }
    }
}

/// The group's committed offsets read at the end (after convergence, from the coordinator a
/// fresh consumer finds) are at least the highest commit acknowledged: no acknowledged commit
/// lost.
pub fn check_final_commits(ops: &[Op], last: &BTreeMap<i32, i64>, out: &mut Vec<Anomaly>) {
    let mut acked: BTreeMap<i32, (i64, f64, Option<usize>)> = BTreeMap::new();
    for op in ops {
        if let (OpKind::Commit { partition, offset }, Outcome::Ok { .. }) = (&op.kind, &op.outcome)
        {
            let e = acked
                .entry(*partition)
                .or_insert((*offset, op.end.unwrap_or(0.0), op.node));
            if *offset > e.0 {
                *e = (*offset, op.end.unwrap_or(0.0), op.node);
            }
        }
    }
    for (p, (offset, at, node)) in acked {
        let now = last.get(&p).copied().unwrap_or(-1);
        if now < offset {
            out.push(Anomaly::new(
                "commit-lost",
                format!(
                    "partition {p}: commit of {offset} acknowledged at {at:.1}s by node {node:?}, the group's committed offset at the end is {now}"
                ),
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

/// What the client knows of a transaction's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnFate {
    Committed,
    Aborted,
    /// No EndTxn answered (or answered with an error): it may have gone either way, but
    /// wholly.
    Unknown,
}

/// Transactions are atomic and their fate sticks, checked on the transactional topic read
/// with read_committed (`log`) after every transaction ended: a transaction whose commit was
/// acknowledged has each of its records exactly once, an aborted one none, one of unknown
/// fate all or none; nothing else is in the topic.
pub fn check_txns(ops: &[Op], log: &BTreeMap<i32, PartitionLog>, out: &mut Vec<Anomaly>) {
    // (client, txn) -> (values, fate)
    let mut txns: BTreeMap<(String, u64), (BTreeSet<String>, TxnFate)> = BTreeMap::new();
    for op in ops {
        match &op.kind {
            OpKind::TxnProduce { txn, values, .. } => {
                let e = txns
                    .entry((op.client.clone(), *txn))
                    .or_insert_with(|| (BTreeSet::new(), TxnFate::Unknown));
                e.0.extend(values.iter().cloned());
            }
            OpKind::TxnEnd {
                txn,
                commit,
                values,
            } => {
                let e = txns
                    .entry((op.client.clone(), *txn))
                    .or_insert_with(|| (BTreeSet::new(), TxnFate::Unknown));
                e.0.extend(values.iter().cloned());
                // Ops are in start order: the last attempt decides.
                e.1 = match (&op.outcome, commit) {
                    (Outcome::Ok { .. }, true) => TxnFate::Committed,
                    (Outcome::Ok { .. }, false) => TxnFate::Aborted,
                    _ => TxnFate::Unknown,
                };
            }
            _ => {}
        }
    }
    let mut seen: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (p, records) in log {
        for (offset, v) in records {
            seen.entry(v.as_str()).or_default().push((*p, *offset));
        }
    }
    let mut owned: BTreeSet<&str> = BTreeSet::new();
    for ((client, txn), (values, fate)) in &txns {
        let present: Vec<&String> = values
            .iter()
            .filter(|v| seen.contains_key(v.as_str()))
            .collect();
        owned.extend(values.iter().map(|v| v.as_str()));
        for v in &present {
            let at = &seen[v.as_str()];
            if at.len() > 1 {
                out.push(Anomaly::new(
                    "txn-duplicated",
                    format!("{client} transaction {txn}: {v} at {at:?}"),
                ));
            }
        }
        let what = format!(
            "{client} transaction {txn}: {} of its {} records visible",
            present.len(),
            values.len()
        );
        match fate {
            TxnFate::Committed if present.len() < values.len() => {
                let missing: Vec<&String> = values
                    .iter()
                    .filter(|v| !seen.contains_key(v.as_str()))
                    .take(5)
                    .collect();
                out.push(Anomaly::new(
                    "txn-lost",
                    format!("{what} after its commit was acknowledged (missing {missing:?})"),
                ));
            }
            TxnFate::Aborted if !present.is_empty() => out.push(Anomaly::new(
                "txn-aborted-visible",
                format!(
                    "{what} after its abort was acknowledged ({:?})",
                    &present[..1]
                ),
            )),
            TxnFate::Unknown if !present.is_empty() && present.len() < values.len() => {
                out.push(Anomaly::new("txn-partial", what))
            }
            _ => {}
        }
    }
    let phantoms: Vec<&&str> = seen.keys().filter(|v| !owned.contains(**v)).collect();
    if !phantoms.is_empty() {
        out.push(Anomaly::new(
            "txn-phantom",
            format!(
                "{} values in the transactional topic no transaction produced, e.g. {:?}",
                phantoms.len(),
                &phantoms[..phantoms.len().min(3)]
            ),
        ));
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
        let commit = |offset, node, end: f64, ok: bool| Op {
            id: 0,
            client: "c".into(),
            kind: OpKind::Commit {
                partition: 1,
                offset,
            },
            node: Some(node),
            start: end - 0.1,
            end: Some(end),
            outcome: if ok {
                Outcome::Ok { offset: None }
            } else {
                Outcome::Timeout
            },
        };
        let s = |node, start: f64, offset| CommitSample {
            node,
            start,
            end: start + 0.1,
            partition: 1,
            offset,
        };
        let kinds = |ops: &[Op], samples: &[CommitSample]| {
            let (mut out, mut notes) = (Vec::new(), Vec::new());
            check_commits(ops, samples, &mut out, &mut notes);
            let mut k: Vec<String> = out.iter().map(|a| a.kind.clone()).collect();
            k.extend(
                notes
                    .iter()
                    .map(|n| n.split(']').next().unwrap()[1..].to_string()),
            );
            k
        };
        let ok = [commit(10, 1, 0.1, true)];
        assert!(kinds(&ok, &[s(1, 1.0, 10), s(1, 2.0, 12)]).is_empty());
        // One node going back, below its own acknowledged commit (and 12 was never committed).
        assert_eq!(
            kinds(&ok, &[s(1, 1.0, 12), s(1, 2.0, 8)]),
            ["commit-backwards", "dirty-offset-read"]
        );
        assert_eq!(
            kinds(&ok, &[s(1, 1.0, 10), s(1, 2.0, 8)]),
            ["commit-backwards"]
        );
        // A deposed coordinator (node 2) behind a commit node 1 acknowledged: a note.
        assert_eq!(kinds(&ok, &[s(2, 1.0, 8)]), ["stale-offset-read"]);
        // Node 1 shows 15 while its commit is in flight; it fails, node 2 has 10.
        let dirty = [commit(10, 1, 0.1, true), commit(15, 1, 3.0, false)];
        assert_eq!(
            kinds(&dirty, &[s(1, 1.0, 15), s(2, 2.0, 10)]),
            ["dirty-offset-read"]
        );
        // The same, but the commit node 1 was handling succeeded: node 2 is merely stale.
        let mut late_ack = commit(15, 1, 3.0, true);
        late_ack.start = 0.5;
        let in_flight = [commit(10, 1, 0.1, true), late_ack];
        assert!(kinds(&in_flight, &[s(1, 1.0, 15), s(2, 2.0, 10)]).is_empty());
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

    fn txn_op(id: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op {
            id,
            client: "tp".into(),
            kind,
            node: Some(1),
            start: id as f64,
            end: Some(id as f64 + 0.5),
            outcome,
        }
    }

    fn txn_end(id: u64, txn: u64, commit: bool, values: &[&str], outcome: Outcome) -> Op {
        txn_op(
            id,
            OpKind::TxnEnd {
                txn,
                commit,
                values: values.iter().map(|s| s.to_string()).collect(),
            },
            outcome,
        )
    }

    #[test]
    fn transactions_must_be_atomic_and_keep_their_fate() {
        let ok = || Outcome::Ok { offset: None };
        let lost = || Outcome::Timeout;
        let ops = vec![
            txn_end(1, 1, true, &["c1", "c2"], ok()),
            txn_end(2, 2, false, &["a1", "a2"], ok()),
            txn_end(3, 3, true, &["u1", "u2"], lost()),
            txn_end(4, 4, true, &["n1", "n2"], lost()),
        ];
        let log = |vals: &[&str]| -> BTreeMap<i32, PartitionLog> {
            BTreeMap::from([(
                0,
                vals.iter()
                    .enumerate()
                    .map(|(i, v)| (i as i64, v.to_string()))
                    .collect(),
            )])
        };
        let kinds = |vals: &[&str]| -> Vec<String> {
            let mut out = Vec::new();
            check_txns(&ops, &log(vals), &mut out);
            out.into_iter().map(|a| a.kind).collect()
        };
        // Committed whole, aborted absent, unknown fates all or nothing.
        assert!(kinds(&["c1", "c2", "u1", "u2"]).is_empty());
        assert_eq!(kinds(&["c1"]), ["txn-lost"]);
        assert_eq!(kinds(&["c1", "c2", "a1"]), ["txn-aborted-visible"]);
        assert_eq!(kinds(&["c1", "c2", "n2"]), ["txn-partial"]);
        assert_eq!(kinds(&["c1", "c2", "c2"]), ["txn-duplicated"]);
        assert_eq!(kinds(&["c1", "c2", "zz"]), ["txn-phantom"]);
        // A retried EndTxn that was answered decides the fate.
        let mut retried = ops.clone();
        retried.push(txn_end(5, 4, true, &["n1", "n2"], ok()));
        let mut out = Vec::new();
        check_txns(&retried, &log(&["c1", "c2"]), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, "txn-lost");
    }
}
