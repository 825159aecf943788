#!/usr/bin/env python3
"""Cross-AZ benchmark (issue 18): what the AZ-aware setup saves, and what accounting costs.

1. Cross-rack bytes per produced byte, with and without the AZ-aware setup, on a 3-node
   `fjord dev cluster` (racks a, b, c; rack-aware replica selector) and an RF 3 topic of 6
   partitions (two led per rack). One KIP-848 group of three consumers (one per rack) joins
   and settles, then per rack one producer (confluent-kafka, through its rack's node) writes
   --records records of --record-size bytes, and the group reads everything back. AZ-aware: producers write only to partitions
   led in their rack (the librdkafka recipe in docs/cross-az.md), consumers set `client.rack`.
   AZ-unaware: the default partitioner, no `client.rack`. Every client carries `fjord_az=RACK`
   in its client id either way, so the brokers know its rack. The figures come from the
   brokers' own accounting (`GET /v1/traffic`, deltas over each phase).
2. The cost of the accounting on produce throughput: two single-node `fjord server`s, one with
   `traffic.accounting.enable=false`, measured with `fjord perf produce` in alternating rounds
   (one idle while the other runs); the ratio off/on.

    cargo build --release -p fjord
    .venv/bin/python bench/cross_az.py [--records 20000] [--record-size 1000] [--rounds 3]
                                       [--perf-records 500000] [--json]

Progress goes to stderr; the table (or with --json one JSON document) to stdout. Every process
this script starts is stopped by its PID (the dev cluster with `fjord dev cluster stop`) and the
temp dirs are removed, also on errors.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACKS = ["a", "b", "c"]
SELECTOR = "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def http_json(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=30) as r:
        return json.loads(r.read())


def traffic(admin):
    """(broker rack, client rack, kind) -> bytes over the cluster."""
    v = http_json(admin, "/v1/traffic")
    if v.get("errors"):
        raise SystemExit(f"/v1/traffic: {v['errors']}")
    out = {}
    for b in v["brokers"]:
        for f in b["flows"]:
            k = (b["rack"], f["client_rack"], f["kind"])
            out[k] = out.get(k, 0) + f["bytes"]
    return out


def cross_rack(before, after):
    """kind -> {"cross": bytes between racks, "all": bytes of clients with a known rack}."""
    out = {}
    for (broker, client, kind), n in after.items():
        d = n - before.get((broker, client, kind), 0)
        if client in ("unknown", "other"):
            continue
        e = out.setdefault(kind, {"cross": 0, "all": 0})
        e["all"] += d
        if client != broker:
            e["cross"] += d
    return out


class DevCluster:
    def __init__(self, fjord, work):
        self.fjord = fjord
        self.dir = os.path.join(work, "cluster")

    def start(self):
        p = subprocess.run(
            [self.fjord, "dev", "cluster", "start", "--detach", "--dir", self.dir, "--nodes", "3",
             "--racks", ",".join(RACKS), "--kafka-port", "0", "--controller-port", "0",
             "--admin-port", "0", "--set", SELECTOR],
            capture_output=True, text=True, timeout=180)
        line = next((x for x in p.stdout.splitlines() if "fjord dev cluster ready" in x), None)
        if line is None:
            raise SystemExit(f"dev cluster did not start: {p.stdout}\n{p.stderr}")
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        self.bootstrap = fields["bootstrap"].split(",")
        self.admin = fields["admin"]

    def stop(self):
        subprocess.run([self.fjord, "dev", "cluster", "stop", "--dir", self.dir],
                       capture_output=True, timeout=120)


def layout(bootstrap, topic):
    """partition -> leader's rack, from Metadata leaders and DescribeCluster racks."""
    a = AdminClient({"bootstrap.servers": bootstrap})
    racks = {n.id: n.rack for n in a.describe_cluster().result(timeout=30).nodes}
    md = a.list_topics(topic=topic, timeout=30).topics[topic]
    return {p: racks.get(info.leader) for p, info in md.partitions.items()}


