#!/usr/bin/env python3
"""Produce records.py's record set with confluent-kafka while brokers fail, logging every
delivery report: the producer for the replication tests.

Each acknowledged record is appended to --acks-out as {"i": index, "p": partition, "o": offset}
(the format of ck_produce.py, read by records::parse_acks); each failed delivery to
--errors-out as {"i", "name", "code", "retriable", "fatal", "str"}. Both files are flushed at
least every 100 ms so a test can watch them grow while it kills brokers. Runs until --count
records were produced (0: until --stop-file exists), then flushes. A fatal error (for example
an idempotent producer that finds its sequence broken by lost records) stops producing.

Prints one JSON summary line on exit: produced, acked, failed, errors by name, fatal, unflushed.
Exit status 0 unless the script itself failed; the test judges the summary.
"""
import argparse
import json
import os
import time

from confluent_kafka import Producer

import records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=0, help="0 = until --stop-file exists")
    ap.add_argument("--start-index", type=int, default=0)
    ap.add_argument("--value-pad", type=int, default=0)
    ap.add_argument("--partition", type=int, default=-1, help="-1 = by key")
    ap.add_argument("--rate", type=float, default=0, help="records/s; 0 = unlimited")
    ap.add_argument("--acks", default="all")
    ap.add_argument("--idempotence", action="store_true", help="enable.idempotence=true")
    ap.add_argument("--message-timeout-ms", type=int, default=120000)
    ap.add_argument("--acks-out", required=True)
    ap.add_argument("--errors-out")
    ap.add_argument("--stop-file")
    ap.add_argument("--timeout", type=float, default=600, help="overall deadline, seconds")
    ap.add_argument("-X", dest="extra", action="append", default=[], help="librdkafka key=value")
    a = ap.parse_args()

    stats = {"produced": 0, "acked": 0, "failed": 0, "errors": {}, "fatal": None,
             "client_errors": {}}
    conf = {
        "bootstrap.servers": a.bootstrap,
        "acks": a.acks,
        "enable.idempotence": a.idempotence,
        "message.timeout.ms": a.message_timeout_ms,
        "linger.ms": 5,
        # Learn about a new leader quickly after a broker dies.
        "topic.metadata.refresh.interval.ms": 1000,
        "error_cb": lambda err: on_error(err, stats),
    }
    for kv in a.extra:
        k, v = kv.split("=", 1)
        conf[k] = v
    p = Producer(conf)
    acks = open(a.acks_out, "a")
    errors = open(a.errors_out, "a") if a.errors_out else None

    def on_delivery(err, msg, i):
        if err is None:
            stats["acked"] += 1
            acks.write(json.dumps({"i": i, "p": msg.partition(), "o": msg.offset()}) + "\n")
            return
        stats["failed"] += 1
        stats["errors"][err.name()] = stats["errors"].get(err.name(), 0) + 1
        if errors:
            errors.write(json.dumps({"i": i, "name": err.name(), "code": err.code(),
                                     "retriable": err.retriable(), "fatal": err.fatal(),
                                     "str": err.str()}) + "\n")

    started = time.monotonic()
    deadline = started + a.timeout
    last_flush = started
    i = a.start_index
    end = a.start_index + a.count if a.count > 0 else None
    while end is None or i < end:
        now = time.monotonic()
        if now > deadline:
            stats["deadline_reached"] = True
            break
        if stats["fatal"] is not None:
            break
        if a.stop_file and os.path.exists(a.stop_file):
            break
        if now - last_flush >= 0.1:
            acks.flush()
            if errors:
                errors.flush()
            last_flush = now
        due = end if end is not None else i + 1000
        if a.rate > 0:
            due = min(due, a.start_index + int((now - started) * a.rate) + 1)
            if due <= i:
                p.poll(0.005)
                continue
        while i < due:
            kw = {"key": records.key(i).encode(), "value": records.value(i, a.value_pad).encode(),
                  "on_delivery": (lambda err, msg, i=i: on_delivery(err, msg, i))}
            if a.partition >= 0:
                kw["partition"] = a.partition
            try:
                p.produce(a.topic, **kw)
            except BufferError:
                p.poll(0.05)
                break
            stats["produced"] += 1
            i += 1
        p.poll(0)
    left = max(5.0, deadline - time.monotonic())
    stats["unflushed"] = p.flush(min(left, a.message_timeout_ms / 1000 + 10))
    acks.close()
    if errors:
        errors.close()
    stats["seconds"] = round(time.monotonic() - started, 2)
    stats["next_index"] = i
    print(json.dumps(stats), flush=True)


def on_error(err, stats):
    """Client-level errors (connection refused while a broker is down, ...) are expected and
    only counted; a fatal one stops the producer."""
    name = err.name()
    stats["client_errors"][name] = stats["client_errors"].get(name, 0) + 1
    if err.fatal():
        stats["fatal"] = f"{name}: {err.str()}"


if __name__ == "__main__":
    main()
