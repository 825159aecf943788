//! Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`,
//! bit-for-bit as the Java client (`Utils.murmur2`), so keys land where Kafka clients put them;
//! and [`Partitioner`], which also places unkeyed records, optionally only on partitions led in
//! the producer's rack (AZ-local produce, as Kafka's KIP-1123 `partitioner.rack.aware`).

use std::collections::HashMap;

use crate::client::{BrokerInfo, TopicMetadata};

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed `0x9747b28c`, little-endian blocks.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "partition count must be positive");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Chooses a partition for each record of one topic, as Kafka's built-in partitioner does:
///
/// - a keyed record goes to [`partition_for_key`] over all partitions, whatever their leaders
///   (so keys land where every Kafka client puts them);
/// - unkeyed records stick to one partition until [`Partitioner::next_batch`], then move on
///   round-robin among the *candidates*: the partitions with a leader whose leader is in the
///   producer's rack, when a rack is set and at least one is; otherwise all partitions with a
///   leader (KIP-1123's fallback); otherwise all partitions.
///
/// It holds no connection: feed it each Metadata answer with [`Partitioner::update`], and the
/// candidates follow leadership as it moves.
///
/// ```no_run
/// # async fn example() -> fjord_client::Result<()> {
/// use fjord_client::{client_id_with_az, Client, ClientConfig, Partitioner};
/// use fjord_client::{ProduceOptions, ProduceRecord};
///
/// // A producer in rack (availability zone) "b"; its client id carries `fjord_az=b`, from
/// // which brokers account its traffic to rack b.
/// let mut config = ClientConfig::default();
/// config.connection.client_id = client_id_with_az("orders-app", "b");
/// let client = Client::connect_with("127.0.0.1:9092", config).await?;
/// let mut partitioner = Partitioner::new(Some("b".to_string()), 0);
/// partitioner.update(&client.topic_metadata("orders").await?, &client.brokers());
/// for _ in 0..10 {
///     let batch = vec![ProduceRecord::new(None::<&'static [u8]>, &b"event"[..]); 100];
///     let partition = partitioner.partition(None); // led in rack b, if any partition is
///     client.produce("orders", partition, &batch, ProduceOptions::default()).await?;
///     partitioner.next_batch();
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Partitioner {
    rack: Option<String>,
    partition_count: i32,
    /// Partitions with a leader, ascending.
    available: Vec<i32>,
    /// Those of `available` led by a broker in `rack`, ascending.
    in_rack: Vec<i32>,
    /// Round-robin position among the candidates; the sticky partition is
    /// `candidates[sticky % candidates.len()]`.
    sticky: usize,
}

impl Partitioner {
    /// A partitioner for a producer in `rack` (`None`: not rack-aware). `start` is where the
    /// round-robin begins (random in a producer, so that many producers spread out).
    pub fn new(rack: Option<String>, start: usize) -> Partitioner {
        Partitioner {
            rack: rack.filter(|r| !r.is_empty()),
            partition_count: 0,
            available: Vec::new(),
            in_rack: Vec::new(),
            sticky: start,
        }
    }

    /// Take the partitions and leaders of a Metadata answer for the topic; `brokers` gives the
    /// leaders' racks (a leader missing from it is in no rack).
    pub fn update(&mut self, topic: &TopicMetadata, brokers: &[BrokerInfo]) {
        let racks: HashMap<i32, &str> = brokers
            .iter()
            .filter_map(|b| b.rack.as_deref().map(|r| (b.node_id, r)))
            .collect();
        self.partition_count = topic.partitions.len() as i32;
        self.available.clear();
        self.in_rack.clear();
        for p in &topic.partitions {
            if p.leader < 0 {
                continue;
            }
            self.available.push(p.partition);
            if self.rack.is_some() && racks.get(&p.leader).copied() == self.rack.as_deref() {
                self.in_rack.push(p.partition);
            }
        }
        self.available.sort_unstable();
        self.in_rack.sort_unstable();
    }

