#!/usr/bin/env python3
"""Replication benchmark (issue 5): a real three-node Fjord cluster (every node broker and
controller, racks a, b and c, on 127.0.0.1-3), started and stopped as bench/cluster.py does.

Measures:
  1. produce throughput and latency, side by side and in alternating order over several
     rounds: RF 3 acks=all (min.insync.replicas=2), RF 3 acks=1, RF 1 acks=1 — with
     `fjord perf produce` (per-request latency percentiles) at full speed and at a fixed rate,
     and, if bench/build-reference.sh has built it, librdkafka's rdkafka_performance at full
     speed and at the same fixed rate (per-message latency, once per --rdkafka-linger-ms);
     with --kafka also against Apache Kafka on three local nodes (below);
  2. failover: kill -9 of the leader of a partition, time until a produce with acks=all
     succeeds again — with the `fjord produce` CLI in a loop (one process per attempt), and
     with a librdkafka producer (confluent-kafka from the repo's .venv) if present; also until
     Metadata on a survivor names a new leader; several rounds, the killed node restarted and
     back in the ISR in between;
  3. controlled shutdown with 1,000 RF 3 partitions: SIGTERM of a broker (not the active
     controller) until its process exits, and until Metadata on another node shows no
     partition led by it; several rounds.

    cargo build --release -p fjord
    bench/build-reference.sh                    # rdkafka_performance (else those rows are left out)
    python3 bench/replication.py [--rounds 3] [--failover-rounds 5] [--json]
    python3 bench/replication.py --only failover,shutdown --shutdown-partitions 2000

Fjord vs Apache Kafka (part 1 only; the Kafka jars come from bench/kafka/fetch.sh):

    python3 bench/replication.py --only produce --kafka --rounds 3 --records 2000000

--kafka starts, beside the Fjord cluster, Kafka (bench/kafka/VERSION) on three nodes with
bench/kafka/start.sh --nodes 3 --racks a,b,c (127.0.0.1-3, each broker and KRaft controller,
Kafka's default configs, --kafka-heap as kafka-server-start.sh gives a broker, data in the same
--work dir). Both clusters stay up; the runs go to one cluster at a time while the other idles
(its CPU meanwhile is reported; before every run the script waits until both together use at
most --settle-cores of a core, so a follower still catching up or a JVM still compiling is not
billed to the next run). Every configuration runs on both clusters in each round, which one goes
first alternating by round, with the same topics, load generators and arguments; before round
1 both get the same unmeasured warm-up (--warmup-records: a cold JVM runs interpreted). The
table then has a Kafka column and Fjord/Kafka ratios: of records/s at full speed, and of p50 /
p99 at the fixed rate. Kafka is stopped (stop.sh --clean) before the failover and shutdown
parts, which measure Fjord alone.

Needs 127.0.0.2 and 127.0.0.3 to be usable (Linux routes all of 127/8 to loopback). Python 3
standard library and the fjord CLI; Metadata is read with a small Kafka Metadata v4 client
below (no kcat). Progress goes to stderr; the table (or with --json the JSON document) to
stdout. Every process this script starts is killed by its PID (Kafka's nodes stopped by
bench/kafka/stop.sh, by the PIDs start.sh wrote) and the temp dirs are removed on exit, also on
errors and Ctrl-C.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as cb  # noqa: E402  (Node / Cluster: start, kill by PID, cleanup)
from compare import KAFKA_HEAP, cpu_seconds, percentiles  # noqa: E402

ROOT = cb.ROOT
log = cb.log
now = cb.now
POLL = 0.02  # seconds between polls while timing something

# Child processes besides the nodes (probes, perf tools): killed by PID on exit.
CHILDREN = []


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    CHILDREN.append(p)
    return p


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass


# ---- a minimal Kafka Metadata v4 client (stdlib only) ------------------------------------
# v4, not v1: Apache Kafka 4.x no longer answers Metadata v0-v3 (KIP-896), and --kafka reads the
# reference cluster with the same client.

def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.i)
        self.i += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.i:self.i + n].decode()
        self.i += n
        return s

    def array(self, item):
        n = self.take(">i")
        return [item() for _ in range(max(n, 0))]


def metadata(addr, topics, timeout=5.0, brokers=False):
    """{topic: {partition: (leader, replicas, isr)}} as broker `addr` answers Metadata v4
    (with brokers=True: ({node id: "host:port"}, that dict)); None if it does not answer."""
    host, port = addr.rsplit(":", 1)
    body = struct.pack(">i", len(topics)) + b"".join(_kstr(t) for t in topics) + b"\x00"
    req = struct.pack(">hhi", 3, 4, 1) + _kstr("fjord-bench-replication") + body
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(req)) + req)
            head = _recv(s, 4)
            data = _recv(s, struct.unpack(">i", head)[0])
        r = _Reader(data)
        r.take(">i")  # correlation id
        r.take(">i")  # throttle time

        def broker():
            node_id, host, port_ = r.take(">i"), r.string(), r.take(">i")
            r.string()  # rack
            return node_id, f"{host}:{port_}"

        nodes = dict(r.array(broker))
        r.string()  # cluster id
        r.take(">i")  # controller id
        out = {}

        def partition():
            _err, index, leader = r.take(">hii")
            replicas = r.array(lambda: r.take(">i"))
            isr = r.array(lambda: r.take(">i"))
            return index, (leader, replicas, isr)

        def topic():
            err = r.take(">h")
            name = r.string()
            r.take(">b")  # is_internal
            parts = dict(r.array(partition))
            if err == 0:
                out[name] = parts

        r.array(topic)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return (nodes, out) if brokers else out


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
    return buf


# ---- the clusters ------------------------------------------------------------------------

class Topics:
    """Topic creation and ISR polling through the fjord CLI and the Metadata client above:
    shared by the Fjord cluster and the Apache Kafka reference cluster (plain Kafka protocol
    both ways). Needs self.nodes ({id: node with .kafka and .alive}) and self.cli."""

    def live(self):
        return [i for i, n in self.nodes.items() if n.alive and n.kafka]

    def bootstrap(self):
        return ",".join(self.nodes[i].kafka for i in self.live())

    def layout(self, topic, via=None):
        for i in ([via] if via else self.live()):
            md = metadata(self.nodes[i].kafka, [topic])
            if md and topic in md:
                return md[topic]
        return None

    def create(self, topic, partitions, rf, configs=()):
        args = ["--bootstrap-server", self.nodes[1].kafka, "--request-timeout-ms", "600000",
                "topic", "create", topic, "--partitions", str(partitions),
                "--replication-factor", str(rf)]
        for kv in configs:
            args += ["--config", kv]
        r = self.cli(*args, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"create {topic}: {r.stderr.strip() or r.stdout.strip()}")
        self.wait_isr(topic, partitions, rf)

    def wait_isr(self, topic, partitions, size, timeout=600):
        """Until every live node answers `partitions` partitions, each with a leader and an
        ISR of `size`."""
        deadline = now() + timeout
        last = None
        while now() < deadline:
            views = [self.layout(topic, i) for i in self.live()]
            if views and all(v is not None and len(v) == partitions
                             and all(p[0] >= 0 and len(p[2]) == size for p in v.values())
                             for v in views):
                return views[0]
            last = views
            time.sleep(0.1)
        short = [None if v is None else {k: v[k] for k in list(v)[:3]} for v in (last or [])]
        raise RuntimeError(f"{topic}: no full ISR after {timeout} s; last views (first "
                           f"partitions) {short}")

    def cpu(self):
        """CPU seconds (user + system) the nodes' processes have used so far."""
        return sum(cpu_seconds(p) for p in self.pids())


