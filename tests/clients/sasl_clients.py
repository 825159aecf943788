#!/usr/bin/env python3
"""SASL with Python clients (issue 16): produce --count records and read them back with
confluent-kafka (librdkafka) or kafka-python over SASL_PLAINTEXT with PLAIN or SCRAM-SHA-256/512,
or, with --expect-auth-failure, check that the client reports an authentication error.

Prints one JSON line: {"client", "mechanism", "produced", "consumed"} or {"auth_error": "..."};
exits 1 on any other outcome.
"""
import argparse
import json
import sys
import time


def fail(msg):
    print(f"sasl_clients: {msg}", file=sys.stderr)
    sys.exit(1)


def confluent(a):
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

    conf = {
        "bootstrap.servers": a.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": a.mechanism,
        "sasl.username": a.user,
        "sasl.password": a.password,
    }
    errors = []

    def on_error(e):
        errors.append(e)

    p = Producer({**conf, "error_cb": on_error, "message.timeout.ms": 20000})
    if a.expect_auth_failure:
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            p.poll(0.2)
            auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
            if auth:
                return {"auth_error": auth[0].str()}
        fail(f"no authentication error within {a.timeout}s; errors: {[e.str() for e in errors]}")
    acked = []
    for i in range(a.count):
        p.produce(a.topic, key=f"k{i}", value=f"v{i}",
                  on_delivery=lambda err, m: acked.append((err, m)))
        p.poll(a.interval)
    p.flush(a.timeout)
    bad = [str(e) for e, _ in acked if e is not None]
    if len(acked) != a.count or bad:
        fail(f"acked {len(acked)}/{a.count}, errors {bad[:3]}, client errors {[e.str() for e in errors]}")
    c = Consumer({**conf, "group.id": f"sasl-{a.topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([a.topic])
    got = set()
    deadline = time.monotonic() + a.timeout
    while len(got) < a.count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        got.add(m.value().decode())
    c.close()
    return {"produced": len(acked), "consumed": len(got)}


def kafka_python(a):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    conf = {
        "bootstrap_servers": a.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": a.mechanism,
        "sasl_plain_username": a.user,
        "sasl_plain_password": a.password,
        "request_timeout_ms": 20000,
    }
    if a.expect_auth_failure:
        # One connection (kafka-python's clients retry and guess versions around a failed
        # authentication): the error it reports is what the broker sent.
        import logging
        import socket
        from kafka.conn import BrokerConnection

        seen = []

        class Keep(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())

        logging.getLogger("kafka").addHandler(Keep())
        logging.getLogger("kafka").setLevel(logging.ERROR)
        host, port = a.bootstrap.rsplit(":", 1)
        conn = BrokerConnection(host, int(port), socket.AF_INET, api_version=(2, 5),
                                **{k: v for k, v in conf.items() if k != "bootstrap_servers"})
        if conn.connect_blocking(a.timeout):
            fail("connected with a wrong password")
        auth = [m for m in seen if "SaslAuthenticationFailedError" in m]
        if not auth:
            fail(f"no authentication error; log: {seen}")
        return {"auth_error": auth[-1]}
    p = KafkaProducer(**conf)
    futures = [p.send(a.topic, key=f"k{i}".encode(), value=f"v{i}".encode()) for i in range(a.count)]
    p.flush(a.timeout)
    metas = [f.get(timeout=a.timeout) for f in futures]
    p.close()
    c = KafkaConsumer(**conf, enable_auto_commit=False, consumer_timeout_ms=int(a.timeout * 1000))
    parts = {m.partition for m in metas}
    tps = [TopicPartition(a.topic, q) for q in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = set()
    for m in c:
        got.add(m.value.decode())
        if len(got) >= a.count:
            break
    c.close()
    return {"produced": len(metas), "consumed": len(got)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--mechanism", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--topic", default="sasl")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--interval", type=float, default=0,
                    help="seconds between records (confluent), to outlive a session")
    ap.add_argument("--expect-auth-failure", action="store_true")
    a = ap.parse_args()
    out = confluent(a) if a.client == "confluent" else kafka_python(a)
    out.update({"client": a.client, "mechanism": a.mechanism})
    if not a.expect_auth_failure and out["consumed"] != a.count:
        fail(f"consumed {out['consumed']} of {a.count}: {out}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
