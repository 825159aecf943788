#!/usr/bin/env python3
"""Commit patterns for the lag evaluation tests (Burrow's rules), with confluent-kafka.

--mode ok:     a subscribed consumer (group membership) reads everything produced and commits
               after each poll, while a producer keeps writing, until it has caught up.
--mode stop:   a commit-only consumer (assign(), no membership, as Spark/Flink) commits 2, 4, 6
               (lag every time), then stops; the producer goes on writing.
--mode stall:  commit-only, the same offset 3 every --interval for --seconds, with lag.
--mode rewind: commit-only, 5, 6, 7, then back to 2.

Prints one JSON line: {"mode": ..., "commits": n}.
"""
import argparse
import json
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--mode", required=True, choices=["ok", "stop", "stall", "rewind"])
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()

    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 0})

    def produce(n):
        for i in range(n):
            p.produce(a.topic, value=b"x%d" % i, partition=0)
        p.flush(20)

    produce(20)
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    commits = 0

    def commit(offset):
        nonlocal commits
        c.commit(offsets=[TopicPartition(a.topic, 0, offset)], asynchronous=False)
        commits += 1
        time.sleep(a.interval)

    if a.mode == "ok":
        c.subscribe([a.topic])
        consumed = 0
        deadline = time.time() + a.seconds
        # Keep producing while consuming; stop producing half way so the consumer catches up.
        while time.time() < deadline:
            if time.time() < deadline - a.seconds / 2:
                produce(5)
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                consumed += 1
                c.commit(message=m, asynchronous=False)
                commits += 1
            elif time.time() > deadline - a.seconds / 2 and commits > 0:
                # Nothing more to read once producing stopped: caught up, last offset committed.
                break
    elif a.mode == "stop":
        c.assign([TopicPartition(a.topic, 0, 0)])
        for o in (2, 4, 6):
            commit(o)
        produce(10)
    elif a.mode == "stall":
        c.assign([TopicPartition(a.topic, 0, 0)])
        deadline = time.time() + a.seconds
        while time.time() < deadline:
            commit(3)
            produce(1)
    elif a.mode == "rewind":
        c.assign([TopicPartition(a.topic, 0, 0)])
        for o in (5, 6, 7, 2):
            commit(o)
    c.close()
    print(json.dumps({"mode": a.mode, "commits": commits}))


if __name__ == "__main__":
    main()
