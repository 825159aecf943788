#!/usr/bin/env python3
"""Cluster check: a real three-node Fjord cluster (every node broker and controller, racks a, b
and c, on 127.0.0.1-3) with many RF 3 partitions.

Measures:
  1. creation of N partitions with RF 3 (T topics x N/T partitions, and one topic x N
     partitions on a fresh cluster), from the first CreateTopics request until every broker
     hosts all of them (`fjord_partitions` on /metrics) and answers them in Metadata;
  2. RSS of every node before and after, per partition and per replica hosted;
  3. restart of a broker that is not the active controller: SIGTERM (clean shutdown time), then
     spawn -> ready line, -> all logs open, -> unfenced with metadata lag 0 in `cluster status`;
     the same after kill -9;
  4. controller failover: kill -9 the active controller, time until `cluster status` from a
     survivor names another active controller, and until a topic create through a surviving
     broker succeeds; several rounds (the killed node is restarted in between).

    cargo build --release -p fjord
    python3 bench/cluster.py [--partitions 10000] [--topics 100] [--rounds 3] [--json]

File creation dominates creates, clean shutdown and unclean restarts: on ext4 run it when the
file system has not just deleted ~10^5 files (a previous run's cleanup), or put the data on
tmpfs with --work /dev/shm/DIR to see Fjord without the file system (docs/performance.md).

Needs 127.0.0.2 and 127.0.0.3 to be usable (Linux routes all of 127/8 to loopback). Progress
goes to stderr; the table (or with --json the JSON document) to stdout. Every process this
script starts is killed by its PID and the temp dirs are removed on exit, also on errors and
Ctrl-C.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACKS = ["a", "b", "c"]
POLL = 0.05  # seconds between polls while timing something


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class Node:
    """One `fjord server --config node.toml` process; survives restarts (same data dir)."""

    def __init__(self, fjord, tmp, i, voters, cport, heartbeat_ms, session_ms, log_level):
        self.fjord, self.id, self.ip = fjord, i, f"127.0.0.{i}"
        self.dir = os.path.join(tmp, f"n{i}")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.config = os.path.join(self.dir, "node.toml")
        with open(self.config, "w") as f:
            f.write(f'''node.id = {i}
process.roles = "broker,controller"
broker.rack = "{RACKS[i - 1]}"
listeners = "PLAINTEXT://{self.ip}:0,CONTROLLER://{self.ip}:{cport}"
controller.quorum.voters = "{voters}"
admin.listener = "{self.ip}:0"
log.dirs = "{os.path.join(self.dir, 'data')}"
broker.heartbeat.interval.ms = {heartbeat_ms}
broker.session.timeout.ms = {session_ms}
''')
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.log_level = log_level
        self.proc = None
        self.kafka = self.admin = None
        self.spawned_at = None
        self.ready_at = None
        self._ready = threading.Event()
        self._first_line = None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def spawn(self):
        """Start the process; the ready line is picked up by a reader thread."""
        self._ready = threading.Event()  # one per process: an old reader's EOF must not count
        self.ready_at = None
        self.kafka = self.admin = None
        self._first_line = None
        err = open(self.log_path, "a")
        err.write(f"\n===== spawn at {time.strftime('%H:%M:%S')} =====\n")
        err.flush()
        self.spawned_at = now()
        self.proc = subprocess.Popen([self.fjord, "server", "--config", self.config],
                                     stdout=subprocess.PIPE, stderr=err, text=True,
                                     env={**os.environ, "FJORD_LOG": self.log_level})
        err.close()
        threading.Thread(target=self._read, args=(self.proc, self._ready), daemon=True).start()

    def _read(self, proc, ready):
        for line in proc.stdout:
            if self._first_line is None:
                self._first_line = line
            if line.startswith("fjord ready") and not ready.is_set():
                t = now()
                fields = dict(w.split("=", 1) for w in line.split()[2:] if "=" in w)
                self.kafka, self.admin = fields.get("kafka"), fields.get("admin")
                self.ready_at = t
                ready.set()
        ready.set()  # EOF: wake the waiter (it checks whether the process died)

    def wait_ready(self, timeout=600):
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise RuntimeError(f"node {self.id} not ready (exit code {self.proc.poll()}, "
                               f"first stdout line {self._first_line!r}); "
                               f"stderr tail:\n{self.stderr_tail()}")
        return self.ready_at - self.spawned_at

    def stderr_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def term(self, timeout=600):
        """SIGTERM and wait; the time the clean shutdown took (None: killed after timeout)."""
        t0 = now()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        return now() - t0

    def kill9(self):
        self.proc.kill()  # SIGKILL to self.proc.pid
        self.proc.wait()

    def rss_mb(self):
        return proc_status(self.proc.pid).get("VmRSS", 0) / 1024

    def status_of_proc(self):
        return proc_status(self.proc.pid)

    def metrics(self, timeout=5):
        """Unlabelled samples of /metrics as a dict (None if unreachable)."""
        try:
            with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=timeout) as r:
                text = r.read().decode()
        except OSError:
            return None
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or "{" in line:
                continue
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
        return out


class Cluster:
    def __init__(self, a, name):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix=f"cluster-{name}-", dir=a.work)
        cports = [free_port(f"127.0.0.{i}") for i in (1, 2, 3)]
        voters = ",".join(f"{i}@127.0.0.{i}:{cports[i - 1]}" for i in (1, 2, 3))
        self.nodes = {i: Node(a.fjord, self.tmp, i, voters, cports[i - 1], a.heartbeat_ms,
                              a.session_ms, a.log_level) for i in (1, 2, 3)}

    def start(self):
        for n in self.nodes.values():
            n.spawn()
        ready = {i: n.wait_ready() for i, n in self.nodes.items()}
        self.wait_healthy("cluster start")
        return ready

    def kill(self):
        """kill -9 every node still running (by its PID); the data dir stays."""
        for n in self.nodes.values():
            if n.alive:
                try:
                    n.kill9()
                except OSError:
                    pass

    def cleanup(self):
        self.kill()
        if self.a.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def cli(self, *args, timeout=120):
        return subprocess.run([self.a.fjord, *args], capture_output=True, text=True,
                              timeout=timeout)

    def status(self, via):
        """`fjord cluster status --json` from node `via`: the "status" object, or None."""
        n = self.nodes[via]
        if not n.alive or n.admin is None:
            return None
        try:
            r = self.cli("cluster", "status", "--json", "--admin", n.admin, timeout=20)
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)["status"]
        except (ValueError, KeyError):
            return None

    def any_status(self):
        for i, n in self.nodes.items():
            if n.alive:
                s = self.status(i)
                if s is not None:
                    return s
        return None

    @staticmethod
    def broker(s, node_id):
        for b in s.get("brokers") or []:
            if b.get("node_id") == node_id:
                return b
        return None

    @staticmethod
    def lag(s, b):
        if b is None or b.get("metadata_offset") is None:
            return None
        return max(0, s["metadata_offset"] - 1 - b["metadata_offset"])

    def healthy(self, s):
        """Every node alive, registered, unfenced, metadata lag 0, an active controller."""
        if s is None or s.get("active_controller") is None:
            return False
        for i, n in self.nodes.items():
            b = self.broker(s, i)
            if not n.alive or b is None or b.get("fenced") or self.lag(s, b) != 0:
                return False
        return True

    def wait_healthy(self, what, timeout=600):
        deadline = now() + timeout
        s = None
        while now() < deadline:
            s = self.any_status()
            if self.healthy(s):
                return s
            time.sleep(0.2)
        raise RuntimeError(f"{what}: cluster not healthy after {timeout} s; last status "
                           f"{json.dumps(s)}")

    def active_controller(self):
        s = self.wait_healthy("find the active controller")
        return s["active_controller"]

    def hosted(self):
        """fjord_partitions of every live node ({id: count or None})."""
        out = {}
        for i, n in self.nodes.items():
            m = n.metrics() if n.alive else None
            out[i] = None if m is None else int(m.get("fjord_partitions", -1))
        return out

    def metadata_partitions(self, via, prefix):
        """Partitions of topics named prefix* in node `via`'s Metadata (`fjord topic list`)."""
        r = self.cli("--bootstrap-server", self.nodes[via].kafka, "topic", "list", timeout=120)
        if r.returncode != 0:
            return None
        total = 0
        for line in r.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith(prefix):
                total += int(parts[1])
        return total

    def rss(self):
        return {i: n.status_of_proc() for i, n in self.nodes.items() if n.alive}


