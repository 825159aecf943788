#!/usr/bin/env python3
"""What librdkafka counted on the wire against what the broker's traffic accounting counted.

Produces --count records of --value-size bytes with one confluent-kafka producer, reads them
back with one consumer (assign(), no group membership), lets both go quiet (the producer
flushed; the consumer's partitions paused, its last long poll answered), takes a fresh
statistics callback from each (per broker `txbytes` / `rxbytes`: every request and response
frame, size prefix included) and then the broker's `/v1/traffic?scope=local`.

Prints one JSON line: {"producer": {"tx": N, "rx": N}, "consumer": {...}, "traffic": {...}}.
Exit status 0 if every record was produced and read back, 1 otherwise.
"""
import argparse
import json
import sys
import time
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


class Stats:
    """The latest statistics of one client, summed over its broker connections."""

    def __init__(self):
        self.seq = 0
        self.tx = 0
        self.rx = 0

    def __call__(self, text):
        s = json.loads(text)
        tx = rx = 0
        for b in s.get("brokers", {}).values():
            tx += b.get("txbytes", 0)
            rx += b.get("rxbytes", 0)
        self.tx, self.rx = tx, rx
        self.seq += 1

    def fresh(self, poll, wait_s):
        """Serve callbacks until two statistics newer than now arrived (after wait_s)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            poll(0.05)
        start = self.seq
        deadline = time.monotonic() + 10
        while self.seq < start + 2 and time.monotonic() < deadline:
            poll(0.05)
        return {"tx": self.tx, "rx": self.rx}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--admin", required=True, help="host:port of the broker's admin listener")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--value-size", type=int, default=1000)
    ap.add_argument("--producer-client-id", default="ck-traffic-producer")
    ap.add_argument("--consumer-client-id", default="ck-traffic-consumer")
    ap.add_argument("--client-rack", default="", help="the consumer's client.rack (Fetch rack_id)")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout

    pstats = Stats()
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "client.id": a.producer_client_id,
        "linger.ms": 5,
        "statistics.interval.ms": 100,
        "stats_cb": pstats,
    })
    value = b"v" * a.value_size
    failed = []
    for i in range(a.count):
        while True:
            try:
                p.produce(a.topic, value=value, key=str(i).encode(),
                          on_delivery=lambda err, msg: err and failed.append(str(err)))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(max(1.0, deadline - time.monotonic()))
    if left or failed:
        print(json.dumps({"error": f"{left} not delivered, failures: {failed[:3]}"}))
        return 1
    partitions = sorted(p.list_topics(a.topic, timeout=10).topics[a.topic].partitions)
    producer = pstats.fresh(p.poll, 0.3)

    cstats = Stats()
    conf = {
        "bootstrap.servers": a.bootstrap,
        "client.id": a.consumer_client_id,
        "group.id": "ck-traffic",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "statistics.interval.ms": 100,
        "stats_cb": cstats,
    }
    if a.client_rack:
        conf["client.rack"] = a.client_rack
    c = Consumer(conf)
    assignment = [TopicPartition(a.topic, n, OFFSET_BEGINNING) for n in partitions]
    c.assign(assignment)
    read = 0
    while read < a.count and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            print(json.dumps({"error": str(m.error())}))
            return 1
        read += 1
    if read < a.count:
        print(json.dumps({"error": f"read {read} of {a.count} records"}))
        return 1
    c.pause(assignment)
    # The last long poll (fetch.wait.max.ms) comes back before the statistics are taken.
    consumer = cstats.fresh(c.poll, 0.8)

    with urllib.request.urlopen(f"http://{a.admin}/v1/traffic?scope=local", timeout=10) as r:
        traffic = json.loads(r.read())
    print(json.dumps({"producer": producer, "consumer": consumer, "traffic": traffic}))
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
