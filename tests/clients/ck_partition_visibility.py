#!/usr/bin/env python3
"""Polls Metadata for a topic while CreatePartitions grows it, and counts answers that show a
partition without a leader or replicas (a broker must not publish a partition before it can
serve it). Prints one JSON line: {"polls": n, "leaderless": n, "final": partitions}.
"""
import argparse
import json
import threading
import time

from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="grow")
    ap.add_argument("--to", type=int, default=2000)
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, 1, 1)])[a.topic].result(timeout=30)
    poller = AdminClient({"bootstrap.servers": a.bootstrap})
    stats = {"polls": 0, "leaderless": 0, "final": 0}
    done = threading.Event()

    def poll():
        while not done.is_set():
            t = poller.list_topics(topic=a.topic, timeout=10).topics.get(a.topic)
            stats["polls"] += 1
            if t is None or t.error is not None:
                continue
            bad = [p for p in t.partitions.values()
                   if p.leader < 0 or not p.replicas or p.error is not None]
            stats["leaderless"] += len(bad) > 0
            stats["final"] = len(t.partitions)

    th = threading.Thread(target=poll)
    th.start()
    admin.create_partitions([NewPartitions(a.topic, a.to)])[a.topic].result(timeout=120)
    deadline = time.time() + 60
    while stats["final"] < a.to and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    done.set()
    th.join()
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