    /// The producer's rack, if rack-aware.
    pub fn rack(&self) -> Option<&str> {
        self.rack.as_deref()
    }

    /// The partition count from the last [`Partitioner::update`].
    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// The partitions with a leader in the producer's rack (empty when not rack-aware).
    pub fn in_rack(&self) -> &[i32] {
        &self.in_rack
    }

    /// Whether unkeyed records currently go only to partitions led in the producer's rack
    /// (false when not rack-aware or when no partition is led there).
    pub fn is_rack_local(&self) -> bool {
        !self.in_rack.is_empty()
    }

    /// The partition for a record with `key` (`None`: unkeyed). Panics before the first
    /// [`Partitioner::update`] with a topic that has partitions.
    pub fn partition(&self, key: Option<&[u8]>) -> i32 {
        match key {
            Some(k) => partition_for_key(k, self.partition_count),
            None => self.unkeyed(),
        }
    }

    /// The current sticky partition for unkeyed records.
    pub fn unkeyed(&self) -> i32 {
        let candidates = if !self.in_rack.is_empty() {
            &self.in_rack
        } else {
            &self.available
        };
        if candidates.is_empty() {
            assert!(self.partition_count > 0, "partition count must be positive");
            return (self.sticky % self.partition_count as usize) as i32;
        }
        candidates[self.sticky % candidates.len()]
    }

