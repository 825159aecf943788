//! Which partition of a coordinator's topic (`__consumer_offsets`, `__transaction_state`) owns a
//! key: `abs(hashCode(key)) % partitions`, with Java's `String.hashCode` and Kafka's `Utils.abs`,
//! so a group or transactional id lands on the same partition as in Kafka.

/// The partition of `key` among `partitions` (at least one).
pub fn coordinator_partition(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(c as i32);
    }
    // Kafka's Utils.abs maps i32::MIN to 0 (it masks the sign bit).
    let abs = h & 0x7fff_ffff;
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_matches_java_hash_code() {
        // "my-group".hashCode() == -1906497762 in Java; Utils.abs masks the sign bit.
        assert_eq!(
            super::coordinator_partition("my-group", 50),
            (-1906497762i32 & 0x7fff_ffff) % 50
        );
        assert_eq!(super::coordinator_partition("", 50), 0);
    }
}