class ReplCluster(Topics, cb.Cluster):
    """bench/cluster.py's cluster with extra lines in every node's config (--set)."""

    system = "fjord"

    def __init__(self, a, name):
        super().__init__(a, name)
        extra = "".join(f"{line}\n" for line in a.set)
        for n in self.nodes.values():
            with open(n.config, "a") as f:
                f.write(extra)

    def pids(self):
        return [n.proc.pid for n in self.nodes.values() if n.alive]


class KafkaNode:
    """One broker+controller JVM of bench/kafka/start.sh, known by its PID."""

    def __init__(self, i, addr, pid, base):
        self.id, self.kafka, self.pid, self.base = i, addr, pid, base

    @property
    def alive(self):
        # Ours only while it is still a Kafka broker of this base dir (PIDs get reused).
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return "kafka.Kafka" in cmd and f"{self.base}/" in cmd

    def stderr_tail(self, n=20):
        try:
            with open(os.path.join(self.base, f"node{self.id}", "server.log"),
                      errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class KafkaCluster(Topics):
    """The reference for --kafka: Apache Kafka (bench/kafka/VERSION, jars from Maven Central)
    on three local nodes, racks a, b, c on 127.0.0.1-3, each broker and KRaft controller,
    started and stopped with bench/kafka/start.sh / stop.sh; Kafka's default configs, the heap
    of kafka-server-start.sh (--kafka-heap), data in the same work dir as Fjord's."""

    system = "kafka"

    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="cluster-kafka-", dir=a.work)
        self.base = os.path.join(self.tmp, "kafka")
        self.nodes = {}

    def cli(self, *args, timeout=120):
        return subprocess.run([self.a.fjord, *args], capture_output=True, text=True,
                              timeout=timeout)

    def pids(self):
        return [n.pid for n in self.nodes.values() if n.alive]

    def start(self):
        """Start the three nodes; the seconds until all three are registered brokers."""
        port, cport = free_port_on_all(), free_port_on_all()
        t0 = now()
        p = subprocess.run(
            [os.path.join(ROOT, "bench", "kafka", "start.sh"), "--nodes", "3", "--racks",
             "a,b,c", "--port", str(port), "--controller-port", str(cport), "--base-dir",
             self.base, "--heap", self.a.kafka_heap, "--timeout", "300"],
            capture_output=True, text=True, timeout=600)
        self._read_pids()
        if "kafka ready" not in p.stdout:
            raise RuntimeError(f"kafka did not start: {p.stdout[-300:]} {p.stderr[-1500:]}")
        # ApiVersions answers before the broker is registered with (and unfenced by) the
        # controller; an RF 3 topic needs all three in Metadata.
        deadline = now() + 300
        while now() < deadline:
            md = metadata(self.nodes[1].kafka, [], brokers=True)
            if md is not None and len(md[0]) == 3:
                return now() - t0
            time.sleep(0.2)
        raise RuntimeError("kafka: Metadata does not list 3 brokers after 300 s")

    def _read_pids(self):
        try:
            with open(os.path.join(self.base, "pids")) as f:
                rows = [line.split() for line in f if line.strip()]
        except OSError:
            return
        port = None
        with open(os.path.join(self.base, "layout")) as f:
            port = re.search(r"\bport=(\d+)", f.read()).group(1)
        for i, pid in rows:
            self.nodes[int(i)] = KafkaNode(int(i), f"127.0.0.{i}:{port}", int(pid), self.base)

    def stop(self):
        """stop.sh (SIGTERM to the PIDs it wrote, SIGKILL after 60 s); data removed."""
        if os.path.isdir(self.base):
            subprocess.run([os.path.join(ROOT, "bench", "kafka", "stop.sh"), "--base-dir",
                            self.base, "--timeout", "60", "--clean"], capture_output=True,
                           timeout=300)
        for n in self.nodes.values():  # stop.sh failed or was interrupted
            if n.alive:
                try:
                    os.kill(n.pid, signal.SIGKILL)
                except OSError:
                    pass

    kill = stop

    def cleanup(self):
        self.stop()
        if self.a.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def kafka_version():
    return os.environ.get("FJORD_KAFKA_VERSION") or \
        open(os.path.join(ROOT, "bench", "kafka", "VERSION")).read().strip()