def produce(bootstrap, topic, rack, records, size, aware, leaders):
    p = Producer({"bootstrap.servers": bootstrap, "client.id": f"bench,fjord_az={rack}",
                  "linger.ms": 5, "acks": "all"})
    local = sorted(q for q, r in leaders.items() if r == rack)
    value = b"x" * size
    for i in range(records):
        kw = {"partition": local[i % len(local)]} if aware and local else {}
        while True:
            try:
                p.produce(topic, value=value, **kw)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise SystemExit("producer did not deliver everything within 120 s")


class Group:
    """One KIP-848 consumer per rack, in threads; started before the records are produced,
    so the group has settled (every member owns partitions) when they arrive."""

    def __init__(self, bootstrap, topic, group, aware):
        self.counts = {r: 0 for r in RACKS}
        self.owned = {r: 0 for r in RACKS}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(bootstrap, topic, group, aware, r),
                                         daemon=True) for r in RACKS]
        for t in self.threads:
            t.start()
        deadline = time.time() + 60
        while not all(self.owned.values()) and time.time() < deadline:
            time.sleep(0.1)
        if not all(self.owned.values()):
            raise SystemExit(f"group {group} did not settle within 60 s: {self.owned}")

    def run(self, bootstrap, topic, group, aware, rack):
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                "client.id": f"bench,fjord_az={rack}", "auto.offset.reset": "earliest",
                "enable.auto.commit": True}
        if aware:
            conf["client.rack"] = rack
        c = Consumer(conf)
        c.subscribe([topic])
        while not self.stop.is_set():
            for m in c.consume(500, 0.2):
                if not m.error():
                    self.counts[rack] += 1
            self.owned[rack] = len(c.assignment())
        c.close()

    def wait(self, total):
        deadline = time.time() + 600
        while sum(self.counts.values()) < total and time.time() < deadline:
            time.sleep(0.2)
        self.stop.set()
        for t in self.threads:
            t.join(60)
        if sum(self.counts.values()) < total:
            raise SystemExit(f"the group read {self.counts} of {total} within 600 s")
        return self.counts


def phase(c, topic, a, aware, leaders):
    name = "aware" if aware else "unaware"
    before = traffic(c.admin)
    group = Group(",".join(c.bootstrap), topic, f"bench-{name}", aware)
    for i, rack in enumerate(RACKS):
        produce(c.bootstrap[i], topic, rack, a.records, a.record_size, aware, leaders)
    # The unaware group is new: it reads the aware phase's records too.
    total_in_topic = a.records * 3 * (2 if not aware else 1)
    counts = group.wait(total_in_topic)
    after = traffic(c.admin)
    flows = cross_rack(before, after)
    produced = a.records * 3 * a.record_size
    log(f"{name}: produced {produced} payload bytes; consumed {counts}; flows {flows}")
    return {"produced_payload_bytes": produced, "consumed_records": sum(counts.values()),
            "flows": flows}


def cross_az(a, work, results):
    c = DevCluster(a.fjord, work)
    c.start()
    try:
        topic = "cross-az"
        adm = AdminClient({"bootstrap.servers": ",".join(c.bootstrap)})
        adm.create_topics([NewTopic(topic, 6, 3)])[topic].result(timeout=60)
        deadline = time.time() + 60
        while time.time() < deadline:
            leaders = layout(",".join(c.bootstrap), topic)
            if len(leaders) == 6 and all(leaders.values()):
                break
            time.sleep(0.2)
        log(f"leaders by partition: {leaders}")
        # Aware first: the unaware group then reads both phases' records (as a new group).
        results["aware"] = phase(c, topic, a, True, leaders)
        results["unaware"] = phase(c, topic, a, False, leaders)
    finally:
        c.stop()


def start_server(fjord, work, name, accounting):
    d = os.path.join(work, name)
    os.makedirs(d)
    proc = subprocess.Popen(
        [fjord, "server", "--listeners", "PLAINTEXT://127.0.0.1:0", "--admin-listener",
         "127.0.0.1:0", "--log-dirs", os.path.join(d, "data"), "--set",
         f"traffic.accounting.enable={'true' if accounting else 'false'}"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(d, "stderr.log"), "w"), text=True)
    line = proc.stdout.readline()
    if "fjord ready" not in line:
        proc.kill()
        raise SystemExit(f"fjord server did not start: {line!r}")
    fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
    return proc, fields["kafka"]


