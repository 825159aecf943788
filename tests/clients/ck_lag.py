#!/usr/bin/env python3
"""Commit patterns for the lag evaluation tests (Burrow's rules), with confluent-kafka.

--mode ok:     a subscribed consumer (group membership) reads everything produced and commits
               after each poll, while a producer keeps writing, until it has caught up.
--mode stop:   a commit-only consumer (assign(), no membership, as Spark/Flink) commits 2, 4, 6
               (lag every time), then stops; the producer goes on writing.
--mode stall:  commit-only, the same offset 3 every --interval for --seconds, with lag.
--mode rewind: commit-only, 5, 6, 7, then back to 2.

--partitions N spreads the records and the commit-only commits over partitions 0..N-1
(the topic must have them), for a group whose partitions live on several brokers.

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
    ap.add_argument("--partitions", type=int, default=1)
    a = ap.parse_args()

    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 0})

    parts = range(a.partitions)

    def produce(n):
        for i in range(n):
            for part in parts:
                p.produce(a.topic, value=b"x%d" % i, partition=part)
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
        c.commit(offsets=[TopicPartition(a.topic, part, offset) for part in parts],
                 asynchronous=False)
        commits += 1
        time.sleep(a.interval)

    if a.mode == "ok":
        c.subscribe([a.topic])
        # Produce one record per round for half of --seconds while reading and committing
        # each record; then read until nothing came for a second (caught up, lag 0).
        produce_until = time.time() + a.seconds / 2
        hard_deadline = time.time() + 60
        idle_since = None
        while time.time() < hard_deadline:
            if time.time() < produce_until:
                produce(1)
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                c.commit(message=m, asynchronous=False)
                commits += 1
                idle_since = None
            elif time.time() >= produce_until:
                idle_since = idle_since or time.time()
                if commits > 0 and time.time() - idle_since > 1.0:
                    break
    elif a.mode == "stop":
        c.assign([TopicPartition(a.topic, part, 0) for part in parts])
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