def free_port_on_all(ips=("127.0.0.1", "127.0.0.2", "127.0.0.3")):
    """A TCP port free on each of `ips` (Kafka's start.sh uses one port on every node)."""
    for _ in range(100):
        port = cb.free_port(ips[0])
        try:
            for ip in ips[1:]:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on all of " + ", ".join(ips))


# ---- 1. throughput and latency -----------------------------------------------------------

PERF_TOTAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, ([\d.]+) ms 50th, ([\d.]+) ms 99th, ([\d.]+) ms 99.9th")
RDK_SUMMARY = re.compile(r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .* "
                         r"in (\d+)ms: (\d+) msgs/s and ([\d.]+) MB/s")

CONFIGS = [  # (label, replication factor, acks)
    ("RF 3 acks=all", 3, "all"),
    ("RF 3 acks=1", 3, "1"),
    ("RF 1 acks=1", 1, "1"),
]


def perf_produce(c, topic, a, rate=None, count=None):
    """`fjord perf produce`: {'rps', 'mbps', 'avg', 'p50', 'p99', 'p999', 'max'} (ms)."""
    if count is None:
        count = a.records if rate is None else int(rate * a.rate_seconds)
    args = ["--bootstrap-server", c.nodes[1].kafka, "perf", "produce", "--topic", topic,
            "--num-records", str(count), "--record-size", str(a.record_size),
            "--acks", a.acks_now]
    if rate is not None:
        args += ["--throughput", str(int(rate))]
    r = c.cli(*args, timeout=900)
    m = list(PERF_TOTAL.finditer(r.stdout))
    if r.returncode != 0 or not m:
        return {"error": (r.stderr.strip() or r.stdout.strip())[-300:]}
    g = m[-1].groups()
    res = {"rps": float(g[1]), "mbps": float(g[2]), "avg": float(g[3]), "max": float(g[4]),
           "p50": float(g[5]), "p99": float(g[6]), "p999": float(g[7]), "records": count}
    if rate is not None:
        res["behind"] = res["rps"] < 0.9 * rate
    return res


