#!/usr/bin/env python3
"""Read a topic from the beginning with confluent-kafka (assign, no consumer group) and dump
every record as a JSON line {"p","o","k","v","h","ts","tst"} to --out.

Stops when every partition has reached its end and at least --expect records were read.
Exits 2 if that doesn't happen within --timeout seconds (what was read is still written).
"""
import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

import records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True, help="JSON-lines file, or - for stdout")
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("-X", dest="extra", action="append", default=[], help="librdkafka key=value")
    a = ap.parse_args()

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": "fjord-it-dump",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }
    for kv in a.extra:
        k, v = kv.split("=", 1)
        conf[k] = v
    c = Consumer(conf)
    deadline = time.monotonic() + a.timeout

    md = None
    while time.monotonic() < deadline:
        md = c.list_topics(a.topic, timeout=10)
        t = md.topics.get(a.topic)
        if t is not None and t.error is None and t.partitions:
            break
        time.sleep(0.2)
    else:
        print(f"ck_consume: topic {a.topic} not found in metadata: {md and md.topics}", file=sys.stderr)
        sys.exit(2)
    parts = sorted(md.topics[a.topic].partitions)
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts])

    out = sys.stdout if a.out == "-" else open(a.out, "w", buffering=1 << 16)
    count = 0
    at_end = set()
    errors = []
    while time.monotonic() < deadline:
        if len(at_end) == len(parts) and count >= a.expect:
            break
        for m in c.consume(num_messages=1000, timeout=0.5):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    errors.append(str(err))
                    print(f"ck_consume: error: {err}", file=sys.stderr)
                continue
            at_end.discard(m.partition())
            tst, ts = m.timestamp()
            hdrs = m.headers() or []
            out.write(json.dumps({
                "p": m.partition(), "o": m.offset(),
                "k": records.text(m.key()), "v": records.text(m.value()),
                "h": [[n, records.text(v)] for n, v in hdrs],
                "ts": ts, "tst": tst,
            }) + "\n")
            count += 1
    done = len(at_end) == len(parts) and count >= a.expect
    out.flush()
    c.close()
    summary = {"count": count, "partitions": len(parts), "complete": done, "errors": errors[:10]}
    print(json.dumps(summary), file=sys.stderr if a.out == "-" else sys.stdout, flush=True)
    if not done:
        print(f"ck_consume: timed out after {a.timeout}s with {count} records "
              f"(expected {a.expect}); partitions at end: {sorted(at_end)} of {parts}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
