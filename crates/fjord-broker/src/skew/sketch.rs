//! A weighted Space-Saving sketch (Metwally, Agrawal, El Abbadi 2005): the heaviest keys of a
//! stream in a fixed number of counters, whatever the number of distinct keys.
//!
//! Each counter holds a key (by a 64-bit hash, with the key's first [`KEY_SHOWN`] bytes kept
//! for display), an estimated weight and the most that estimate may overcount (`error`). A key
//! already counted adds to its counter; a new key takes a free counter, or replaces the
//! smallest, inheriting its weight as its error. Guarantees, with `W` the total weight and `k`
//! the counters: `estimate - error <= true weight <= estimate`; every key heavier than `W/k` is
//! in the sketch; the smallest counter is at most `W/k`. Pure data, no I/O, no locks.
//!
//! [`SpaceSaving::decay`] scales every weight by the same factor, so old traffic fades and the
//! guarantees hold for the decayed stream.

/// Key bytes kept for display (the identity is the hash of up to 256 bytes and the length).
pub const KEY_SHOWN: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub hash: u64,
    /// The key's first bytes; `None` for records without a key.
    pub key: Option<KeyPrefix>,
    pub weight: f64,
    pub error: f64,
}

/// The first [`KEY_SHOWN`] bytes of a key and its full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPrefix {
    bytes: [u8; KEY_SHOWN],
    shown: u8,
    pub len: u32,
}

impl KeyPrefix {
    pub fn new(key: &[u8], len: usize) -> KeyPrefix {
        let shown = key.len().min(KEY_SHOWN);
        let mut bytes = [0; KEY_SHOWN];
        bytes[..shown].copy_from_slice(&key[..shown]);
        KeyPrefix {
            bytes,
            shown: shown as u8,
            len: len.min(u32::MAX as usize) as u32,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.shown as usize]
    }

    /// Whether bytes were cut off.
    pub fn truncated(&self) -> bool {
        (self.shown as u32) < self.len
    }
}

