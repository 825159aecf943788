#!/usr/bin/env python3
"""Produce records.py's record set with confluent-kafka and log every acknowledgement.

Each delivery report that succeeds is appended to --acks-out as a JSON line
{"i": index, "p": partition, "o": offset, "k": key}; the file is flushed after every poll so a
test can watch it grow while the broker is being killed. On exit prints one JSON summary line.

Exit status: 0 if every message was acknowledged (or --stop-on-error was given), 1 otherwise.
"""
import argparse
import json
import os
import sys
import time

from confluent_kafka import Producer

import records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1000, help="0 = until stopped")
    ap.add_argument("--start-index", type=int, default=0)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--acks", default="all")
    ap.add_argument("--acks-out", required=True)
    ap.add_argument("--timestamp-base", type=int, default=0, help="ms; 0 = let the client stamp")
    ap.add_argument("--headers", action="store_true")
    ap.add_argument("--value-pad", type=int, default=0)
    ap.add_argument("--partition", type=int, default=-1, help="-1 = default partitioner")
    ap.add_argument("--rate", type=float, default=0, help="messages/s; 0 = unlimited")
    ap.add_argument("--stop-file", help="stop producing once this file exists")
    ap.add_argument("--stop-on-error", action="store_true",
                    help="stop producing after the first failed delivery (errors are expected)")
    ap.add_argument("--message-timeout-ms", type=int, default=30000)
    ap.add_argument("--timeout", type=float, default=120, help="overall deadline, seconds")
    ap.add_argument("-X", dest="extra", action="append", default=[], help="librdkafka key=value")
    a = ap.parse_args()

    conf = {
        "bootstrap.servers": a.bootstrap,
        "compression.codec": a.compression,
        "acks": a.acks,
        "message.timeout.ms": a.message_timeout_ms,
        "linger.ms": 5,
    }
    for kv in a.extra:
        k, v = kv.split("=", 1)
        conf[k] = v
    p = Producer(conf)

    out = open(a.acks_out, "a", buffering=1 << 16)
    stats = {"produced": 0, "acked": 0, "failed": 0, "first_error": None}

    def on_delivery(err, msg, i):
        if err is not None:
            stats["failed"] += 1
            if stats["first_error"] is None:
                stats["first_error"] = f"message {i}: {err}"
            return
        stats["acked"] += 1
        out.write(json.dumps({"i": i, "p": msg.partition(), "o": msg.offset(),
                              "k": records.key(i)}) + "\n")

    deadline = time.monotonic() + a.timeout
    started = time.monotonic()
    i = a.start_index
    end = a.start_index + a.count if a.count > 0 else None
    while end is None or i < end:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        if a.stop_on_error and stats["failed"]:
            break
        if time.monotonic() > deadline:
            stats["first_error"] = stats["first_error"] or "producer deadline reached"
            break
        if a.rate > 0:
            ahead = (i - a.start_index) / a.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        kw = {
            "key": records.key(i).encode(),
            "value": records.value(i, a.value_pad).encode(),
            "on_delivery": (lambda err, msg, i=i: on_delivery(err, msg, i)),
        }
        if a.headers:
            kw["headers"] = records.headers(i)
        if a.timestamp_base:
            kw["timestamp"] = a.timestamp_base + i
        if a.partition >= 0:
            kw["partition"] = a.partition
        try:
            p.produce(a.topic, **kw)
        except BufferError:
            p.poll(0.05)
            out.flush()
            continue
        stats["produced"] += 1
        i += 1
        if i % 1000 == 0:
            p.poll(0)
            out.flush()
    remaining = p.flush(max(1.0, min(a.message_timeout_ms / 1000 + 5, deadline - time.monotonic() + 5)))
    out.flush()
    out.close()
    stats["unflushed"] = remaining
    print(json.dumps(stats), flush=True)
    if (stats["failed"] or remaining) and not a.stop_on_error:
        print(f"ck_produce: {stats['failed']} failed, {remaining} unflushed; first error: "
              f"{stats['first_error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
