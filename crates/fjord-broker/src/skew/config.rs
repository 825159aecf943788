//! `skew.*`: what the partition-skew detector samples and when it warns. Pure parsing.

use crate::config::{parse_bool, parse_int};

/// The partition-skew settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SkewConfig {
    /// `skew.sketch.enable`: sample produce batches into each partition's top-keys sketch.
    /// Off, the produce path only adds the batch's bytes to the partition's counter.
    pub sketch_enabled: bool,
    /// `skew.sample.rate`: one produce batch in this many, per partition, is sampled (1: all).
    pub sample_every: u64,
    /// `skew.sketch.counters`: counters per partition sketch (the keys it can tell apart).
    pub counters: usize,
    /// `skew.warn.ratio`: a partition whose bytes-in rate is at least this times its topic's
    /// mean per partition is skewed.
    pub warn_ratio: f64,
    /// `skew.warn.min.bytes.per.sec`: partitions slower than this never warn.
    pub min_rate: f64,
    /// `skew.check.interval.ms`: how often rates are computed and checked.
    pub interval_ms: u64,
    /// `skew.window.ms`: the window rates are averaged over (and the sketch's half-life).
    pub window_ms: u64,
}

impl Default for SkewConfig {
    fn default() -> Self {
        SkewConfig {
            sketch_enabled: true,
            sample_every: 16,
            counters: 16,
            warn_ratio: 2.0,
            min_rate: 102_400.0,
            interval_ms: 30_000,
            window_ms: 300_000,
        }
    }
}

impl SkewConfig {
    /// From the broker's merged properties (`get` returns the value or the default); errors
    /// are one line naming the key, the value and what is allowed.
    pub fn parse(get: &dyn Fn(&str) -> String) -> Result<SkewConfig, String> {
        let ratio = get("skew.warn.ratio");
        let warn_ratio = match ratio.trim().parse::<f64>() {
            Ok(r) if r > 1.0 && r.is_finite() => r,
            _ => {
                return Err(format!(
                    "invalid value \"{ratio}\" for skew.warn.ratio: expected a number above 1, e.g. 2.0"
                ))
            }
        };
        let c = SkewConfig {
            sketch_enabled: parse_bool(&get("skew.sketch.enable"), "skew.sketch.enable")?,
            sample_every: parse_int(&get("skew.sample.rate"), "skew.sample.rate", 1, 1 << 20)?
                as u64,
            counters: parse_int(&get("skew.sketch.counters"), "skew.sketch.counters", 4, 256)?
                as usize,
            warn_ratio,
            min_rate: parse_int(
                &get("skew.warn.min.bytes.per.sec"),
                "skew.warn.min.bytes.per.sec",
                0,
                i64::MAX,
            )? as f64,
            interval_ms: parse_int(
                &get("skew.check.interval.ms"),
                "skew.check.interval.ms",
                100,
                86_400_000,
            )? as u64,
            window_ms: parse_int(&get("skew.window.ms"), "skew.window.ms", 1000, 86_400_000)?
                as u64,
        };
        if c.window_ms < c.interval_ms {
            return Err(format!(
                "invalid value \"{}\" for skew.window.ms: must be at least skew.check.interval.ms ({})",
                c.window_ms, c.interval_ms
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SkewConfig, String> {
        let m: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        SkewConfig::parse(&|k| {
            m.get(k).map(|v| v.to_string()).unwrap_or_else(|| {
                match k {
                    "skew.sketch.enable" => "true",
                    "skew.sample.rate" => "16",
                    "skew.sketch.counters" => "16",
                    "skew.warn.ratio" => "2.0",
                    "skew.warn.min.bytes.per.sec" => "102400",
                    "skew.check.interval.ms" => "30000",
                    _ => "300000",
                }
                .to_string()
            })
        })
    }

    #[test]
    fn defaults_and_bad_values() {
        assert_eq!(parse(&[]).unwrap(), SkewConfig::default());
        assert_eq!(
            crate::config::BrokerConfig::default().skew,
            SkewConfig::default()
        );
        let c = parse(&[("skew.sketch.enable", "false"), ("skew.warn.ratio", "3.5")]).unwrap();
        assert!(!c.sketch_enabled);
        assert_eq!(c.warn_ratio, 3.5);
        for (k, v) in [
            ("skew.warn.ratio", "1"),
            ("skew.warn.ratio", "x"),
            ("skew.warn.ratio", "inf"),
            ("skew.sample.rate", "0"),
            ("skew.sketch.counters", "1000"),
            ("skew.window.ms", "1000"),
        ] {
            let e = parse(&[(k, v)]).unwrap_err();
            assert!(e.contains(k) && !e.contains('\n'), "{e}");
        }
    }
}
