#!/usr/bin/env python3
"""A confluent-kafka consumer that assigns partitions itself (no group membership) and commits
offsets to a group, with the given group.protocol — librdkafka tests 0030/0130 do this. With
`group.protocol=consumer` librdkafka sends its member id and epoch -1, which Kafka accepts while
the group has no members.

Prints one JSON line: {"consumed": n, "commit": error name or "OK", "committed": offset}.
"""
import argparse
import json

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--protocol", default="consumer")
    a = ap.parse_args()

    p = Producer({"bootstrap.servers": a.bootstrap})
    for i in range(10):
        p.produce(a.topic, value=str(i).encode(), partition=0)
    p.flush(20)

    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "group.protocol": a.protocol,
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(a.topic, 0, 0)])
    consumed = 0
    for _ in range(100):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            consumed += 1
        if consumed == 10:
            break
    out = {"consumed": consumed}
    try:
        c.commit(offsets=[TopicPartition(a.topic, 0, consumed)], asynchronous=False)
        out["commit"] = "OK"
    except KafkaException as e:
        out["commit"] = e.args[0].name()
    got = c.committed([TopicPartition(a.topic, 0)], timeout=10)
    out["committed"] = got[0].offset
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
