#!/usr/bin/env python3
"""kafka-python round trip: create the topic with KafkaAdminClient, produce --count records
(keys, headers, explicit timestamps), then read them back with KafkaConsumer (assign + seek to
beginning) and check every record against its acknowledged (partition, offset).

kafka-python negotiates API versions on its own (not librdkafka), which is the point.
Prints a JSON summary; exits 1 with the first mismatch on failure.
"""
import argparse
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

import records


def fail(msg):
    print(f"kafka_python_roundtrip: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--compression", default=None, help="gzip (needs no extra module) or none")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    ts_base = int(time.time() * 1000) - 3_600_000
    deadline = time.monotonic() + a.timeout

    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=20000)
    admin.create_topics([NewTopic(a.topic, a.partitions, 1)], timeout_ms=20000)
    admin.close()

    prod = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all",
                         compression_type=None if a.compression in (None, "none") else a.compression,
                         request_timeout_ms=20000, linger_ms=5)
    futures = []
    for i in range(a.count):
        futures.append(prod.send(a.topic, key=records.key(i).encode(),
                                 value=records.value(i).encode(),
                                 headers=records.headers(i)[:2],  # kafka-python: no null header values
                                 timestamp_ms=ts_base + i))
    prod.flush(timeout=30)
    acked = {}
    for i, f in enumerate(futures):
        md = f.get(timeout=10)
        acked[(md.partition, md.offset)] = i
    prod.close(timeout=10)

    cons = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                         consumer_timeout_ms=1000, request_timeout_ms=30000)
    parts = None
    while time.monotonic() < deadline:
        parts = cons.partitions_for_topic(a.topic)
        if parts:
            break
        time.sleep(0.2)
    if not parts:
        fail(f"no partitions for {a.topic}")
    tps = [TopicPartition(a.topic, p) for p in sorted(parts)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    seen = {}
    while len(seen) < a.count and time.monotonic() < deadline:
        for m in cons:
            seen[(m.partition, m.offset)] = m
            if len(seen) >= a.count:
                break
    cons.close()
    if len(seen) != a.count:
        fail(f"consumed {len(seen)} records, expected {a.count}")
    for (p, o), i in acked.items():
        m = seen.get((p, o))
        if m is None:
            fail(f"acknowledged record {i} at partition {p} offset {o} not consumed")
        want_h = [(n, v) for n, v in records.headers(i)[:2]]
        got = (m.key, m.value, list(m.headers), m.timestamp)
        want = (records.key(i).encode(), records.value(i).encode(), want_h, ts_base + i)
        if got != want:
            fail(f"record {i} at {p}/{o}: got {got!r}, want {want!r}")
    for p in sorted(parts):
        offs = sorted(o for (pp, o) in seen if pp == p)
        if offs != list(range(len(offs))):
            fail(f"partition {p} offsets not contiguous from 0: {offs[:5]}...")
    print(json.dumps({"produced": a.count, "consumed": len(seen), "partitions": len(parts)}))


if __name__ == "__main__":
    main()
