//! Non-librdkafka Python clients: kafka-python and aiokafka negotiate API versions and build
//! requests their own way.

mod common;

use common::FjordProcess;

#[test]
fn kafka_python_produce_consume_round_trip() {
    let broker = FjordProcess::start(&[]);
    // kafka-python creates the topic itself (CreateTopics through its own admin client).
    broker
        .python(
            "kafka_python_roundtrip.py",
            &["--topic", "kp", "--partitions", "3", "--count", "5000"],
        )
        .success("kafka-python round trip");
    broker.assert_no_panic_in_log();
}

#[test]
fn kafka_python_gzip_round_trip() {
    let broker = FjordProcess::start(&[]);
    broker
        .python(
            "kafka_python_roundtrip.py",
            &[
                "--topic",
                "kp-gzip",
                "--partitions",
                "1",
                "--count",
                "3000",
                "--compression",
                "gzip",
            ],
        )
        .success("kafka-python gzip round trip");
    broker.assert_no_panic_in_log();
}

#[test]
fn aiokafka_produce_consume_round_trip() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("aio", 3, &[]);
    broker
        .python(
            "aiokafka_roundtrip.py",
            &["--topic", "aio", "--count", "3000"],
        )
        .success("aiokafka round trip");
    broker.assert_no_panic_in_log();
}
