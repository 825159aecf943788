//! Mirror of `tests/clients/records.py`: the deterministic record set the producer scripts
//! write, and checks of consumer dumps (`ck_consume.py` JSON lines) against it.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

pub fn key(i: u64) -> String {
    format!("key-{i}")
}

pub fn value(i: u64, pad: usize) -> String {
    format!(
        "value-{i}-{}{}",
        "abcdefghij".repeat((i % 20) as usize),
        "z".repeat(pad)
    )
}

/// Headers as dumped by ck_consume.py: `[name, value-or-null]`.
pub fn headers_json(i: u64) -> Value {
    serde_json::json!([["idx", i.to_string()], ["h-empty", ""], ["h-null", null]])
}

/// A timestamp base an hour in the past, so brokers' timestamp bounds never reject it.
pub fn timestamp_base() -> i64 {
    fjord_protocol::clock::now_ms() - 3_600_000
}

/// One record from a ck_consume.py dump.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Value,
    pub timestamp: i64,
    pub timestamp_type: i64,
}

pub fn parse_dump(lines: &[Value]) -> Vec<Dumped> {
    lines
        .iter()
        .map(|r| Dumped {
            partition: r["p"].as_i64().expect("p"),
            offset: r["o"].as_i64().expect("o"),
            key: r["k"].as_str().map(str::to_string),
            value: r["v"].as_str().map(str::to_string),
            headers: r["h"].clone(),
            timestamp: r["ts"].as_i64().unwrap_or(-1),
            timestamp_type: r["tst"].as_i64().unwrap_or(-1),
        })
        .collect()
}

/// Index `i` from a key `key-<i>`.
pub fn index_of(key: &Option<String>) -> Option<u64> {
    key.as_deref()?.strip_prefix("key-")?.parse().ok()
}

/// The indexes of the acknowledged records `wanted` picks that `dump` does not hold.
pub fn acked_but_unread<'a>(
    acks: impl IntoIterator<Item = &'a Ack>,
    dump: &[Dumped],
    wanted: impl Fn(u64) -> bool,
) -> Vec<u64> {
    let read: std::collections::BTreeSet<u64> =
        dump.iter().filter_map(|d| index_of(&d.key)).collect();
    acks.into_iter()
        .map(|a| a.index)
        .filter(|i| wanted(*i) && !read.contains(i))
        .collect()
}

/// Checks that offsets of every partition are exactly 0..n with no gaps or duplicates.
pub fn assert_offsets_contiguous(dump: &[Dumped]) {
    let mut by_part: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in dump {
        by_part.entry(r.partition).or_default().push(r.offset);
    }
    for (p, offs) in by_part {
        for (n, o) in offs.iter().enumerate() {
            assert_eq!(
                *o, n as i64,
                "partition {p}: offsets not contiguous from 0 (position {n} has offset {o}; neighbours {:?})",
                &offs[n.saturating_sub(3)..(n + 3).min(offs.len())]
            );
        }
    }
}

pub struct Expect {
    pub count: u64,
    pub pad: usize,
    pub headers: bool,
    /// Explicit CreateTime base; record i must carry `base + i`.
    pub timestamp_base: Option<i64>,
}

/// Checks a dump holds exactly records 0..count of the record set, each intact, at contiguous
/// offsets.
pub fn assert_dump_matches(dump: &[Dumped], e: &Expect) {
    assert_eq!(
        dump.len() as u64,
        e.count,
        "consumed {} records, produced {}",
        dump.len(),
        e.count
    );
    assert_offsets_contiguous(dump);
    let mut seen = vec![false; e.count as usize];
    for r in dump {
        let i = index_of(&r.key)
            .unwrap_or_else(|| panic!("unexpected key at {}/{}: {:?}", r.partition, r.offset, r));
        assert!(i < e.count, "unexpected record index {i}: {r:?}");
        assert!(
            !seen[i as usize],
            "record {i} consumed twice (again at {}/{})",
            r.partition, r.offset
        );
        seen[i as usize] = true;
        assert_eq!(
            r.value.as_deref(),
            Some(value(i, e.pad).as_str()),
            "value of record {i} at {}/{}",
            r.partition,
            r.offset
        );
        if e.headers {
            assert_eq!(
                r.headers,
                headers_json(i),
                "headers of record {i} at {}/{}",
                r.partition,
                r.offset
            );
        }
        if let Some(base) = e.timestamp_base {
            assert_eq!(
                (r.timestamp, r.timestamp_type),
                (base + i as i64, 1),
                "timestamp (value, type; 1 = CreateTime) of record {i} at {}/{}",
                r.partition,
                r.offset
            );
        }
    }
}

/// One acknowledgement from ck_produce.py's --acks-out.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub index: u64,
    pub partition: i64,
    pub offset: i64,
}

pub fn parse_acks(lines: &[Value]) -> Vec<Ack> {
    lines
        .iter()
        .map(|a| Ack {
            index: a["i"].as_u64().expect("i"),
            partition: a["p"].as_i64().expect("p"),
            offset: a["o"].as_i64().expect("o"),
        })
        .collect()
}

/// Every acknowledged record is present at its acknowledged offset with the right key and
/// value, and within each partition acknowledged records are in production order.
pub fn assert_acks_present(acks: &[Ack], dump: &[Dumped], pad: usize) {
    let at: HashMap<(i64, i64), &Dumped> =
        dump.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut missing = Vec::new();
    for a in acks {
        match at.get(&(a.partition, a.offset)) {
            None => missing.push(*a),
            Some(r) => {
                assert_eq!(
                    r.key.as_deref(),
                    Some(key(a.index).as_str()),
                    "acknowledged record {} at {}/{} was replaced by a different record",
                    a.index,
                    a.partition,
                    a.offset
                );
                assert_eq!(
                    r.value.as_deref(),
                    Some(value(a.index, pad).as_str()),
                    "value of acknowledged record {} at {}/{}",
                    a.index,
                    a.partition,
                    a.offset
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are missing after restart; first few: {:?}; \
         consumed {} records",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(5)],
        dump.len()
    );
    let mut by_part: BTreeMap<i64, Vec<Ack>> = BTreeMap::new();
    for a in acks {
        by_part.entry(a.partition).or_default().push(*a);
    }
    for (p, mut v) in by_part {
        v.sort_by_key(|a| a.index);
        for w in v.windows(2) {
            assert!(
                w[0].offset < w[1].offset,
                "partition {p}: record {} acknowledged at offset {} but later record {} at {}",
                w[0].index,
                w[0].offset,
                w[1].index,
                w[1].offset
            );
        }
    }
}