def create_partitions(c, prefix, topics, total, concurrency, base_hosted):
    """Create `total` RF 3 partitions in `topics` topics through node 1; time until every
    node hosts them all and answers them all in Metadata."""
    per = [total // topics + (1 if k < total % topics else 0) for k in range(topics)]
    names = [f"{prefix}{k:05}" for k in range(topics)]
    via = c.nodes[1].kafka
    errors = []
    latencies = []  # per `fjord topic create` process, CLI start-up included
    lock = threading.Lock()
    queue = list(zip(names, per))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                name, n = queue.pop(0)
            t = now()
            r = c.cli("--bootstrap-server", via, "--request-timeout-ms", "600000", "topic",
                      "create", name, "--partitions", str(n), "--replication-factor", "3",
                      timeout=900)
            with lock:
                latencies.append(now() - t)
            if r.returncode != 0:
                with lock:
                    errors.append(f"{name}: {r.stderr.strip() or r.stdout.strip()}")

    t0 = now()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_requests = now() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed, first: {errors[0]}")
    log(f"  {topics} CreateTopics answered in {t_requests:.2f} s; waiting for every broker")
    want = {i: base_hosted[i] + total for i in c.nodes}
    deadline = t0 + 1800
    last = None
    while True:
        last = c.hosted()
        if all(last[i] is not None and last[i] >= want[i] for i in c.nodes):
            break
        if now() > deadline:
            raise RuntimeError(f"brokers host {last}, want {want}")
        time.sleep(POLL)
    t_hosted = now() - t0
    pending = set(c.nodes)
    while pending:
        for i in sorted(pending):
            if c.metadata_partitions(i, prefix) == total:
                pending.discard(i)
        if pending and now() > deadline:
            raise RuntimeError(f"Metadata of nodes {sorted(pending)} lacks partitions")
        if pending:
            time.sleep(POLL)
    t_all = now() - t0
    return {"topics": topics, "partitions": total, "replication_factor": 3,
            "concurrency": concurrency, "requests_s": t_requests, "hosted_s": t_hosted,
            "total_s": t_all, "partitions_per_s": total / t_all,
            "request_s": {"min": min(latencies), "median": statistics.median(latencies),
                          "max": max(latencies)}}


def restart(c, victim, how, total):
    """Stop `victim` (SIGTERM or kill -9), start it again, time the stages."""
    s = c.wait_healthy(f"before {how} restart")
    old_epoch = c.broker(s, victim)["broker_epoch"]
    others = [i for i in c.nodes if i != victim]
    node = c.nodes[victim]
    rss_before = node.rss_mb()
    if how == "sigterm":
        shutdown = node.term()
    else:
        node.kill9()
        shutdown = 0.0
    node.spawn()
    ready = node.wait_ready()
    t_logs = t_unfenced = None
    deadline = node.spawned_at + 1800
    while t_logs is None or t_unfenced is None:
        if t_logs is None:
            m = node.metrics(timeout=2)
            if m is not None and m.get("fjord_partitions", -1) >= total:
                t_logs = now() - node.spawned_at
        if t_unfenced is None:
            for o in others:
                st = c.status(o)
                if st is None:
                    continue
                b = c.broker(st, victim)
                if (b is not None and b["broker_epoch"] != old_epoch and not b["fenced"]
                        and c.lag(st, b) == 0):
                    t_unfenced = now() - node.spawned_at
                break
        if now() > deadline:
            raise RuntimeError(f"node {victim} did not come back: logs {t_logs}, "
                               f"unfenced {t_unfenced}")
        time.sleep(POLL)
    time.sleep(1)
    return {"node": victim, "how": how, "shutdown_s": shutdown, "ready_s": ready,
            "logs_open_s": t_logs, "unfenced_lag0_s": t_unfenced,
            "rss_before_mb": rss_before, "rss_after_mb": node.rss_mb()}


def failover(c, rnd, total):
    """kill -9 the active controller; time a new one in `cluster status` and a topic create."""
    old = c.active_controller()
    survivors = [i for i in c.nodes if i != old]
    node = c.nodes[old]
    result = {"round": rnd, "killed": old}
    create_done = {}

    def create_loop():
        name = f"failover-{rnd}"
        via = c.nodes[survivors[0]].kafka
        attempts = 0
        while now() - t0 < 300:
            attempts += 1
            try:
                r = c.cli("--bootstrap-server", via, "--request-timeout-ms", "5000", "topic",
                          "create", name, "--partitions", "1", "--replication-factor", "2",
                          timeout=30)
                out = r.stdout + r.stderr
            except subprocess.TimeoutExpired:
                continue
            if r.returncode == 0 or "already exists" in out.lower():
                create_done["s"] = now() - t0
                create_done["attempts"] = attempts
                return
            create_done["last_error"] = out.strip()[-300:]
            time.sleep(POLL)

    t0 = now()
    node.kill9()
    creator = threading.Thread(target=create_loop, daemon=True)
    creator.start()
    new = None
    fenced_s = None
    while now() - t0 < 300 and (new is None or fenced_s is None):
        if "metric_active_s" not in result:
            for i in survivors:
                if (c.nodes[i].metrics(timeout=2) or {}).get("fjord_controller_active") == 1:
                    result["metric_active_s"] = now() - t0
                    result["metric_active_node"] = i
        st = c.status(survivors[0]) or c.status(survivors[1])
        if st is not None:
            ac = st.get("active_controller")
            if new is None and ac is not None and ac != old:
                new = ac
                result["new_controller"] = ac
                result["elected_s"] = now() - t0
            b = c.broker(st, old)
            if new is not None and fenced_s is None and b is not None and b.get("fenced"):
                fenced_s = now() - t0
                result["killed_fenced_s"] = fenced_s
        time.sleep(POLL)
    creator.join()
    result["create_s"] = create_done.get("s")
    result["create_attempts"] = create_done.get("attempts")
    if create_done.get("s") is None:
        result["create_error"] = create_done.get("last_error")
    if new is None:
        raise RuntimeError(f"failover round {rnd}: no new active controller after 300 s")
    # Bring the killed node back for the next round (and time it: a kill -9 restart of a
    # node that was the active controller).
    node.spawn()
    result["restart_ready_s"] = node.wait_ready()
    c.wait_healthy(f"failover round {rnd}: restarted node {old}")
    result["restart_healthy_s"] = now() - node.spawned_at
    logs_deadline = now() + 600
    while (node.metrics() or {}).get("fjord_partitions", -1) < total and now() < logs_deadline:
        time.sleep(POLL)
    time.sleep(1)
    return result


def mm(values):
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.2f} s"
    return f"{statistics.median(v):.2f} s ({min(v):.2f}–{max(v):.2f})"


