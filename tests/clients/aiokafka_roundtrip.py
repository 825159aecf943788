#!/usr/bin/env python3
"""aiokafka round trip: produce --count records with send_and_wait batches, read them back
with AIOKafkaConsumer (assign + seek_to_beginning) and compare against the acknowledged
(partition, offset). Prints a JSON summary; exits 1 with the first mismatch on failure.
"""
import argparse
import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import records


def fail(msg):
    print(f"aiokafka_roundtrip: {msg}", file=sys.stderr)
    sys.exit(1)


async def run(a):
    ts_base = int(time.time() * 1000) - 3_600_000
    prod = AIOKafkaProducer(bootstrap_servers=a.bootstrap, acks="all", request_timeout_ms=20000)
    await prod.start()
    try:
        futs = []
        for i in range(a.count):
            futs.append(await prod.send(a.topic, key=records.key(i).encode(),
                                        value=records.value(i).encode(),
                                        headers=records.headers(i)[:2], timestamp_ms=ts_base + i))
        acked = {}
        for i, f in enumerate(await asyncio.gather(*futs)):
            acked[(f.partition, f.offset)] = i
    finally:
        await prod.stop()

    cons = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None,
                            enable_auto_commit=False, request_timeout_ms=20000)
    await cons.start()
    try:
        parts = cons.partitions_for_topic(a.topic) or set()
        if not parts:
            await cons._client.force_metadata_update()
            parts = cons.partitions_for_topic(a.topic) or set()
        if not parts:
            fail(f"no partitions for {a.topic}")
        tps = [TopicPartition(a.topic, p) for p in sorted(parts)]
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)
        seen = {}
        deadline = time.monotonic() + a.timeout
        while len(seen) < a.count and time.monotonic() < deadline:
            batch = await cons.getmany(timeout_ms=1000, max_records=1000)
            for msgs in batch.values():
                for m in msgs:
                    seen[(m.partition, m.offset)] = m
    finally:
        await cons.stop()
    if len(seen) != a.count:
        fail(f"consumed {len(seen)} records, expected {a.count}")
    for (p, o), i in acked.items():
        m = seen.get((p, o))
        if m is None:
            fail(f"acknowledged record {i} at partition {p} offset {o} not consumed")
        got = (m.key, m.value, list(m.headers), m.timestamp)
        want = (records.key(i).encode(), records.value(i).encode(),
                list(records.headers(i)[:2]), ts_base + i)
        if got != want:
            fail(f"record {i} at {p}/{o}: got {got!r}, want {want!r}")
    print(json.dumps({"produced": a.count, "consumed": len(seen), "partitions": len(parts)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    asyncio.run(asyncio.wait_for(run(a), a.timeout + 30))


if __name__ == "__main__":
    main()
