#!/usr/bin/env python3
"""Writes to the group coordinator's internal topic with confluent-kafka, as a careless operator
or a hostile client would: produce, delete records, delete the topic, add partitions, drop
compaction, create the transaction coordinator's topic. Also lists topics to see which are
flagged internal.

Prints one JSON line: {operation: error name or "OK"}, plus "internal": [internal topics].
"""
import argparse
import json
import sys

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

OFFSETS = "__consumer_offsets"


def outcome(future):
    try:
        future.result(timeout=20)
        return "OK"
    except KafkaException as e:
        return e.args[0].name()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    a = ap.parse_args()
    out = {}

    p = Producer({"bootstrap.servers": a.bootstrap, "message.timeout.ms": 10000, "retries": 0})
    results = []
    p.produce(OFFSETS, key=b"k", value=b"v", partition=0,
              on_delivery=lambda err, msg: results.append(err.name() if err else "OK"))
    p.flush(20)
    out["produce"] = results[0] if results else "NO_REPORT"

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    fs = admin.delete_records([TopicPartition(OFFSETS, 0, 0)], request_timeout=20)
    out["delete_records"] = outcome(list(fs.values())[0])
    out["delete_topics"] = outcome(admin.delete_topics([OFFSETS], request_timeout=20)[OFFSETS])
    fs = admin.create_partitions([NewPartitions(OFFSETS, 100)], request_timeout=20)
    out["create_partitions"] = outcome(fs[OFFSETS])
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        OFFSETS,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "delete",
                        incremental_operation=AlterConfigOpType.SET)
        ],
    )
    out["drop_compaction"] = outcome(admin.incremental_alter_configs([res])[res])
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        OFFSETS,
        incremental_configs=[
            ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    out["segment_bytes"] = outcome(admin.incremental_alter_configs([res])[res])
    fs = admin.create_topics([NewTopic("__transaction_state", 1, 1)], request_timeout=20)
    out["create_transaction_state"] = outcome(fs["__transaction_state"])
    fs = admin.create_topics([NewTopic(OFFSETS, 1, 1)], request_timeout=20)
    out["create_consumer_offsets"] = outcome(fs[OFFSETS])

    md = admin.list_topics(timeout=20)
    out["partitions"] = len(md.topics[OFFSETS].partitions)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