def run(a, results, clusters):
    log(f"fjord {a.fjord}; {a.partitions} partitions RF 3 in {a.topics} topics; work dir {a.work}")
    # The data of every cluster is removed only at the very end: deleting ~10^5 files on ext4
    # slows the next file creations for minutes (see docs/performance.md), and would skew the
    # phases that follow.

    # 1b. one topic with all partitions, first, on its own fresh cluster
    if not a.skip_single:
        log(f"1b. fresh cluster: one topic with {a.partitions} partitions")
        c = Cluster(a, "single")
        clusters.append(c)
        c.start()
        time.sleep(2)
        base_hosted = c.hosted()
        rss0 = c.rss()
        results["create_single"] = create_partitions(c, "single-", 1, a.partitions, 1,
                                                     base_hosted)
        log(f"  done: {results['create_single']['total_s']:.2f} s")
        time.sleep(3)
        rss1 = c.rss()
        s = c.wait_healthy("after single-topic create")
        results["memory_single"] = memory(rss0, rss1, a.partitions, s.get("active_controller"))
        c.kill()

    c = Cluster(a, "multi")
    clusters.append(c)
    ready = c.start()
    log(f"cluster up (ready after {', '.join(f'{v:.2f}' for v in ready.values())} s)")
    results["start_ready_s"] = ready
    time.sleep(2)
    base_hosted = c.hosted()
    rss0 = c.rss()

    # 1. create
    log(f"1. creating {a.partitions} partitions in {a.topics} topics")
    results["create_multi"] = create_partitions(c, "bench-", a.topics, a.partitions,
                                                a.concurrency, base_hosted)
    log(f"  done: {results['create_multi']['total_s']:.2f} s")

    # 2. memory
    time.sleep(3)
    rss1 = c.rss()
    s = c.wait_healthy("after create")
    results["memory_multi"] = memory(rss0, rss1, a.partitions, s.get("active_controller"))
    results["metadata_offset_after_create"] = s.get("metadata_offset")

    # 3. restarts of a broker that is not the active controller
    for how in () if a.skip_restart else ("sigterm", "kill9"):
        ac = c.active_controller()
        victim = max(i for i in c.nodes if i != ac)
        log(f"3. {how} + restart of node {victim} (active controller {ac})")
        r = restart(c, victim, how, a.partitions)
        results.setdefault("restart", []).append(r)
        log(f"  {r}")

    # 4. controller failover
    for rnd in range(1, 0 if a.skip_failover else a.rounds + 1):
        log(f"4. failover round {rnd}")
        r = failover(c, rnd, a.partitions)
        results.setdefault("failover", []).append(r)
        log(f"  {r}")
    c.kill()