/// The sketch: at most `capacity` counters.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    counters: Vec<Counter>,
    capacity: usize,
    total: f64,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        let capacity = capacity.max(1);
        SpaceSaving {
            counters: Vec::with_capacity(capacity),
            capacity,
            total: 0.0,
        }
    }

    /// Count `weight` for the key with `hash` (its prefix is built only if it gets a counter).
    pub fn add(&mut self, hash: u64, key: impl FnOnce() -> Option<KeyPrefix>, weight: f64) {
        self.total += weight;
        // Linear scans: with 16–64 counters of 64 bytes this is a few cache lines, faster than
        // a hash map plus a heap, and it allocates nothing.
        if let Some(c) = self.counters.iter_mut().find(|c| c.hash == hash) {
            c.weight += weight;
            return;
        }
        if self.counters.len() < self.capacity {
            self.counters.push(Counter {
                hash,
                key: key(),
                weight,
                error: 0.0,
            });
            return;
        }
        let c = self
            .counters
            .iter_mut()
            .min_by(|a, b| a.weight.total_cmp(&b.weight))
            .expect("a full sketch has counters");
        c.error = c.weight;
        c.weight += weight;
        c.hash = hash;
        c.key = key();
    }

    /// Scale every weight (and the total) by `factor` in `0..=1`.
    pub fn decay(&mut self, factor: f64) {
        let f = factor.clamp(0.0, 1.0);
        self.total *= f;
        for c in &mut self.counters {
            c.weight *= f;
            c.error *= f;
        }
    }

    /// The weight counted (decayed).
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The heaviest `n` counters, heaviest first.
    pub fn top(&self, n: usize) -> Vec<Counter> {
        let mut v = self.counters.clone();
        v.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.hash.cmp(&b.hash)));
        v.truncate(n);
        v
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn key(i: u64) -> Option<KeyPrefix> {
        let s = format!("key-{i}");
        Some(KeyPrefix::new(s.as_bytes(), s.len()))
    }

    /// Feed `stream`, then check Space-Saving's bounds against the exact counts.
    fn check(k: usize, stream: &[u64]) -> SpaceSaving {
        let mut s = SpaceSaving::new(k);
        let mut exact: HashMap<u64, f64> = HashMap::new();
        for &x in stream {
            s.add(x, || key(x), 1.0);
            *exact.entry(x).or_default() += 1.0;
        }
        assert!(s.len() <= k);
        let total = stream.len() as f64;
        assert_eq!(s.total(), total);
        let top = s.top(k);
        for c in &top {
            let truth = exact[&c.hash];
            assert!(c.weight >= truth, "{c:?} truth {truth}");
            assert!(c.weight - c.error <= truth, "{c:?} truth {truth}");
            assert!(c.error <= total / k as f64 + 1e-9, "{c:?}");
        }
        // Every key heavier than W/k is present.
        for (x, w) in &exact {
            if *w > total / k as f64 {
                assert!(top.iter().any(|c| c.hash == *x), "key {x} ({w}) missing");
            }
        }
        s
    }

    #[test]
    fn a_dominant_key_is_found_with_its_share() {
        let mut rng = StdRng::seed_from_u64(7);
        let stream: Vec<u64> = (0..100_000)
            .map(|_| {
                if rng.gen_bool(0.8) {
                    0
                } else {
                    rng.gen_range(1..1_000_000)
                }
            })
            .collect();
        let s = check(16, &stream);
        let top = &s.top(1)[0];
        assert_eq!(top.hash, 0);
        assert_eq!(top.key.unwrap().bytes(), b"key-0");
        let share = top.weight / s.total();
        assert!((0.79..0.82).contains(&share), "{share}");
    }

    #[test]
    fn zipf_heavy_hitters_within_bounds() {
        let mut rng = StdRng::seed_from_u64(11);
        // Zipf-ish over 10k keys: P(i) ~ 1/i.
        let n = 10_000u64;
        let h: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
        let stream: Vec<u64> = (0..200_000)
            .map(|_| {
                let mut u = rng.gen::<f64>() * h;
                let mut i = 1;
                while i < n {
                    u -= 1.0 / i as f64;
                    if u <= 0.0 {
                        break;
                    }
                    i += 1;
                }
                i
            })
            .collect();
        let s = check(32, &stream);
        assert_eq!(s.top(1)[0].hash, 1);
    }

    #[test]
    fn adversarial_streams_keep_bounds_and_memory() {
        // All distinct keys: every counter churns; memory stays at k counters.
        let distinct: Vec<u64> = (0..50_000).collect();
        let s = check(16, &distinct);
        assert_eq!(s.len(), 16);
        // A heavy key hidden behind a flood of new keys arriving in between each of its hits.
        let mut hidden = Vec::new();
        for i in 0..20_000u64 {
            hidden.push(u64::MAX);
            hidden.push(1_000_000 + 2 * i);
            hidden.push(1_000_001 + 2 * i);
        }
        let s = check(16, &hidden);
        assert_eq!(s.top(1)[0].hash, u64::MAX);
        // Round-robin over exactly k+1 keys: the worst case for evictions.
        let rr: Vec<u64> = (0..17 * 1000).map(|i| i % 17).collect();
        check(16, &rr);
        // Sorted runs: one key after another.
        let runs: Vec<u64> = (0..100).flat_map(|k| std::iter::repeat_n(k, 100)).collect();
        check(16, &runs);
    }

    #[test]
    fn weights_decay_and_long_keys_are_cut() {
        let mut s = SpaceSaving::new(4);
        let long = vec![b'k'; 1000];
        s.add(1, || Some(KeyPrefix::new(&long, long.len())), 100.0);
        s.add(2, || None, 50.0);
        s.decay(0.5);
        assert_eq!(s.total(), 75.0);
        let top = s.top(4);
        assert_eq!(top[0].weight, 50.0);
        let k = top[0].key.unwrap();
        assert_eq!(k.bytes().len(), KEY_SHOWN);
        assert!(k.truncated());
        assert_eq!(k.len, 1000);
        assert_eq!(top[1].key, None);
        assert!(std::mem::size_of::<Counter>() <= 80);
    }

    /// ns per sampled record of the sketch (not of the key walk), for docs/performance.md:
    /// `cargo test --release -p fjord-broker --lib skew::sketch::tests::ns_per_update -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn ns_per_update() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let mut rng = StdRng::seed_from_u64(3);
        let keys: Vec<String> = (0..1_000_000)
            .map(|_| {
                if rng.gen_bool(0.8) {
                    "hot-key".to_string()
                } else {
                    format!("user-{}", rng.gen_range(0..100_000))
                }
            })
            .collect();
        for k in [16, 32] {
            let mut s = SpaceSaving::new(k);
            let t = std::time::Instant::now();
            for key in &keys {
                let h = hasher.hash_one(key.as_bytes());
                s.add(h, || Some(KeyPrefix::new(key.as_bytes(), key.len())), 100.0);
            }
            let ns = t.elapsed().as_nanos() as f64 / keys.len() as f64;
            println!("k={k}: {ns:.1} ns per record (hash + update), 80% one key");
            std::hint::black_box(&s);
        }
    }
}
