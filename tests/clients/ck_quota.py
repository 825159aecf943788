#!/usr/bin/env python3
"""Produce or consume with confluent-kafka for a while, for client quota tests.

produce: sends --value-size byte records to --topic as fast as the client can (or at most
--max-rate bytes/s) for --duration seconds, then flushes. consume: reads --topic from the
start for --duration seconds. Either way librdkafka's statistics (every second) give the
broker's throttle time as the client saw it (`brokers.*.throttle`, the throttle_time_ms of
responses). Prints one JSON line:
{"mode", "client_id", "records", "bytes", "failed", "first_error", "errors", "max_throttle_ms",
 "throttled_windows", "elapsed"}

Exit status: 0 if no delivery failed and no client error was reported, 1 otherwise.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--mode", choices=["produce", "consume"], default="produce")
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--value-size", type=int, default=1000)
    ap.add_argument("--max-rate", type=float, default=0, help="bytes/s; 0 = unlimited")
    ap.add_argument("--group", default="ck-quota")
    a = ap.parse_args()

    state = {"max_throttle_ms": 0, "throttled_windows": 0, "errors": []}

    def on_stats(raw):
        s = json.loads(raw)
        worst = 0
        for b in s.get("brokers", {}).values():
            t = b.get("throttle", {})
            worst = max(worst, t.get("max", 0))
        state["max_throttle_ms"] = max(state["max_throttle_ms"], worst)
        if worst > 0:
            state["throttled_windows"] += 1

    def on_error(err):
        # A transport hiccup would be logged here; a throttled client must see none.
        state["errors"].append(str(err))

    common = {
        "bootstrap.servers": a.bootstrap,
        "client.id": a.client_id,
        "statistics.interval.ms": 1000,
        "stats_cb": on_stats,
        "error_cb": on_error,
    }
    result = {"mode": a.mode, "client_id": a.client_id, "records": 0, "bytes": 0,
              "failed": 0, "first_error": None}
    start = time.monotonic()
    if a.mode == "produce":
        # A small queue: a throttled producer waits for it instead of piling up records.
        p = Producer({**common, "acks": "all", "linger.ms": 5,
                      "queue.buffering.max.kbytes": 4096,
                      "message.timeout.ms": 120000})
        value = b"q" * a.value_size

        def on_delivery(err, msg):
            if err is not None:
                result["failed"] += 1
                if result["first_error"] is None:
                    result["first_error"] = str(err)
            else:
                result["records"] += 1
                result["bytes"] += len(msg.value())

        sent = 0
        while time.monotonic() - start < a.duration:
            if a.max_rate and sent > a.max_rate * (time.monotonic() - start):
                p.poll(0.005)
                continue
            try:
                p.produce(a.topic, value, on_delivery=on_delivery)
                sent += len(value)
            except BufferError:
                p.poll(0.05)
                continue
            p.poll(0)
        left = p.flush(150)
        result["unflushed"] = left
    else:
        c = Consumer({**common, "group.id": a.group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([a.topic])
        while time.monotonic() - start < a.duration:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    state["errors"].append(str(m.error()))
                continue
            result["records"] += 1
            result["bytes"] += len(m.value() or b"")
        # One more statistics interval, so the last throttle is seen.
        c.poll(1.2)
        c.close()
    result["elapsed"] = round(time.monotonic() - start, 3)
    result.update(state)
    print(json.dumps(result), flush=True)
    ok = result["failed"] == 0 and not state["errors"] and not result.get("unflushed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
