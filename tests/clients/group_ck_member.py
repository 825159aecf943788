#!/usr/bin/env python3
"""One confluent-kafka group member (subscribe()) for the consumer-group tests.

Writes JSON lines to --out as things happen:
  {"ev":"assign","parts":[..]}  {"ev":"revoke","parts":[..]}  {"ev":"msg","p":P,"o":O,"v":V}
  {"ev":"owned","parts":[..]} (the current assignment, whenever it changed)
  {"ev":"commit","p":P,"o":O}   {"ev":"error","err":"..."}     {"ev":"closed"}
Commits synchronously after every message (--commit) so a killed member loses nothing it
reported. Runs until --stop-file exists, --max-messages were read, or --timeout passes.
--protocol consumer uses KIP-848 (group.protocol=consumer).
"""
import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file")
    ap.add_argument("--max-messages", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--instance-id")
    ap.add_argument("--assignor", default="range")
    ap.add_argument("--protocol", default="classic")
    ap.add_argument("--session-timeout-ms", type=int, default=10000)
    ap.add_argument("--no-close", action="store_true", help="exit without leaving the group")
    ap.add_argument("-X", dest="extra", action="append", default=[])
    a = ap.parse_args()

    out = open(a.out, "a", buffering=1)

    def emit(**kv):
        out.write(json.dumps(kv) + "\n")

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "client.id": f"ck-{os.getpid()}",
    }
    if a.protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf["partition.assignment.strategy"] = a.assignor
        conf["session.timeout.ms"] = a.session_timeout_ms
        conf["heartbeat.interval.ms"] = 500
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    for kv in a.extra:
        k, v = kv.split("=", 1)
        conf[k] = v

    def on_assign(c, parts):
        emit(ev="assign", parts=sorted(p.partition for p in parts))

    def on_revoke(c, parts):
        emit(ev="revoke", parts=sorted(p.partition for p in parts))

    c = Consumer(conf)
    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.monotonic() + a.timeout
    count = 0
    owned = None
    while time.monotonic() < deadline:
        now_owned = sorted(p.partition for p in c.assignment())
        if now_owned != owned:
            owned = now_owned
            emit(ev="owned", parts=owned)
        if a.stop_file and os.path.exists(a.stop_file):
            break
        if a.max_messages and count >= a.max_messages:
            break
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            emit(ev="error", err=str(m.error()))
            continue
        emit(ev="msg", p=m.partition(), o=m.offset(), v=(m.value() or b"").decode())
        count += 1
        if a.commit:
            try:
                c.commit(message=m, asynchronous=False)
                emit(ev="commit", p=m.partition(), o=m.offset() + 1)
            except KafkaException as e:
                emit(ev="error", err=f"commit: {e}")
    if a.no_close:
        emit(ev="abandoned")
        out.flush()
        os._exit(0)
    c.close()
    emit(ev="closed")
    print(json.dumps({"count": count}))


if __name__ == "__main__":
    main()
