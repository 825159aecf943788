//! kcat (librdkafka via the Debian package) against a real broker.

mod common;

use common::FjordProcess;

#[test]
fn kcat_lists_brokers_and_topics() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("kcat-meta", 3, &[]);
    let out = broker.kcat(&["-L", "-m", "20"], None).success("kcat -L");
    let text = out.stdout();
    assert!(
        text.contains(" 1 brokers:"),
        "kcat -L should list one broker:\n{text}"
    );
    assert!(
        text.contains(&format!("at {}", broker.bootstrap())),
        "kcat -L should show the broker at {}:\n{text}",
        broker.bootstrap()
    );
    assert!(
        text.contains("topic \"kcat-meta\" with 3 partitions:"),
        "kcat -L should list kcat-meta with 3 partitions:\n{text}"
    );
    for p in 0..3 {
        assert!(
            text.contains(&format!("partition {p}, leader ")),
            "partition {p} missing from kcat -L:\n{text}"
        );
    }
    assert!(
        !text.contains("Err") && !text.to_lowercase().contains("error"),
        "kcat -L reports an error:\n{text}"
    );

    // JSON form of the same request, to check the structure rather than the text.
    let out = broker
        .kcat(&["-L", "-J", "-t", "kcat-meta", "-m", "20"], None)
        .success("kcat -L -J");
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).expect("kcat -J output");
    assert_eq!(v["brokers"].as_array().map(Vec::len), Some(1), "{v}");
    let t = &v["topics"][0];
    assert_eq!(t["topic"], "kcat-meta", "{v}");
    assert_eq!(t["partitions"].as_array().map(Vec::len), Some(3), "{v}");
    broker.assert_no_panic_in_log();
}

#[test]
fn kcat_produce_consume_keys_byte_exact() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("kcat-rt", 1, &[]);
    let mut input = String::new();
    for i in 0..2000 {
        // Values with separators, spaces, unicode and varying length.
        let v = match i % 5 {
            0 => format!("plain value {i}"),
            1 => format!("with:colon:{i}"),
            2 => format!("ünïcødé ☃ {i}"),
            3 => format!("{i}-{}", "x".repeat(i % 3000)),
            _ => format!("\ttab {i} trailing space "),
        };
        input.push_str(&format!("k{i}:{v}\n"));
    }
    broker
        .kcat(
            &["-P", "-t", "kcat-rt", "-K:", "-z", "snappy"],
            Some(input.as_bytes()),
        )
        .success("kcat -P");
    let out = broker
        .kcat(
            &[
                "-C",
                "-t",
                "kcat-rt",
                "-e",
                "-o",
                "beginning",
                "-f",
                "%k:%s\n",
            ],
            None,
        )
        .success("kcat -C");
    let got = out.stdout();
    if got != input {
        let first = got
            .lines()
            .zip(input.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(input.lines().count()));
        panic!(
            "kcat consumed output differs from what was produced: {} vs {} lines, first difference at line {first}: got {:?} want {:?}",
            got.lines().count(),
            input.lines().count(),
            got.lines().nth(first),
            input.lines().nth(first)
        );
    }

    // Offsets as kcat sees them: 0..n in a single partition.
    let out = broker
        .kcat(
            &[
                "-C",
                "-t",
                "kcat-rt",
                "-e",
                "-o",
                "beginning",
                "-f",
                "%p %o\n",
            ],
            None,
        )
        .success("kcat -C offsets");
    let want: String = (0..2000).map(|o| format!("0 {o}\n")).collect();
    assert!(
        out.stdout() == want,
        "offsets are not 0..2000 in partition 0"
    );
    broker.assert_no_panic_in_log();
}

/// A catch-up read of large batches goes out with sendfile (the zero-copy counter covers most
/// of the bytes) and kcat and our own consumer get every record byte for byte, in order.
#[test]
fn kcat_catch_up_of_large_batches_is_zero_copy_and_byte_exact() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("catch-up", 1, &[]);
    // ~6 MB in large uncompressed batches: records of 1-2 KB with their index inside.
    let n = 4000;
    let mut input = String::new();
    for i in 0..n {
        let fill = char::from(b'a' + (i % 26) as u8).to_string();
        input.push_str(&format!("{i}:{}\n", fill.repeat(1000 + (i * 37) % 1000)));
    }
    broker
        .kcat(
            &[
                "-P",
                "-t",
                "catch-up",
                "-X",
                "linger.ms=200",
                "-X",
                "batch.size=1000000",
            ],
            Some(input.as_bytes()),
        )
        .success("kcat -P");
    let zero_copy = || {
        common::cluster::metric_value(
            &broker.http_get("/metrics").body,
            "fjord_fetch_zero_copy_bytes_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(zero_copy(), 0.0, "nothing fetched yet");
    let out = broker
        .kcat(&["-C", "-t", "catch-up", "-e", "-o", "beginning"], None)
        .success("kcat -C");
    assert!(out.stdout() == input, "kcat read back something else");
    let sent = zero_copy();
    assert!(
        sent >= 0.9 * input.len() as f64,
        "only {sent} of {} bytes went out with sendfile",
        input.len()
    );
    let out = broker
        .cli(&[
            "consume",
            "catch-up",
            "--from-beginning",
            "--count",
            &n.to_string(),
        ])
        .success("fjord consume");
    assert!(
        out.stdout() == input,
        "fjord consume read back something else"
    );
    assert!(
        zero_copy() > sent,
        "our client's fetches were not zero-copy"
    );
    broker.assert_no_panic_in_log();
}