    /// Move unkeyed records on to the next candidate (Kafka switches once `batch.size` bytes
    /// went to the sticky partition; callers that send whole batches switch after each).
    pub fn next_batch(&mut self) {
        self.sticky = self.sticky.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::client::PartitionMetadata;
    use uuid::Uuid;

    /// Brokers 1, 2, 3 in racks a, b, c (and 4 in no rack).
    fn brokers() -> Vec<BrokerInfo> {
        (1..=4)
            .map(|id| BrokerInfo {
                node_id: id,
                host: format!("127.0.0.{id}"),
                port: 9092,
                rack: (id <= 3).then(|| ((b'a' + id as u8 - 1) as char).to_string()),
                is_fenced: false,
            })
            .collect()
    }

    /// A topic whose partition `i` is led by `leaders[i]` (-1: no leader).
    fn topic(leaders: &[i32]) -> TopicMetadata {
        TopicMetadata {
            name: "t".into(),
            topic_id: Uuid::nil(),
            is_internal: false,
            error_code: 0,
            partitions: leaders
                .iter()
                .enumerate()
                .map(|(i, &leader)| PartitionMetadata {
                    partition: i as i32,
                    error_code: 0,
                    leader,
                    leader_epoch: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    offline_replicas: vec![],
                })
                .collect(),
        }
    }

    /// The unkeyed partitions over `n` batches.
    fn unkeyed_over(p: &mut Partitioner, n: usize) -> Vec<i32> {
        (0..n)
            .map(|_| {
                let got = p.partition(None);
                p.next_batch();
                got
            })
            .collect()
    }

    #[test]
    fn unkeyed_records_go_round_robin_to_partitions_led_in_the_rack() {
        // Partitions 0..6 led by 1, 2, 3, 1, 2, 3: rack b leads 1 and 4.
        let mut p = Partitioner::new(Some("b".into()), 7);
        p.update(&topic(&[1, 2, 3, 1, 2, 3]), &brokers());
        assert_eq!(p.in_rack(), &[1, 4]);
        assert!(p.is_rack_local());
        // Sticky within a batch, then the next rack-local partition.
        assert_eq!(p.unkeyed(), p.unkeyed());
        assert_eq!(unkeyed_over(&mut p, 4), vec![4, 1, 4, 1]);
    }

    #[test]
    fn keyed_records_keep_hashing_over_all_partitions() {
        let mut p = Partitioner::new(Some("b".into()), 0);
        // Partition 2 has no leader: a key still hashes over all 6 (Kafka does the same).
        p.update(&topic(&[1, 2, -1, 1, 2, 3]), &brokers());
        for key in [&b"foobar"[..], b"21", b"abc", b"a-little-bit-long-string"] {
            assert_eq!(p.partition(Some(key)), partition_for_key(key, 6));
        }
        let plain = {
            let mut q = Partitioner::new(None, 0);
            q.update(&topic(&[1, 2, -1, 1, 2, 3]), &brokers());
            q
        };
        assert_eq!(
            plain.partition(Some(b"foobar")),
            p.partition(Some(b"foobar"))
        );
    }

    #[test]
    fn falls_back_to_every_available_partition() {
        // No partition led in rack c.
        let mut p = Partitioner::new(Some("c".into()), 0);
        p.update(&topic(&[1, 2, -1, 1, 2]), &brokers());
        assert!(!p.is_rack_local());
        assert_eq!(unkeyed_over(&mut p, 4), vec![0, 1, 3, 4]);

        // An unknown rack, and no rack at all: the same.
        let mut unknown = Partitioner::new(Some("z".into()), 0);
        unknown.update(&topic(&[1, 2, -1, 1, 2]), &brokers());
        assert_eq!(unkeyed_over(&mut unknown, 4), vec![0, 1, 3, 4]);
        let mut none = Partitioner::new(None, 0);
        none.update(&topic(&[1, 2, -1, 1, 2]), &brokers());
        assert!(none.in_rack().is_empty());
        assert_eq!(unkeyed_over(&mut none, 4), vec![0, 1, 3, 4]);
        // An empty rack is no rack.
        assert_eq!(Partitioner::new(Some(String::new()), 0).rack(), None);

        // A leader whose broker has no rack is in no rack.
        let mut p = Partitioner::new(Some("b".into()), 0);
        p.update(&topic(&[4, 4]), &brokers());
        assert!(!p.is_rack_local());

        // No partition has a leader: all partitions, as Kafka's producer.
        let mut p = Partitioner::new(Some("b".into()), 0);
        p.update(&topic(&[-1, -1, -1]), &brokers());
        assert_eq!(unkeyed_over(&mut p, 3), vec![0, 1, 2]);
    }

    #[test]
    fn the_rack_local_set_follows_leadership() {
        let mut p = Partitioner::new(Some("b".into()), 0);
        p.update(&topic(&[1, 2, 3]), &brokers());
        assert_eq!(unkeyed_over(&mut p, 2), vec![1, 1]);
        // Broker 2 fails: its partition moves to 3; nothing is led in b any more.
        p.update(&topic(&[1, 3, 3]), &brokers());
        assert!(!p.is_rack_local());
        assert_eq!(unkeyed_over(&mut p, 3), vec![2, 0, 1]);
        // Broker 2 is back and leads partitions 0 and 2.
        p.update(&topic(&[2, 3, 2]), &brokers());
        assert_eq!(p.in_rack(), &[0, 2]);
        let got = unkeyed_over(&mut p, 4);
        assert!(got.iter().all(|x| [0, 2].contains(x)), "{got:?}");
        assert!(got.contains(&0) && got.contains(&2), "{got:?}");
        // Partitions added: the new one led in b joins the set.
        p.update(&topic(&[2, 3, 2, 1, 2]), &brokers());
        assert_eq!(p.partition_count(), 5);
        assert_eq!(p.in_rack(), &[0, 2, 4]);
        assert_eq!(
            p.partition(Some(b"foobar")),
            partition_for_key(b"foobar", 5)
        );
    }

    /// The vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn kafka_murmur2_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partition_is_non_negative_and_stable() {
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        // murmur2("21") is negative; the sign bit is masked off, not abs()'d.
        assert_eq!(
            partition_for_key(b"21", 7),
            (-973932308i32 & 0x7fff_ffff) % 7
        );
        for p in 1..20 {
            let got = partition_for_key(b"a-little-bit-long-string", p);
            assert!((0..p).contains(&got));
        }
    }
}
