#!/usr/bin/env python3
"""Differential tests: play the same client scenario against Apache Kafka and against Fjord and
compare what the client observes — offsets, error names, configs, group state and assignments.

    differential.py --fjord HOST:PORT --kafka HOST:PORT [--scenario NAME ...] [--json]
    differential.py --start [--scenario NAME ...]   # starts both itself (needs the fjord binary
                                                    # and bench/kafka/start.sh's jars)

Each scenario is a function of a bootstrap address returning a JSON-able dict of observations,
with everything that legitimately varies between runs (topic ids, ports, timestamps, member ids)
normalized away. Every difference is printed as `scenario: path: kafka=... fjord=...`. A
difference listed in known-differences.json (path prefix → reason, mirrored in
docs/compatibility.md) is reported as known; any other makes the exit status 1.

Uses confluent-kafka (librdkafka) as the client: what a user's client would see.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TIMEOUT = 30


def err_name(e):
    if isinstance(e, KafkaException):
        e = e.args[0]
    if isinstance(e, KafkaError):
        return e.name()
    return type(e).__name__


def outcome(future):
    try:
        future.result(timeout=TIMEOUT)
        return "OK"
    except Exception as e:  # noqa: BLE001 — the error name is the observation
        return err_name(e)


# Topic names carry the suffix of the current play, so a scenario played again (see `play`) does
# not meet the topics of its first play, which a failed scenario may have left behind.
SUFFIX = ""


def T(name):
    return name + SUFFIX


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_topic(a, name, partitions):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        md = a.list_topics(timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} not ready")


# ---- scenarios ------------------------------------------------------------------------------


def topic_admin(bootstrap):
    """CreateTopics / DeleteTopics / CreatePartitions / configs, and their error answers."""
    a = admin(bootstrap)
    name = T("diff-admin")
    out = {}
    out["create"] = outcome(a.create_topics(
        [NewTopic(name, 3, 1, config={"retention.ms": "1000000", "cleanup.policy": "compact"})]
    )[name])
    wait_topic(a, name, 3)
    out["create_again"] = outcome(a.create_topics([NewTopic(name, 3, 1)])[name])
    out["create_zero_partitions"] = outcome(a.create_topics([NewTopic(T("diff-zero"), 0, 1)])[T("diff-zero")])
    out["create_rf_too_big"] = outcome(a.create_topics([NewTopic(T("diff-rf"), 1, 5)])[T("diff-rf")])
    out["create_bad_config"] = outcome(
        a.create_topics([NewTopic(T("diff-badcfg"), 1, 1, config={"retention.ms": "abc"})])[T("diff-badcfg")])
    out["create_unknown_config"] = outcome(
        a.create_topics([NewTopic(T("diff-unkcfg"), 1, 1, config={"no.such.key": "1"})])[T("diff-unkcfg")])
    out["create_bad_name"] = outcome(a.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"])
    out["create_validate_only"] = outcome(
        a.create_topics([NewTopic(T("diff-validate"), 2, 1)], validate_only=True)[T("diff-validate")])
    md = a.list_topics(timeout=10)
    out["validate_only_created_nothing"] = T("diff-validate") not in md.topics
    out["internal_listed"] = sorted(t for t in md.topics if t.startswith("__"))
    out["add_partitions"] = outcome(a.create_partitions([NewPartitions(name, 5)])[name])
    out["shrink_partitions"] = outcome(a.create_partitions([NewPartitions(name, 2)])[name])
    out["partitions_unknown_topic"] = outcome(
        a.create_partitions([NewPartitions("diff-nosuch", 2)])["diff-nosuch"])
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = a.describe_configs([res])[res].result(timeout=TIMEOUT)
    keys = ["retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes",
            "min.insync.replicas", "compression.type", "message.timestamp.type",
            "unclean.leader.election.enable", "delete.retention.ms", "min.cleanable.dirty.ratio"]
    out["configs"] = {
        k: {"value": entries[k].value, "source": str(entries[k].source),
            "read_only": entries[k].is_read_only}
        for k in keys if k in entries
    }
    out["configs_missing"] = [k for k in keys if k not in entries]
    alter = a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, name,
        incremental_configs=[ConfigEntry("retention.ms", "2000000",
                                         incremental_operation=AlterConfigOpType.SET)])])
    out["alter"] = outcome(alter[list(alter)[0]])
    bad = a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, name,
        incremental_configs=[ConfigEntry("retention.ms", "-5x",
                                         incremental_operation=AlterConfigOpType.SET)])])
    out["alter_bad_value"] = outcome(bad[list(bad)[0]])
    entries = a.describe_configs([res])[res].result(timeout=TIMEOUT)
    out["after_alter"] = entries["retention.ms"].value
    out["delete"] = outcome(a.delete_topics([name])[name])
    out["delete_unknown"] = outcome(a.delete_topics(["diff-nosuch"])["diff-nosuch"])
    return out


def produce_consume(bootstrap):
    """Produce with keys to chosen partitions, list offsets, consume everything back."""
    a = admin(bootstrap)
    name = T("diff-pc")
    a.create_topics([NewTopic(name, 3, 1)])[name].result(timeout=TIMEOUT)
    wait_topic(a, name, 3)
    reports = []
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(err.name())
        else:
            reports.append((msg.partition(), msg.offset()))

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    base_ts = 1_700_000_000_000
    for i in range(30):
        p.produce(name, key=f"k{i % 4}", value=f"v{i}", partition=i % 3, timestamp=base_ts + i,
                  headers=[("h", str(i).encode())], on_delivery=cb)
    p.flush(TIMEOUT)
    out = {"delivered": sorted(reports), "delivery_errors": list(errors)}
    # A partition the topic does not have: librdkafka refuses it itself once it knows the
    # partition count (at once or in the delivery report, depending on its metadata).
    try:
        p.produce(name, value=b"x", partition=7, on_delivery=cb)
        p.flush(TIMEOUT)
        out["unknown_partition"] = errors[-1] if len(errors) > len(out["delivery_errors"]) else "OK"
    except KafkaException as e:
        out["unknown_partition"] = err_name(e)
    tps = [TopicPartition(name, i) for i in range(3)]
    for spec_name, spec in [("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                            ("max_timestamp", OffsetSpec.max_timestamp()),
                            ("ts+10", OffsetSpec.for_timestamp(base_ts + 10)),
                            ("ts_future", OffsetSpec.for_timestamp(base_ts + 10_000_000))]:
        res = a.list_offsets({tp: spec for tp in tps})
        out[f"list_offsets_{spec_name}"] = sorted(
            (tp.partition, f.result(timeout=TIMEOUT).offset) for tp, f in res.items())
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "diff-pc-" + uuid.uuid4().hex[:6],
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(name, i, 0) for i in range(3)])
    got = []
    deadline = time.time() + TIMEOUT
    while len(got) < 30 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append((m.partition(), m.offset(), m.key().decode(), m.value().decode(),
                    m.timestamp()[1], [(k, v.decode()) for k, v in (m.headers() or [])]))
    out["consumed"] = sorted(got)
    # Out of range with auto.offset.reset=error.
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": "diff-oor",
                   "auto.offset.reset": "error"})
    c2.assign([TopicPartition(name, 0, 1000)])
    oor = None
    deadline = time.time() + TIMEOUT
    while oor is None and time.time() < deadline:
        m = c2.poll(0.5)
        if m is not None and m.error():
            oor = m.error().name()
    out["out_of_range"] = oor
    c.close()
    c2.close()
    out["delete_records"] = outcome(list(a.delete_records(
        [TopicPartition(name, 0, 5)]).values())[0])
    res = a.list_offsets({TopicPartition(name, 0): OffsetSpec.earliest()})
    out["earliest_after_delete"] = list(res.values())[0].result(timeout=TIMEOUT).offset
    out["delete_records_beyond_end"] = outcome(list(a.delete_records(
        [TopicPartition(name, 1, 1000)]).values())[0])
    a.delete_topics([name])[name].result(timeout=TIMEOUT)
    return out


def groups(bootstrap):
    """A classic group of two range consumers: assignment, commits, describe, delete."""
    a = admin(bootstrap)
    name = T("diff-grp")
    group = "diff-group-" + uuid.uuid4().hex[:6]
    a.create_topics([NewTopic(name, 4, 1)])[name].result(timeout=TIMEOUT)
    wait_topic(a, name, 4)
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range", "enable.auto.commit": False,
            "session.timeout.ms": 10000}
    cs = [Consumer({**conf, "client.id": f"c{i}"}) for i in range(2)]
    for c in cs:
        c.subscribe([name])
    deadline = time.time() + 60
    while time.time() < deadline:
        for c in cs:
            c.poll(0.2)
        sizes = [len(c.assignment()) for c in cs]
        if sum(sizes) == 4 and all(sizes):
            break
    out = {"assignment_sizes": sorted(len(c.assignment()) for c in cs),
           "assignment": sorted(sorted(tp.partition for tp in c.assignment()) for c in cs)}
    cs[0].commit(offsets=[TopicPartition(name, tp.partition, 3) for tp in cs[0].assignment()],
                 asynchronous=False)
    d = a.describe_consumer_groups([group])[group].result(timeout=TIMEOUT)
    out["describe"] = {"state": str(d.state), "protocol_type": "consumer" if d.is_simple_consumer_group is False else "simple",
                       "assignor": d.partition_assignor, "members": len(d.members)}
    out["delete_non_empty"] = outcome(a.delete_consumer_groups([group])[group])
    listed = a.list_consumer_groups().result(timeout=TIMEOUT)
    out["listed"] = any(g.group_id == group for g in listed.valid)
    for c in cs:
        c.close()
    offsets = a.list_consumer_group_offsets(
        [__import__("confluent_kafka").ConsumerGroupTopicPartitions(group)])[group].result(
        timeout=TIMEOUT)
    out["committed"] = sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions
                              if tp.offset >= 0)
    out["delete_empty"] = outcome(a.delete_consumer_groups([group])[group])
    out["describe_deleted"] = outcome(a.describe_consumer_groups([group])[group])
    out["delete_unknown"] = outcome(a.delete_consumer_groups(["diff-nosuch-group"])["diff-nosuch-group"])
    a.delete_topics([name])[name].result(timeout=TIMEOUT)
    return out


def metadata(bootstrap):
    """What Metadata and DescribeCluster say, with addresses normalized."""
    a = admin(bootstrap)
    md = a.list_topics(timeout=10)
    out = {"brokers": len(md.brokers), "controller_is_a_broker": md.controller_id in md.brokers}
    # librdkafka's admin client is a producer handle: it asks Metadata to create the topic.
    t = a.list_topics(topic=T("diff-md-auto"), timeout=10).topics.get(T("diff-md-auto"))
    out["auto_create_first_answer"] = t.error.name() if t is not None and t.error else None
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and T("diff-md-auto") not in a.list_topics(timeout=10).topics:
        time.sleep(0.2)
    out["auto_created"] = T("diff-md-auto") in a.list_topics(timeout=10).topics
    a.delete_topics([T("diff-md-auto")])[T("diff-md-auto")].result(timeout=TIMEOUT)
    d = a.describe_cluster().result(timeout=TIMEOUT)
    out["cluster_id_len"] = len(d.cluster_id or "")
    out["describe_cluster_nodes"] = len(d.nodes)
    return out


def produce_errors(bootstrap):
    """What a producer is told for records a broker must refuse."""
    a = admin(bootstrap)
    topics = {T("diff-small"): {"max.message.bytes": "1000"},
              T("diff-compact"): {"cleanup.policy": "compact"},
              T("diff-ts"): {"message.timestamp.after.max.ms": "60000",
                          "message.timestamp.before.max.ms": "60000"}}
    for name, cfg in topics.items():
        a.create_topics([NewTopic(name, 1, 1, config=cfg)])[name].result(timeout=TIMEOUT)
        wait_topic(a, name, 1)
    out = {}

    def produce(name, **kw):
        got = []
        p = Producer({"bootstrap.servers": bootstrap, "retries": 0, "message.timeout.ms": 20000,
                      "enable.idempotence": False, "linger.ms": 0})
        p.produce(name, on_delivery=lambda err, msg: got.append(err.name() if err else "OK"),
                  **kw)
        p.flush(TIMEOUT)
        return got[0] if got else "no delivery report"

    out["too_large"] = produce(T("diff-small"), value=b"x" * 5000)
    out["fits"] = produce(T("diff-small"), value=b"x" * 100)
    out["compacted_without_key"] = produce(T("diff-compact"), value=b"v")
    out["compacted_with_key"] = produce(T("diff-compact"), key=b"k", value=b"v")
    now = int(time.time() * 1000)
    out["timestamp_far_future"] = produce(T("diff-ts"), value=b"v", timestamp=now + 3_600_000)
    out["timestamp_far_past"] = produce(T("diff-ts"), value=b"v", timestamp=now - 3_600_000)
    out["timestamp_now"] = produce(T("diff-ts"), value=b"v", timestamp=now)
    out["to_internal_topic"] = produce("__consumer_offsets", value=b"v", partition=0)
    for name in topics:
        a.delete_topics([name])[name].result(timeout=TIMEOUT)
    return out


def consumer_protocol(bootstrap):
    """KIP-848 (group.protocol=consumer): two members split a topic without overlap; one
    leaves and the other takes everything."""
    a = admin(bootstrap)
    name = T("diff-848")
    group = "diff-848-" + uuid.uuid4().hex[:6]
    a.create_topics([NewTopic(name, 6, 1)])[name].result(timeout=TIMEOUT)
    wait_topic(a, name, 6)
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
            "auto.offset.reset": "earliest"}
    cs = [Consumer(conf) for _ in range(2)]
    for c in cs:
        c.subscribe([name])

    def settle(members, want_each):
        deadline = time.time() + 60
        while time.time() < deadline:
            for c in members:
                c.poll(0.2)
            parts = [sorted(tp.partition for tp in c.assignment()) for c in members]
            if sum(map(len, parts)) == 6 and all(len(p) == want_each for p in parts):
                return parts
        return [sorted(tp.partition for tp in c.assignment()) for c in members]

    parts = settle(cs, 3)
    flat = sorted(p for ps in parts for p in ps)
    out = {"split": sorted(map(len, parts)), "covered_once": flat == list(range(6))}
    cs[1].close()
    out["after_leave"] = settle(cs[:1], 6)
    d = a.describe_consumer_groups([group])[group].result(timeout=TIMEOUT)
    out["describe"] = {"state": str(d.state), "members": len(d.members)}
    cs[0].close()
    a.delete_topics([name])[name].result(timeout=TIMEOUT)
    return out


SCENARIOS = {f.__name__: f for f in [topic_admin, produce_consume, produce_errors, groups,
                                     consumer_protocol, metadata]}
# Run in CI: quick and stable.
CI_SCENARIOS = ["topic_admin", "produce_consume", "produce_errors", "metadata"]


# ---- comparison -----------------------------------------------------------------------------


def diff(path, kafka, fjord, out):
    if isinstance(kafka, dict) and isinstance(fjord, dict):
        for k in sorted(set(kafka) | set(fjord)):
            diff(f"{path}.{k}", kafka.get(k, "<absent>"), fjord.get(k, "<absent>"), out)
    elif isinstance(kafka, list) and isinstance(fjord, list) and kafka != fjord \
            and len(kafka) + len(fjord) > 8:
        # Long lists (consumed records, offsets): report what only one side saw, not both
        # lists whole, so a report stays readable.
        k_left, f_left = list(kafka), list(fjord)
        for item in kafka:
            if item in f_left:
                f_left.remove(item)
                k_left.remove(item)
        out.append((path, {"len": len(kafka), "only_here": k_left},
                    {"len": len(fjord), "only_here": f_left}))
    elif kafka != fjord:
        out.append((path, kafka, fjord))


def play(name, kafka, fjord, attempt=0):
    """Plays scenario `name` on both sides; returns its differences as (path, kafka, fjord)."""
    global SUFFIX
    SUFFIX = f"-{attempt}" if attempt else ""
    seen = {}
    for side, bootstrap in [("kafka", kafka), ("fjord", fjord)]:
        try:
            seen[side] = SCENARIOS[name](bootstrap)
        except Exception as e:  # noqa: BLE001 — a crashed scenario is a difference
            seen[side] = {"scenario_failed": f"{type(e).__name__}: {e}"}
    diffs = []
    diff(name, seen["kafka"], seen["fjord"], diffs)
    # A scenario that could not run is never "the same", even if it failed on both.
    for side in ("kafka", "fjord"):
        if "scenario_failed" in seen[side] and not any(
                d[0] == f"{name}.scenario_failed" for d in diffs):
            diffs.append((f"{name}.scenario_failed", seen["kafka"].get("scenario_failed"),
                          seen["fjord"].get("scenario_failed")))
    return diffs


def load_known():
    with open(os.path.join(HERE, "known-differences.json")) as f:
        return json.load(f)


def known_reason(path, known):
    for prefix, reason in known.items():
        if path == prefix or path.startswith(prefix + "."):
            return reason
    return None


# ---- starting both brokers ------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Started:
    def __init__(self, fjord_bin):
        self.tmp = tempfile.mkdtemp(prefix="fjord-diff-")
        port, cport, fport, aport = free_port(), free_port(), free_port(), free_port()
        p = subprocess.run(
            [os.path.join(ROOT, "bench", "kafka", "start.sh"), "--port", str(port),
             "--controller-port", str(cport), "--base-dir", os.path.join(self.tmp, "kafka")],
            capture_output=True, text=True, timeout=300)
        m = re.search(r"kafka ready bootstrap=(\S+)", p.stdout)
        if not m:
            raise SystemExit(f"kafka did not start: {p.stdout} {p.stderr[-2000:]}")
        self.kafka = m.group(1)
        self.fjord_proc = subprocess.Popen(
            [fjord_bin, "server", "--listeners", f"PLAINTEXT://127.0.0.1:{fport}",
             "--admin-listener", f"127.0.0.1:{aport}", "--log-dirs",
             os.path.join(self.tmp, "fjord"), "--set", "group.initial.rebalance.delay.ms=3000"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "fjord.log"), "w"),
            text=True, env={**os.environ, "NO_COLOR": "1"})
        line = self.fjord_proc.stdout.readline()
        if "fjord ready" not in line:
            raise SystemExit(f"fjord did not start: {line!r}")
        self.fjord = f"127.0.0.1:{fport}"

    def stop(self):
        self.fjord_proc.terminate()
        try:
            self.fjord_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.fjord_proc.kill()
        subprocess.run([os.path.join(ROOT, "bench", "kafka", "stop.sh"), "--base-dir",
                        os.path.join(self.tmp, "kafka"), "--clean"], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fjord")
    ap.add_argument("--kafka")
    ap.add_argument("--start", action="store_true", help="start Kafka and Fjord here")
    ap.add_argument("--fjord-bin", default=os.path.join(ROOT, "target", "debug", "fjord"))
    ap.add_argument("--scenario", action="append", help="default: all (--ci: the CI set)")
    ap.add_argument("--ci", action="store_true", help="only the scenarios CI runs")
    ap.add_argument("--json", action="store_true", help="one JSON line with every difference")
    a = ap.parse_args()
    names = a.scenario or (CI_SCENARIOS if a.ci else list(SCENARIOS))
    started = None
    if a.start:
        started = Started(a.fjord_bin)
        a.fjord, a.kafka = started.fjord, started.kafka
    if not (a.fjord and a.kafka):
        ap.error("give --fjord and --kafka, or --start")
    known = load_known()
    report = {"scenarios": {}, "unexpected": 0, "known": 0, "flaky": []}
    try:
        for name in names:
            diffs = play(name, a.kafka, a.fjord)
            if any(not known_reason(d[0], known) for d in diffs):
                # Played once more: a difference that does not come back is timing on a loaded
                # machine, reported as "flaky" (with what was seen) but not counted as unexpected.
                first, diffs = diffs, play(name, a.kafka, a.fjord, attempt=1)
                again = {d[0] for d in diffs}
                for path, k, f in first:
                    if path not in again and not known_reason(path, known):
                        report["flaky"].append({"path": path, "kafka": k, "fjord": f})
                        print(f"FLAKY {path}: kafka={json.dumps(k)} fjord={json.dumps(f)} "
                              "(not seen when played again)", file=sys.stderr)
            rows = []
            for path, k, f in diffs:
                reason = known_reason(path, known)
                rows.append({"path": path, "kafka": k, "fjord": f, "known": reason})
                if reason:
                    report["known"] += 1
                else:
                    report["unexpected"] += 1
                print(f"{'known' if reason else 'DIFF '} {path}: kafka={json.dumps(k)} "
                      f"fjord={json.dumps(f)}" + (f"  ({reason})" if reason else ""),
                      file=sys.stderr)
            report["scenarios"][name] = rows
            print(f"{name}: {len(diffs)} difference(s)", file=sys.stderr)
    finally:
        if started:
            started.stop()
    if a.json:
        print(json.dumps(report))
    sys.exit(1 if report["unexpected"] else 0)


if __name__ == "__main__":
    main()