def perf(fjord, bootstrap, topic, records, size):
    """`fjord perf produce`: its summary line and the MB/s in it."""
    p = subprocess.run(
        [fjord, "--bootstrap-server", bootstrap, "perf", "produce", "--topic", topic,
         "--num-records", str(records), "--record-size", str(size), "--acks", "1",
         "--partitions", "6"],
        capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"perf produce failed: {p.stderr[-2000:]}")
    last = p.stdout.strip().splitlines()[-1]
    m = re.search(r"\(([0-9.]+) MB/sec\)", last)
    if not m:
        raise SystemExit(f"perf produce printed no throughput: {p.stdout[-2000:]}")
    return {"line": last, "mb_per_sec": float(m.group(1))}


def accounting_cost(a, work, results):
    servers = {}
    try:
        for name, on in [("on", True), ("off", False)]:
            servers[name] = start_server(a.fjord, work, f"acct-{name}", on)
        runs = {"on": [], "off": []}
        for rnd in range(a.rounds):
            order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
            for name in order:
                r = perf(a.fjord, servers[name][1], f"acct-{rnd}", a.perf_records, a.record_size)
                log(f"accounting {name}, round {rnd + 1}: {r['line']}")
                runs[name].append(r)
        results["accounting"] = runs
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def table(a, res):
    lines = []
    if "aware" in res:
        lines.append(f"Cross-rack bytes per produced payload byte ({a.records} x {a.record_size} B "
                     "per rack, RF 3, one KIP-848 group reading back):")
        lines.append(f"{'setup':<10}{'kind':<13}{'cross-rack B':>14}{'all B':>14}"
                     f"{'share':>8}{'per produced B':>16}")
        for setup in ("aware", "unaware"):
            r = res[setup]
            total_cross = 0
            for kind in ("produce", "consume", "replication", "other"):
                f = r["flows"].get(kind, {"cross": 0, "all": 0})
                total_cross += f["cross"]
                share = f["cross"] / f["all"] if f["all"] else 0
                lines.append(f"{setup:<10}{kind:<13}{f['cross']:>14}{f['all']:>14}{share:>8.1%}"
                             f"{f['cross'] / r['produced_payload_bytes']:>16.3f}")
            lines.append(f"{setup:<10}{'total':<13}{total_cross:>14}{'':>14}{'':>8}"
                         f"{total_cross / r['produced_payload_bytes']:>16.3f}")
    if "accounting" in res:
        on = [r["mb_per_sec"] for r in res["accounting"]["on"] if r["mb_per_sec"]]
        off = [r["mb_per_sec"] for r in res["accounting"]["off"] if r["mb_per_sec"]]
        if on and off:
            lines.append("")
            lines.append(f"Accounting cost, fjord perf produce {a.perf_records} x "
                         f"{a.record_size} B acks=1 ({a.rounds} alternating rounds):")
            lines.append(f"  on  MB/s: {' '.join(f'{x:.1f}' for x in on)}")
            lines.append(f"  off MB/s: {' '.join(f'{x:.1f}' for x in off)}")
            lines.append(f"  median off/on: {sorted(off)[len(off) // 2] / sorted(on)[len(on) // 2]:.3f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--records", type=int, default=20_000, help="records per rack (cross-AZ)")
    ap.add_argument("--record-size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="accounting on/off rounds")
    ap.add_argument("--perf-records", type=int, default=500_000)
    ap.add_argument("--only", help="cross-az or accounting")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--work", default=None, help="parent of the temp dir")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fjord-cross-az-", dir=a.work)
    results = {}
    try:
        if a.only in (None, "cross-az"):
            cross_az(a, work, results)
        if a.only in (None, "accounting"):
            accounting_cost(a, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1) if a.json else table(a, results))


if __name__ == "__main__":
    main()
