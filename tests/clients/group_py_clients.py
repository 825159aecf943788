#!/usr/bin/env python3
"""kafka-python, then aiokafka, as consumers of one group: kafka-python reads --first records
and commits, closes; aiokafka joins the same group and must read exactly the rest (--total in
all). Prints {"kafka_python": n, "aiokafka": m, "duplicates": d}."""
import argparse
import asyncio
import json
import time

from kafka import KafkaConsumer, TopicPartition, OffsetAndMetadata
from aiokafka import AIOKafkaConsumer


def kafka_python_part(a):
    c = KafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=10000, heartbeat_interval_ms=1000)
    seen = []
    deadline = time.monotonic() + 40
    while len(seen) < a.first and time.monotonic() < deadline:
        for tp, msgs in c.poll(timeout_ms=500, max_records=a.first - len(seen)).items():
            for m in msgs:
                seen.append(m.value.decode())
                c.commit({tp: OffsetAndMetadata(m.offset + 1, "", -1)})
    c.close()
    return seen


async def aiokafka_part(a, want):
    c = AIOKafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group,
                         enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    seen = []
    try:
        deadline = time.monotonic() + 40
        while len(seen) < want and time.monotonic() < deadline:
            res = await c.getmany(timeout_ms=500)
            for tp, msgs in res.items():
                for m in msgs:
                    seen.append(m.value.decode())
                await c.commit()
        # Nothing more should arrive.
        res = await c.getmany(timeout_ms=1500)
        for msgs in res.values():
            seen.extend(m.value.decode() for m in msgs)
    finally:
        await c.stop()
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--first", type=int, required=True)
    ap.add_argument("--total", type=int, required=True)
    a = ap.parse_args()
    first = kafka_python_part(a)
    rest = asyncio.run(aiokafka_part(a, a.total - len(first)))
    both = first + rest
    print(json.dumps({"kafka_python": len(first), "aiokafka": len(rest),
                      "duplicates": len(both) - len(set(both))}))


if __name__ == "__main__":
    main()
