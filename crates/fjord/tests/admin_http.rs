//! The admin HTTP listener: /health and Prometheus /metrics.

mod common;

use common::{ck_produce, FjordProcess};

/// (metric name, labels text, value) for every sample line.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}').to_string()),
                None => (series.to_string(), String::new()),
            };
            Some((name, labels, value))
        })
        .collect()
}

#[test]
fn health_returns_200() {
    let broker = FjordProcess::start(&[]);
    let r = broker.http_get("/health");
    assert_eq!(r.status, 200, "GET /health: {}", r.body);
}

#[test]
fn metrics_count_bytes_in_and_requests_per_api() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("metered", 2, &[]);
    ck_produce(&broker, "metered", 2000, &["--value-pad", "50"]);
    let r = broker.http_get("/metrics");
    assert_eq!(r.status, 200, "GET /metrics");
    let s = samples(&r.body);
    assert!(!s.is_empty(), "no samples in /metrics:\n{}", r.body);

    let bytes_in: f64 = s
        .iter()
        .filter(|(n, _, _)| n.contains("bytes_in"))
        .map(|(_, _, v)| v)
        .sum();
    assert!(
        bytes_in >= 2000.0 * 50.0,
        "bytes-in should count at least the 100 kB of values produced, got {bytes_in}:\n{}",
        r.body
    );

    let requests = |api: &str| -> f64 {
        s.iter()
            .filter(|(n, l, _)| {
                n.contains("request")
                    && !n.contains("error")
                    && !n.contains("bucket")
                    && l.to_lowercase()
                        .contains(&format!("\"{}\"", api.to_lowercase()))
            })
            .map(|(_, _, v)| *v)
            .fold(0.0, f64::max)
    };
    for api in ["Produce", "Metadata", "ApiVersions", "CreateTopics"] {
        assert!(
            requests(api) > 0.0,
            "no non-zero per-API request counter for {api}:\n{}",
            r.body
        );
    }
}
