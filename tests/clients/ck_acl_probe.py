#!/usr/bin/env python3
"""One confluent-kafka operation against an ACL-enforcing broker; prints "OK" or the Kafka
error name (GROUP_AUTHORIZATION_FAILED, ...) on stdout.

  ck_acl_probe.py --bootstrap B consume-group GROUP TOPIC
  ck_acl_probe.py --bootstrap B init-transactions TRANSACTIONAL_ID
  ck_acl_probe.py --bootstrap B delete-topic TOPIC
  ck_acl_probe.py --bootstrap B describe-topic-configs TOPIC
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource


def name(err):
    return err.name() if isinstance(err, KafkaError) else str(err)


def consume_group(a):
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.args[0],
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([a.args[1]])
    deadline = time.time() + a.timeout
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return name(m.error())
            c.commit(message=m, asynchronous=False)
            return "OK"
        return "TIMEOUT"
    except KafkaException as e:
        return name(e.args[0])
    finally:
        c.close()


def init_transactions(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": a.args[0]})
    try:
        p.init_transactions(a.timeout)
        return "OK"
    except KafkaException as e:
        return name(e.args[0])


def admin_result(futures):
    try:
        for f in futures.values():
            f.result(timeout=a_timeout)
        return "OK"
    except KafkaException as e:
        return name(e.args[0])


def main():
    global a_timeout
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("op")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    a_timeout = a.timeout
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    if a.op == "consume-group":
        out = consume_group(a)
    elif a.op == "init-transactions":
        out = init_transactions(a)
    elif a.op == "delete-topic":
        out = admin_result(admin.delete_topics([a.args[0]], operation_timeout=a.timeout))
    elif a.op == "describe-topic-configs":
        out = admin_result(admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, a.args[0])]))
    else:
        sys.exit(f"unknown op {a.op}")
    print(out)


if __name__ == "__main__":
    main()
