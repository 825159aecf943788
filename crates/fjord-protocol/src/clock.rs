//! Wall-clock time as Kafka carries it: milliseconds since the Unix epoch, as `i64`.
//!
//! Record timestamps, `LogAppendTime`, retention by time, `segment.ms`, ISR lag and group
//! session deadlines are all Kafka epoch milliseconds, so every crate that stamps or compares
//! them reads the clock here, once, the same way. The functions that decide (validation,
//! replication, the controller) take `now_ms` as an argument instead of calling this, so they
//! stay deterministic under test; only the code at the edge reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (Kafka's `Time.milliseconds()`).
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `t` in milliseconds since the Unix epoch (a file's mtime, for example). A time before the
/// epoch (a clock set far back) reads as 0 rather than failing.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // 2020-09-13: any machine running this is later.
        assert!(now_ms() > 1_600_000_000_000);
    }
}
