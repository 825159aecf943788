#!/usr/bin/env python3
"""Small confluent-kafka AdminClient front end; prints JSON on stdout.

  admin.py --bootstrap B create TOPIC --partitions N [--config k=v ...]
  admin.py --bootstrap B delete TOPIC
  admin.py --bootstrap B list
  admin.py --bootstrap B describe-configs (topic NAME | broker [ID])
      -> {"name": {"value": ..., "source": ..., "default": ...}, ...}
      broker without ID uses the id of the first broker in the cluster metadata.
"""
import argparse
import json
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("topic")
    c.add_argument("--partitions", type=int, default=1)
    c.add_argument("--config", action="append", default=[])
    c.add_argument("--retry-exists", type=float, default=0,
                   help="retry TOPIC_ALREADY_EXISTS for this many seconds (deletion is async)")
    d = sub.add_parser("delete")
    d.add_argument("topic")
    sub.add_parser("list")
    dc = sub.add_parser("describe-configs")
    dc.add_argument("kind", choices=["topic", "broker"])
    dc.add_argument("name", nargs="?")
    a = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    t = a.timeout
    try:
        if a.cmd == "create":
            configs = dict(kv.split("=", 1) for kv in a.config)
            deadline = time.monotonic() + a.retry_exists
            while True:
                fut = admin.create_topics([NewTopic(a.topic, a.partitions, 1, config=configs)],
                                          operation_timeout=t, request_timeout=t)[a.topic]
                try:
                    fut.result(timeout=t)
                    break
                except KafkaException as e:
                    if (e.args[0].name() == "TOPIC_ALREADY_EXISTS"
                            and time.monotonic() < deadline):
                        time.sleep(0.2)
                        continue
                    raise
            print(json.dumps({"created": a.topic}))
        elif a.cmd == "delete":
            admin.delete_topics([a.topic], operation_timeout=t, request_timeout=t)[a.topic].result(timeout=t)
            print(json.dumps({"deleted": a.topic}))
        elif a.cmd == "list":
            md = admin.list_topics(timeout=t)
            print(json.dumps({
                "brokers": {str(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()},
                "controller": md.controller_id,
                "topics": {n: len(tm.partitions) for n, tm in md.topics.items()},
            }))
        else:
            if a.kind == "topic":
                res = ConfigResource(ConfigResource.Type.TOPIC, a.name)
            else:
                name = a.name
                if name is None:
                    name = str(sorted(admin.list_topics(timeout=t).brokers)[0])
                res = ConfigResource(ConfigResource.Type.BROKER, name)
            entries = admin.describe_configs([res], request_timeout=t)[res].result(timeout=t)
            print(json.dumps({n: {"value": e.value, "source": str(e.source),
                                  "default": e.is_default} for n, e in entries.items()}))
    except KafkaException as e:
        err = e.args[0]
        print(f"admin.py {a.cmd}: {err.name()}: {err.str()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