def rdkafka_produce(c, topic, a, perf_bin, rate=None, count=None, linger=None):
    """rdkafka_performance -P through every live broker: {'rps', 'mbps'}; at a fixed `rate`
    (-r) also the percentiles of its per-message latency (-l -A: produce() to delivery report)
    in ms. `linger`: linger.ms (None: librdkafka's default, 5 ms)."""
    acks = "-1" if a.acks_now == "all" else a.acks_now
    if count is None:
        count = a.records if rate is None else int(rate * a.rate_seconds)
    args = [perf_bin, "-P", "-t", topic, "-b", c.bootstrap(), "-s", str(a.record_size),
            "-c", str(count), "-a", acks]
    lat_file = None
    if rate is not None:
        lat_file = os.path.join(a.work, f"rdkafka-lat-{os.getpid()}.txt")
        if os.path.exists(lat_file):
            os.remove(lat_file)
        args += ["-r", str(int(rate)), "-l", "-A", lat_file]
    if linger is not None:
        args += ["-X", f"linger.ms={linger}"]
    p = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    m = list(RDK_SUMMARY.finditer(out or ""))
    if not m:
        return {"error": (out or "")[-300:]}
    g = m[-1].groups()
    if int(g[2]) < int(g[0]):
        return {"error": f"only {g[2]}/{g[0]} delivered"}
    res = {"rps": float(g[4]), "mbps": float(g[5]), "records": count}
    if rate is not None:
        # Its msgs/s counts from the client's start (connections, metadata) to the last
        # delivery: at a fixed rate it fell behind only if that took clearly longer.
        res["behind"] = int(g[3]) / 1000 > count / rate * 1.1 + 1.0
    if lat_file:
        # Without the records of the first --latency-skip-seconds: librdkafka sometimes
        # queues them ~0.5 s while it connects (its bootstrap connections are dropped once
        # Metadata names the brokers, and the leader query waits for its next timer) - the
        # client's start-up, with any broker, not what this measures.
        lat = percentiles(lat_file, skip=min(int(rate * a.latency_skip_seconds), count // 2))
        os.remove(lat_file)
        if not lat:
            return {"error": "no per-message latencies written"}
        res.update({"p50": lat["p50"], "p99": lat["p99"], "p999": lat["p99.9"]})
    return res


def settle(clusters, a):
    """Wait until all clusters together use at most --settle-cores of a core over a second
    (at most 30 s): after a run, followers may still be catching up and a JVM compiling or
    collecting; that work belongs to the run before, not to the next one (which may be the
    other cluster's). Returns the seconds waited."""
    t0 = now()
    while True:
        c0, w0 = sum(c.cpu() for c in clusters), now()
        time.sleep(1.0)
        share = (sum(c.cpu() for c in clusters) - c0) / (now() - w0)
        if share <= a.settle_cores:
            return now() - t0
        if now() - t0 > 30:
            log(f"  (clusters still use {share * 100:.0f} % of a core after 30 s; going on)")
            return now() - t0


def measured(target, idle, fn, a):
    """fn()'s result with the CPU time `target`'s nodes used meanwhile ('cpu', s) and that of
    the clusters in `idle` as a share of one core ('idle_cores'): the other cluster is
    running but gets no load, and this shows how little it takes. Waits for every cluster to
    settle first (settle())."""
    settle([target] + idle, a)
    t0, c0, i0 = now(), target.cpu(), sum(c.cpu() for c in idle)
    r = fn()
    dt = max(now() - t0, 1e-9)
    r["cpu"] = target.cpu() - c0
    r["idle_cores"] = (sum(c.cpu() for c in idle) - i0) / dt if idle else 0.0
    return r


def runs_of(a):
    """(key in a row, label in the table) of every run: "max" and "rate" by fjord perf,
    "rdkafka*" by rdkafka_performance (at a fixed rate once per --rdkafka-linger-ms)."""
    at = (f"{a.rate_fraction * 100:.0f} % of Fjord's full speed" if a.rate_fraction
          else f"{a.rate} rec/s")
    return [("max", "fjord perf full speed"), ("rate", f"fjord perf at {at}"),
            ("rdkafka", "rdkafka_performance full speed")] + \
        [(f"rdkafka_rate_l{ms}", f"rdkafka_performance at {at}, linger.ms={ms}")
         for ms in a.rdkafka_linger]


def throughput(clusters, a, results):
    """Every configuration on every cluster in `clusters` (Fjord, and Kafka with --kafka), one
    cluster at a time while the others idle, in an order that rotates every round."""
    perf_bin = os.path.join(a.work, "rdkafka_performance")
    use_rdk = not a.no_rdkafka and os.access(perf_bin, os.X_OK)
    if not use_rdk and not a.no_rdkafka:
        log(f"  (no {perf_bin}: bench/build-reference.sh builds it; librdkafka rows skipped)")
    runs = results.setdefault("produce", [])
    if len(clusters) > 1 and a.warmup_records:
        # A JVM runs its first seconds interpreted: without this, Kafka's first round would
        # measure its JIT compiler. Both clusters get the same warm-up, not measured.
        for c in clusters:
            log(f"  warm-up of {c.system}: {a.warmup_records} records, acks=all and acks=1")
            c.create("warmup", a.partitions, 3, ["min.insync.replicas=2"])
            for acks in ("all", "1"):
                a.acks_now = acks
                perf_produce(c, "warmup", a, count=a.warmup_records)
                if use_rdk:
                    rdkafka_produce(c, "warmup", a, perf_bin, count=a.warmup_records)
    for rnd in range(a.rounds):
        # Alternate the order so no configuration always runs on the warmest (or fullest) disk,
        # and no cluster always goes first.
        order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
        if rnd % 2:
            order = order[::-1]
        systems = clusters[rnd % len(clusters):] + clusters[:rnd % len(clusters)]
        for label, rf, acks in order:
            for c in systems:
                idle = [o for o in clusters if o is not c]
                a.acks_now = acks
                topic = f"tp-rf{rf}-acks{acks}-r{rnd}"
                configs = ["min.insync.replicas=2"] if rf == 3 else []
                c.create(topic, a.partitions, rf, configs)
                # Warm-up: the followers of a new partition start fetching a moment after it
                # is created (the first acks=all requests wait ~200 ms,
                # replica.fetch.backoff.ms); that start-up is not what this measures.
                perf_produce(c, topic, a, count=1000)
                row = {"round": rnd + 1, "system": c.system, "config": label, "rf": rf,
                       "acks": acks}
                row["max"] = measured(c, idle, lambda: perf_produce(c, topic, a), a)
                rate = rate_for(label, runs, row, a)
                row["rate"] = measured(c, idle, lambda: perf_produce(c, topic, a, rate=rate), a)
                if use_rdk:
                    row["rdkafka"] = measured(
                        c, idle, lambda: rdkafka_produce(c, topic, a, perf_bin), a)
                    for ms in a.rdkafka_linger:
                        row[f"rdkafka_rate_l{ms}"] = measured(
                            c, idle, lambda: rdkafka_produce(c, topic, a, perf_bin, rate=rate,
                                                             linger=ms), a)
                runs.append(row)
                log(f"  round {rnd + 1} {c.system} {label}: "
                    + "; ".join(f"{key} {fmt_perf(row[key])}" for key, _ in runs_of(a)
                                if key in row))
                # The topics stay (a few hundred MB) unless --delete-topics: deleting a
                # replicated topic is not what this measures (the next run waits in settle()).
                if a.delete_topics:
                    c.cli("--bootstrap-server", c.bootstrap(), "topic", "delete", topic,
                          "--if-exists", timeout=300)


def rate_for(label, runs, row, a):
    """Records/s of the fixed-rate runs of configuration `label`: --rate, or with
    --rate-fraction that share of Fjord's full-speed records/s of the same configuration in
    round 1, the same for every cluster and round ("latency at 50 % load" means the same
    load on both)."""
    if not a.rate_fraction:
        return a.rate
    # Round 1's Fjord runs only (Fjord goes first in round 1): one rate per configuration
    # for every round and cluster.
    done = [r["max"]["rps"] for r in runs + [row] if r["config"] == label and r["round"] == 1
            and r["system"] == "fjord" and "rps" in r.get("max", {})]
    rate = int(a.rate_fraction * statistics.median(done)) if done else a.rate
    row["rate_asked"] = rate
    return rate


def fmt_perf(r):
    if "error" in r:
        return f"error {r['error']}"
    out = f"{r['rps']:.0f} rec/s {r['mbps']:.1f} MB/s"
    if "p50" in r:
        out += f" p50 {r['p50']:.2f} p99 {r['p99']:.2f} ms"
    if "idle_cores" in r and r["idle_cores"] > 0:
        out += f" (idle cluster {r['idle_cores'] * 100:.0f} % of a core)"
    return out


# ---- 2. failover -------------------------------------------------------------------------

CK_PROBE = r'''
import json, os, sys, time
from confluent_kafka import Producer
bootstrap, topic, stop = sys.argv[1:4]
out = open(sys.argv[4], "w", buffering=1)
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
              "linger.ms": 0, "message.timeout.ms": 120000,
              "topic.metadata.refresh.interval.ms": 1000})
def done(err, msg, sent):
    out.write(json.dumps({"sent": sent, "acked": time.time(),
                          "error": None if err is None else err.name()}) + "\n")
while not os.path.exists(stop):
    t = time.time()
    p.produce(topic, partition=0, value=b"probe",
              on_delivery=lambda err, msg, t=t: done(err, msg, t))
    p.poll(0.005)
p.flush(30)
'''


def venv_python():
    py = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.access(py, os.X_OK):
        return None
    r = subprocess.run([py, "-c", "import confluent_kafka"], capture_output=True)
    return py if r.returncode == 0 else None


def failover(c, a, results, py):
    topic = "failover"
    c.create(topic, 1, 3, ["min.insync.replicas=2"])
    rounds = results.setdefault("failover", [])
    for rnd in range(1, a.failover_rounds + 1):
        layout = c.wait_isr(topic, 1, 3)
        leader = layout[0][0]
        survivors = [i for i in c.live() if i != leader]
        res = {"round": rnd, "killed": leader}
        stop = threading.Event()
        cli_attempts = []  # (start, end, ok), wall clock

        def cli_probe():
            via = c.nodes[survivors[0]].kafka
            while not stop.is_set():
                t = time.time()
                try:
                    r = subprocess.run(
                        [a.fjord, "--bootstrap-server", via, "--request-timeout-ms", "1000",
                         "produce", topic, "--partition", "0", "--acks", "all"],
                        input="probe\n", capture_output=True, text=True, timeout=30)
                    ok = r.returncode == 0
                except subprocess.TimeoutExpired:
                    ok = False
                cli_attempts.append((t, time.time(), ok))
                if not ok:
                    time.sleep(0.02)

        ck = None
        ck_out = os.path.join(c.tmp, f"ck-probe-{rnd}.jsonl")
        ck_stop = os.path.join(c.tmp, f"ck-probe-{rnd}.stop")
        if py:
            bootstrap = ",".join(c.nodes[i].kafka for i in survivors)
            ck = spawn([py, "-c", CK_PROBE, bootstrap, topic, ck_stop, ck_out],
                       stdout=subprocess.DEVNULL, stderr=open(ck_out + ".err", "w"))
        prober = threading.Thread(target=cli_probe, daemon=True)
        prober.start()
        time.sleep(1.0)  # both probes in steady state against the old leader
        c.nodes[leader].kill9()  # returns once the process is reaped: nothing acks after this
        t_kill = time.time()
        t0 = now()
        new_leader_s = None
        deadline = t0 + 120
        while now() < deadline:
            if new_leader_s is None:
                l = c.layout(topic, survivors[0])
                if l and l[0][0] >= 0 and l[0][0] != leader:
                    new_leader_s = now() - t0
                    res["new_leader"] = l[0][0]
            if new_leader_s is not None and any(ok and s > t_kill for s, _, ok in cli_attempts):
                break
            time.sleep(POLL)
        time.sleep(0.5)
        stop.set()
        prober.join()
        res["metadata_new_leader_s"] = new_leader_s
        ok_after = [e for s, e, ok in cli_attempts if ok and s > t_kill]
        res["cli_produce_ok_s"] = (min(ok_after) - t_kill) if ok_after else None
        res["cli_attempts_failed"] = sum(1 for s, _, ok in cli_attempts if s > t_kill and not ok)
        if ck is not None:
            open(ck_stop, "w").close()
            try:
                ck.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ck.kill()
            acked, errors = [], 0
            with open(ck_out) as f:
                for line in f:
                    d = json.loads(line)
                    if d["error"]:
                        errors += 1
                    elif d["acked"] > t_kill:
                        acked.append(d)
            # First record sent after the kill and acknowledged; and the first ack of any
            # record after the kill (records in flight at the kill, retried by librdkafka).
            sent_after = [d["acked"] for d in acked if d["sent"] > t_kill]
            res["librdkafka_produce_ok_s"] = (min(sent_after) - t_kill) if sent_after else None
            res["librdkafka_first_ack_s"] = (min(d["acked"] for d in acked) - t_kill
                                             if acked else None)
            res["librdkafka_failed"] = errors
        log(f"  round {rnd}: killed {leader}: {res}")
        rounds.append(res)
        node = c.nodes[leader]
        node.spawn()
        node.wait_ready()
        c.wait_isr(topic, 1, 3)
        time.sleep(1)


# ---- 3. controlled shutdown --------------------------------------------------------------

def shutdown(c, a, results):
    topic = "shutdown"
    n = a.shutdown_partitions
    log(f"3. creating {n} partitions RF 3")
    c.create(topic, n, 3, ["min.insync.replicas=2"])
    rounds = results.setdefault("shutdown", [])
    for rnd in range(1, a.shutdown_rounds + 1):
        layout = c.wait_isr(topic, n, 3)
        ac = c.active_controller()
        # The highest-numbered node that is not the active controller, leading its preferred
        # share again (a restarted broker gets its leaderships back only by a preferred
        # election: leader.imbalance.check.interval.seconds is 300 s).
        victim = max(i for i in c.nodes if i != ac)
        preferred = sum(1 for p in layout.values() if p[1] and p[1][0] == victim)
        c.cli("--bootstrap-server", c.nodes[1].kafka, "topic", "elect-leaders", "--topic", topic,
              timeout=120)
        deadline = now() + 120
        while now() < deadline:
            layout = c.layout(topic) or {}
            led = sum(1 for p in layout.values() if p[0] == victim)
            if led >= preferred:
                break
            time.sleep(0.2)
        other = [i for i in c.nodes if i != victim][0]
        moved = {}

        def watch():
            while "s" not in moved and now() - t0 < 300:
                l = c.layout(topic, other)
                if l is not None:
                    left = sum(1 for p in l.values() if p[0] == victim)
                    if left == 0:
                        moved["s"] = now() - t0
                        return
                    moved.setdefault("first_left", left)
                time.sleep(POLL)

        t0 = now()
        watcher = threading.Thread(target=watch, daemon=True)
        c.nodes[victim].proc.send_signal(signal.SIGTERM)
        watcher.start()
        try:
            c.nodes[victim].proc.wait(timeout=600)
            exit_s = now() - t0
        except subprocess.TimeoutExpired:
            c.nodes[victim].kill9()
            exit_s = None
        watcher.join(timeout=300)
        res = {"round": rnd, "node": victim, "led": led, "partitions": n, "exit_s": exit_s,
               "leaders_moved_s": moved.get("s"), "active_controller": ac}
        node = c.nodes[victim]
        fences0 = fence_count(c.nodes[other])
        node.spawn()
        res["restart_ready_s"] = node.wait_ready()
        c.wait_healthy("after controlled shutdown")
        c.wait_isr(topic, n, 3)
        res["restart_full_isr_s"] = now() - node.spawned_at
        # Fences seen by another broker while the restarted one caught up: any is a broker
        # that missed its heartbeats (all its leaderships moved), expected 0.
        f1 = fence_count(c.nodes[other])
        res["fences_during_restart"] = None if None in (fences0, f1) else f1 - fences0
        log(f"  round {rnd}: {res}")
        rounds.append(res)
        time.sleep(1)


def fence_count(node):
    """fjord_cluster_broker_fencing_total{change="fence"} on `node`'s /metrics (None if
    unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{node.admin}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("fjord_cluster_broker_fencing_total{") and 'change="fence"' in line:
            return int(float(line.split()[-1]))
    return 0


# ---- report ------------------------------------------------------------------------------

def mm(values, unit=" s", f="{:.2f}"):
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f.format(v[0]) + unit
    return (f"{f.format(statistics.median(v))}{unit} ({f.format(min(v))}–"
            f"{f.format(max(v))})")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(x, y, f="{:.2f}"):
    return f.format(x / y) if x is not None and y else "n/a"


def table(a, res):
    """The table: one result column per system (Fjord; with --kafka also Kafka and the
    Fjord/Kafka ratio of the medians)."""
    runs = res.get("produce", [])
    systems = [s for s in ("fjord", "kafka") if any(r["system"] == s for r in runs)] or ["fjord"]
    rows = []  # (measure, {system: cell}, ratio, notes)

    def add(measure, cells, notes="", rat=""):
        rows.append((measure, cells if isinstance(cells, dict) else {"fjord": cells}, rat, notes))

    for label, _, _ in CONFIGS:
        for key, what in runs_of(a):
            per = {}  # system -> successful results
            notes = []
            for sy in systems:
                rs = [r[key] for r in runs if r["config"] == label and r["system"] == sy
                      and key in r]
                ok = [x for x in rs if "error" not in x]
                if len(rs) > len(ok):
                    notes.append(f"{sy}: {len(rs) - len(ok)} runs failed")
                if rs:
                    per[sy] = ok
            if not per:
                continue
            fast = key in ("max", "rdkafka")  # full speed, not a fixed rate
            # Notes: medians, Fjord / Kafka.
            note = lambda f, xs: " / ".join(  # noqa: E731
                "n/a" if med(f(x) for x in ok) is None else xs.format(med(f(x) for x in ok))
                for ok in per.values())
            cpu = note(lambda x: x["cpu"] * 1e6 / (x["records"] * a.record_size / 1e6)
                       if "cpu" in x else None, "{:.0f}")
            if fast:
                rat = ratio(med(x["rps"] for x in per.get("fjord", [])),
                            med(x["rps"] for x in per.get("kafka", []))) \
                    if "kafka" in per else ""
                add(f"{label}, {what}: records/s",
                    {sy: mm([x["rps"] for x in ok], "", "{:.0f}") for sy, ok in per.items()},
                    "; ".join([f"MB/s {note(lambda x: x['mbps'], '{:.1f}')}",
                               f"brokers' CPU µs/MB {cpu}"] + notes), rat)
            if any("p50" in x for ok in per.values() for x in ok):
                m = {q: {sy: med(x[q] for x in ok) for sy, ok in per.items()}
                     for q in ("p50", "p99")}
                lrat = (f"{ratio(m['p50'].get('fjord'), m['p50']['kafka'])} / "
                        f"{ratio(m['p99'].get('fjord'), m['p99']['kafka'])}"
                        if "kafka" in per and not fast else "")
                unit = "per produce request" if key in ("max", "rate") else "per message"
                extra = [] if fast else [f"reached rec/s {note(lambda x: x['rps'], '{:.0f}')}",
                                         f"brokers' CPU µs/MB {cpu}"] + notes
                behind = [f"{sy} in {sum(1 for x in ok if x.get('behind'))} of {len(ok)} runs"
                          for sy, ok in per.items() if any(x.get("behind") for x in ok)]
                if behind:
                    extra.append(f"fell behind the rate (latency of a growing queue): "
                                 f"{', '.join(behind)}")
                add(f"{label}, {what}: p50 / p99",
                    {sy: f"{mm([x['p50'] for x in ok], ' ms')} / "
                         f"{mm([x['p99'] for x in ok], ' ms')}" for sy, ok in per.items()},
                    "; ".join([f"p99.9 {note(lambda x: x['p999'], '{:.2f} ms')}", unit] + extra),
                    lrat)
    idle = [x["idle_cores"] for r in runs for key, _ in runs_of(a) if key in r
            for x in [r[key]] if "idle_cores" in x]
    if len(systems) > 1 and idle:
        add("the idle cluster while the other one ran: CPU (share of one core)",
            {sy: "" for sy in systems},
            f"median {statistics.median(idle) * 100:.1f} %, max {max(idle) * 100:.1f} %")
    f = res.get("failover", [])
    if f:
        n = len(f)
        add(f"kill -9 leader ({n} rounds): survivor's Metadata names a new leader",
            mm([x.get("metadata_new_leader_s") for x in f]),
            f"broker.session.timeout.ms {a.session_ms}")
        add(f"kill -9 leader ({n} rounds): `fjord produce --acks all` succeeds",
            mm([x.get("cli_produce_ok_s") for x in f]), "one CLI process per attempt")
        if any("librdkafka_produce_ok_s" in x for x in f):
            add(f"kill -9 leader ({n} rounds): librdkafka acks=all, record sent after the kill",
                mm([x.get("librdkafka_produce_ok_s") for x in f]),
                f"first ack of a retried record {mm([x.get('librdkafka_first_ack_s') for x in f])}"
                f"; failed deliveries {sum(x.get('librdkafka_failed', 0) for x in f)}")
    s = res.get("shutdown", [])
    if s:
        n = len(s)
        p = s[0]["partitions"]
        add(f"SIGTERM, {p} partitions RF 3 ({n} rounds): process exits",
            mm([x.get("exit_s") for x in s]),
            f"leader of {mm([x['led'] for x in s], '', '{:.0f}')} partitions")
        add(f"SIGTERM, {p} partitions RF 3 ({n} rounds): no partition led by it in Metadata",
            mm([x.get("leaders_moved_s") for x in s]), "polled on another node every 20 ms")
        add(f"… restart → ready line ({n} rounds)", mm([x.get("restart_ready_s") for x in s]), "")
        add(f"… restart → back in the ISR of all {p} partitions ({n} rounds)",
            mm([x.get("restart_full_isr_s") for x in s]),
            f"brokers fenced meanwhile: {[x.get('fences_during_restart') for x in s]}")
    if not rows:
        return "(nothing measured)"
    if systems == ["fjord"]:
        hdr = ["measure", "result", "notes"]
        body = [[m, cells.get("fjord", ""), notes] for m, cells, _, notes in rows]
    else:
        names = {"fjord": "Fjord", "kafka": "Kafka"}
        hdr = ["measure"] + [names[sy] for sy in systems] + ["Fjord/Kafka", "notes"]
        body = [[m] + [cells.get(sy, "not measured") for sy in systems] + [rat, notes]
                for m, cells, rat, notes in rows]
    widths = [max(len(r[i]) for r in body + [hdr]) for i in range(len(hdr) - 1)]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        [c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + [r[-1]]) + " |"
    out = [line(hdr), "|" + "|".join("-" * (w + 2) for w in widths) + "|-------|"]
    out += [line(r) for r in body]
    if len(systems) > 1:
        out.append("\nFjord/Kafka: of the median records/s at full speed (> 1: Fjord faster); of "
                   "the median p50 / p99 at a fixed rate (< 1: Fjord's latency lower). Notes: "
                   "medians, Fjord / Kafka; brokers' CPU is that of all three nodes per MB "
                   "produced.")
    return "\n".join(out)


def run(a, results, clusters):
    only = set(a.only.split(",")) if a.only else {"produce", "failover", "shutdown"}
    py = None if a.no_librdkafka_probe else venv_python()
    if "failover" in only and py is None:
        log("  (no .venv with confluent-kafka: failover measured with the fjord CLI only)")
    c = ReplCluster(a, "replication")
    clusters.append(c)
    ready = c.start()
    log(f"cluster up (ready after {', '.join(f'{v:.2f}' for v in ready.values())} s); "
        f"extra config {a.set or '(none)'}")
    if "produce" in only:
        targets = [c]
        if a.kafka:
            k = KafkaCluster(a)
            clusters.append(k)
            log(f"starting Apache Kafka on three nodes (heap {a.kafka_heap}; Fjord idles)")
            log(f"kafka up after {k.start():.1f} s: {k.bootstrap()}")
            targets.append(k)
        log(f"1. produce: {a.records} x {a.record_size} B records, {a.partitions} partitions, "
            f"{a.rounds} rounds" + (", Fjord and Kafka in turn" if a.kafka else ""))
        throughput(targets, a, results)
        if a.kafka:
            k.cleanup()  # the failover and shutdown parts measure Fjord alone
    if "failover" in only:
        log(f"2. failover: {a.failover_rounds} rounds")
        failover(c, a, results, py)
    if "shutdown" in only:
        shutdown(c, a, results)
    c.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated: produce, failover, shutdown")
    ap.add_argument("--rounds", type=int, default=3, help="produce rounds (alternating order)")
    ap.add_argument("--records", type=int, default=500_000, help="records per full-speed run")
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=3, help="partitions of produce topics")
    ap.add_argument("--rate", type=int, default=20_000,
                    help="records/s of the fixed-rate latency runs")
    ap.add_argument("--rate-fraction", type=float,
                    help="instead of --rate: this share (e.g. 0.5) of the median of Fjord's "
                         "full-speed records/s in the same configuration so far, for every "
                         "cluster (latency at 50 %% load)")
    ap.add_argument("--rate-seconds", type=float, default=5)
    ap.add_argument("--delete-topics", action="store_true",
                    help="delete each produce topic after its runs (when disk space is short)")
    ap.add_argument("--failover-rounds", type=int, default=5)
    ap.add_argument("--shutdown-partitions", type=int, default=1000)
    ap.add_argument("--shutdown-rounds", type=int, default=3)
    ap.add_argument("--no-rdkafka", action="store_true", help="skip rdkafka_performance")
    ap.add_argument("--kafka", action="store_true",
                    help="produce part: also Apache Kafka on three local nodes "
                         "(bench/kafka/start.sh), in turn with Fjord, and Fjord/Kafka ratios")
    ap.add_argument("--kafka-heap", default=KAFKA_HEAP,
                    help="JVM heap of each Kafka node (kafka-server-start.sh's default)")
    ap.add_argument("--rdkafka-linger-ms", dest="rdkafka_linger", default="0,5",
                    type=lambda v: [int(x) for x in v.split(",") if x],
                    help="linger.ms of the fixed-rate rdkafka_performance runs, one run each "
                         "(0: every record its own request as in bench/compare.py's latency "
                         "rows; 5: librdkafka's default)")
    ap.add_argument("--latency-skip-seconds", type=float, default=1.0,
                    help="fixed-rate rdkafka_performance runs: leave out the per-message "
                         "latencies of the records sent in the first seconds (client start)")
    ap.add_argument("--warmup-records", type=int, default=500_000,
                    help="with --kafka: records produced to each cluster (acks=all, then "
                         "acks=1, with each load generator) before round 1, not measured")
    ap.add_argument("--settle-cores", type=float, default=0.25,
                    help="before each run, wait (up to 30 s) until the clusters together use "
                         "at most this share of a core")
    ap.add_argument("--no-librdkafka-probe", action="store_true",
                    help="failover: only the fjord CLI probe")
    ap.add_argument("--set", action="append", default=[], metavar="'KEY = VALUE'",
                    help="extra TOML line for every node's config (repeatable), e.g. "
                         "--set 'replica.lag.time.max.ms = 10000'")
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    ap.add_argument("--session-ms", type=int, default=3000)
    ap.add_argument("--log-level", default="warn", help="FJORD_LOG of the nodes")
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-work"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (node logs)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args()
    if not os.access(a.fjord, os.X_OK):
        raise SystemExit(f"{a.fjord} missing: cargo build --release -p fjord")
    os.makedirs(a.work, exist_ok=True)
    clusters = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    results = {"machine": cb.machine(a.work), "heartbeat_ms": a.heartbeat_ms,
               "session_ms": a.session_ms, "record_size": a.record_size,
               "records": a.records, "partitions": a.partitions, "rate": a.rate,
               "rate_fraction": a.rate_fraction,
               "extra_config": a.set, "kafka": kafka_version() if a.kafka else None}
    try:
        run(a, results, clusters)
    except BaseException:
        for c in clusters:
            for n in c.nodes.values():
                tail = n.stderr_tail(10)
                if tail.strip():
                    log(f"node {n.id} stderr tail:\n{tail}")
        raise
    finally:
        kill_children()
        for c in clusters:
            c.cleanup()
    if a.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        m = results["machine"]
        print(f"machine: {m['nproc']} CPUs, {m['ram_gib']} GiB RAM, Linux {m['kernel']}; "
              f"data on {m['work_fs']}; load average at start {m['loadavg_at_start']}")
        print(table(a, results))


if __name__ == "__main__":
    main()
