#!/usr/bin/env python3
"""librdkafka's test 0011 (test_message_single_partition_record_fail) with confluent-kafka.

Produces 100 messages to partition 0 of a compacted topic; every tenth has no key. With
--one-batch the 100 messages travel in one batch, so the broker refuses the batch and names the
10 keyless records (KIP-467): those fail with INVALID_RECORD and the other 90 with
_INVALID_DIFFERENT_RECORD. Without it every message is its own batch (batch.size=1): the 10
keyless ones fail with INVALID_RECORD and 90 are delivered.

Prints one JSON line: {"errors": {name: count}, "delivered": n}.
"""
import argparse
import collections
import json
import sys
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--one-batch", action="store_true")
    a = ap.parse_args()

    conf = {
        "bootstrap.servers": a.bootstrap,
        "message.timeout.ms": 20000,
        "enable.idempotence": False,
        "acks": "all",
    }
    if a.one_batch:
        conf.update({"linger.ms": 1000, "batch.num.messages": 1000})
    else:
        conf.update({"batch.size": 1, "linger.ms": 0})
    p = Producer(conf)
    errors = collections.Counter()
    delivered = 0
    messages = {}

    def on_delivery(err, msg):
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors[err.name()] += 1
            messages.setdefault(err.name(), err.str())

    for i in range(100):
        value = f"record-fail test message #{i}"
        key = None if i % 10 == 0 else value
        p.produce(a.topic, value=value, key=key, partition=0, on_delivery=on_delivery)
    deadline = time.time() + 60
    while len(p) > 0 and time.time() < deadline:
        p.poll(0.1)
    p.flush(10)
    print(json.dumps({"errors": dict(errors), "delivered": delivered, "messages": messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