def memory(before, after, partitions, active):
    out = {}
    for i in before:
        if i not in after:
            continue
        b, e = before[i]["VmRSS"] / 1024, after[i]["VmRSS"] / 1024
        replicas = partitions * 3 / 3  # RF 3 over 3 brokers: every broker hosts every partition
        out[i] = {"rss_before_mb": b, "rss_after_mb": e, "hwm_mb": after[i]["VmHWM"] / 1024,
                  "fds": after[i]["fds"], "threads": after[i]["Threads"],
                  "active_controller": i == active,
                  "kb_per_partition": (e - b) * 1024 / partitions,
                  "kb_per_replica": (e - b) * 1024 / replicas}
    return out


def table(a, res):
    rows = []
    add = lambda *r: rows.append(r)
    for key, label in (("create_multi", "create"), ("create_single", "create")):
        c = res.get(key)
        if not c:
            continue
        what = f"{c['partitions']} partitions RF 3 as {c['topics']} topic(s)"
        q = c["request_s"]
        add(f"{label} {what}: requests answered", f"{c['requests_s']:.2f} s",
            f"per `topic create`: {q['median'] * 1e3:.0f} ms ({q['min'] * 1e3:.0f}–"
            f"{q['max'] * 1e3:.0f})")
        add(f"{label} {what}: every broker hosts all", f"{c['hosted_s']:.2f} s", "")
        add(f"{label} {what}: + in every broker's Metadata", f"{c['total_s']:.2f} s",
            f"{c['partitions_per_s']:.0f} partitions/s")
    for key, label in (("memory_multi", f"{res['topics']} topic(s)"),
                       ("memory_single", "1 topic")):
        m = res.get(key)
        if not m:
            continue
        for i, x in sorted(m.items()):
            role = " (active controller)" if x["active_controller"] else ""
            add(f"RSS node {i}{role}, {label}",
                f"{x['rss_before_mb']:.0f} → {x['rss_after_mb']:.0f} MB",
                f"{x['kb_per_partition']:.1f} KB/partition = {x['kb_per_replica']:.1f} KB/replica; "
                f"fds {x['fds']}, threads {x['threads']}")
    for r in res.get("restart", []):
        how = "SIGTERM" if r["how"] == "sigterm" else "kill -9"
        if r["how"] == "sigterm":
            add(f"{how} node {r['node']}: clean shutdown", f"{r['shutdown_s']:.2f} s"
                if r["shutdown_s"] is not None else "timed out", "")
        add(f"{how} node {r['node']}: restart → ready line", f"{r['ready_s']:.2f} s", "")
        add(f"{how} node {r['node']}: restart → all logs open", f"{r['logs_open_s']:.2f} s", "")
        add(f"{how} node {r['node']}: restart → unfenced, lag 0", f"{r['unfenced_lag0_s']:.2f} s",
            f"RSS {r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} MB")
    f = res.get("failover", [])
    if f:
        n = len(f)
        add(f"failover ({n} rounds): new active controller", mm([x.get("elected_s") for x in f]),
            "median (min–max)")
        add(f"failover ({n} rounds): fjord_controller_active=1 on a survivor",
            mm([x.get("metric_active_s") for x in f]), "its /metrics, no RPC")
        add(f"failover ({n} rounds): topic create via survivor OK",
            mm([x.get("create_s") for x in f]),
            f"{sum(1 for x in f if x.get('create_s') is None)} failed")
        add(f"failover ({n} rounds): killed broker fenced",
            mm([x.get("killed_fenced_s") for x in f]),
            f"session timeout {a.session_ms} ms")
        add(f"failover ({n} rounds): killed node restart → ready",
            mm([x.get("restart_ready_s") for x in f]), "kill -9 of an ex-controller")
        add(f"failover ({n} rounds): killed node restart → healthy",
            mm([x.get("restart_healthy_s") for x in f]), "")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"| {'measure':<{w0}} | {'result':<{w1}} | notes |",
             f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|-------|"]
    lines += [f"| {r[0]:<{w0}} | {r[1]:<{w1}} | {r[2]} |" for r in rows]
    return "\n".join(lines)


def machine(work):
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    fs, best = "?", ""
    work = os.path.realpath(work)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            if (work == mnt or work.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                fs, best = f"{typ} ({dev} on {mnt})", mnt
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": os.cpu_count(), "ram_gib": round(mem, 1), "kernel": os.uname().release,
            "work_fs": fs, "loadavg_at_start": load}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=10_000, help="total partitions (RF 3)")
    ap.add_argument("--topics", type=int, default=100, help="topics to spread them over")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="CreateTopics requests in flight at once (many-topic case)")
    ap.add_argument("--rounds", type=int, default=3, help="controller failover rounds")
    ap.add_argument("--skip-single", action="store_true",
                    help="skip the one-topic-with-all-partitions case (fresh cluster)")
    ap.add_argument("--skip-restart", action="store_true", help="skip the broker restarts")
    ap.add_argument("--skip-failover", action="store_true", help="skip the controller failovers")
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
    results = {"machine": machine(a.work), "partitions": a.partitions, "topics": a.topics,
               "heartbeat_ms": a.heartbeat_ms, "session_ms": a.session_ms}
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
