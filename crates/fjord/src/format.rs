//! How `fjord consume` prints records.

use bytes::Bytes;
use clap::ValueEnum;
use fjord_client::ConsumedRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value only.
    Value,
    /// Key, a tab, then the value.
    Kv,
    /// One JSON object per line: partition, offset, timestamp, key, value, headers.
    Json,
}

fn text(b: &Option<Bytes>) -> String {
    b.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn json_bytes(b: &Option<Bytes>) -> Option<std::borrow::Cow<'_, str>> {
    b.as_deref().map(String::from_utf8_lossy)
}

/// The JSON line, fields in this order. Bytes that are not UTF-8 are replaced (lossy).
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<std::borrow::Cow<'a, str>>,
    value: Option<std::borrow::Cow<'a, str>>,
    headers: serde_json::Map<String, serde_json::Value>,
}

/// One output line (without the newline) for `record`.
pub fn render(format: Format, record: &ConsumedRecord) -> String {
    match format {
        Format::Value => text(&record.value),
        Format::Kv => format!("{}\t{}", text(&record.key), text(&record.value)),
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(json_bytes(v))))
                .collect();
            let line = JsonRecord {
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: json_bytes(&record.key),
                value: json_bytes(&record.value),
                headers,
            };
            serde_json::to_string(&line).expect("JSON of strings and numbers")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_client::Compression;

    fn record(key: Option<&'static str>) -> ConsumedRecord {
        let batch = fjord_client::Client::encode_batch(
            &[fjord_client::ProduceRecord {
                key: key.map(|k| Bytes::from_static(k.as_bytes())),
                value: Some(Bytes::from_static(b"hello \"world\"")),
                headers: vec![("trace".into(), Some(Bytes::from_static(b"abc")))],
                timestamp: Some(1_700_000_000_000),
            }],
            Compression::None,
        )
        .unwrap();
        let (mut rs, _) = fjord_client::client::decode_records(2, batch, 0).unwrap();
        rs.pop().unwrap()
    }

    #[test]
    fn value_and_kv() {
        assert_eq!(render(Format::Value, &record(Some("k"))), "hello \"world\"");
        assert_eq!(render(Format::Kv, &record(Some("k"))), "k\thello \"world\"");
        assert_eq!(render(Format::Kv, &record(None)), "\thello \"world\"");
    }

    #[test]
    fn json_has_every_field() {
        let line = render(Format::Json, &record(None));
        assert!(
            line.starts_with("{\"partition\":2,\"offset\":0,\"timestamp\":"),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["partition"], 2);
        assert_eq!(v["offset"], 0);
        assert_eq!(v["timestamp"], 1_700_000_000_000i64);
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["value"], "hello \"world\"");
        assert_eq!(v["headers"]["trace"], "abc");
    }
}
