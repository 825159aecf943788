#!/usr/bin/env python3
"""Fleet-operation benchmark (issue 17): draining a broker, throttle accuracy, client latency
during a drain. The planners' own times are a Rust test (below).

A 4-node `fjord dev cluster` (racks a, b, c, a), --topics topics of RF 3 totalling
--partitions partitions and a `load` topic (RF 3, 12 partitions) for the latency probe, all
placed by the cluster. Placement gives each partition's rack-a replica to broker 1 or 4; a
drain of broker 1 while the topics are still empty moves all of them to 4 (then 1 leaves
maintenance), so 4 holds a replica of every partition. (CreateTopics with explicit replica
assignments is refused on a multi-node cluster, so the layout cannot be given directly.) The
topics are then filled with `fjord perf produce` (acks=1, --record-size records in
--batch-size batches) until broker 4 holds --gb GB.

  1. drain: `fjord broker maintenance enable 4 --drain-replicas` (unthrottled), polling
     `GET /v1/maintenance?node_id=4` until `safe_to_remove`; time, bytes moved (broker 1's
     `fjord_replica_fetch_bytes_total` delta: with racks a, b, c, a every replica of 4 goes to
     1), MB/s; against the raw limits of the same bytes on the same disk: `cp -r` of broker 4's
     data dir (page cache, no fsync, like the brokers) and, if bench/compare.sh built it,
     `rawlimits append` and `rawlimits tcp+append`.
  2. throttle + latency, per --throttles rate: maintenance disable 4, then a steady
     `fjord perf produce --acks all --throughput --lat-rate` on `load` for --lat-seconds
     (before), then `maintenance enable 1 --drain-replicas --throttle RATE` (1's replicas go
     back to 4) with the same probe running (during), sampling every second the throttled
     bytes (`fjord_replication_throttled_bytes_total{side=follower}` on 4, `{side=leader}` on
     the others) for --throttle-seconds; the rate over the window after the first
     --throttle-warmup seconds, against the throttle. Then `maintenance disable 1` (cancels
     the moves still in progress) and wait until nothing moves. Besides the average, the
     rate over every 5 s stretch and the largest ~1 s sample show how bursty the copy is.
  3. rebalance: wall time of `fjord cluster rebalance --dry-run` on the cluster as the runs
     left it (the planner alone on 10,000 partitions is the Rust test below).

    cargo build --release -p fjord
    .venv/bin/python bench/fleet_ops.py [--gb 3] [--partitions 1000] [--throttles 20MB,50MB]
                                        [--only drain,throttle,rebalance] [--json]
                                        [--out FILE]
    .venv/bin/python bench/fleet_ops.py --gb 10      # the 10 GB run (needs ~45 GB free disk)
    cargo test --release -p fjord-metadata --test plan_timing -- --ignored --nocapture

Progress goes to stderr, the results (or with --json one JSON document) to stdout. The
cluster is stopped with `fjord dev cluster stop` and then any node still alive is killed by
the PID in its cluster.json; the work dir is removed (also on errors and Ctrl-C) unless --keep.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FJORD = os.path.join(ROOT, "target", "release", "fjord")
RAWLIMITS = os.path.join(ROOT, "target", "bench-work", "rawlimits")
PERF_TOTAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, ([\d.]+) ms 50th, ([\d.]+) ms 99th, ([\d.]+) ms 99.9th")
MB = 1e6


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rate_arg(s):
    """10MB, 50MiB or a number of bytes/s."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgG]?)(i?)[bB]?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a rate such as 20MB, got {s!r}")
    base = 1024 if m.group(3) else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3}[m.group(2).lower()]
    return int(float(m.group(1)) * base ** power)


def http(addr, path, method="GET"):
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return json.loads(body) if path != "/metrics" else body.decode()


def metric(addr, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in http(addr, "/metrics").splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
            continue
        total += float(value)
    return total


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


class Cluster:
    def __init__(self, work):
        self.dir = os.path.join(work, "cluster")
        self.nodes = {}

    def cli(self, *args, timeout=600, check=True):
        cmd = [FJORD, "--bootstrap-server", self.bootstrap, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def start(self):
        p = subprocess.run(
            [FJORD, "dev", "cluster", "start", "--detach", "--dir", self.dir, "--nodes", "4",
             "--racks", "a,b,c", "--kafka-port", "0", "--controller-port", "0",
             "--admin-port", "0"], capture_output=True, text=True, timeout=180)
        line = next((x for x in p.stdout.splitlines() if "fjord dev cluster ready" in x), None)
        if line is None:
            raise SystemExit(f"dev cluster did not start: {p.stdout}\n{p.stderr}")
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        self.bootstrap = fields["bootstrap"].split(",")[0]
        with open(os.path.join(self.dir, "cluster.json")) as f:
            state = json.load(f)
        for n in state["nodes"]:
            self.nodes[n["node_id"]] = n
        racks = ", ".join(f"{i}={n['rack']}" for i, n in sorted(self.nodes.items()))
        log(f"cluster up: {racks}")

    def admin(self, node=1):
        return self.nodes[node]["admin"]

    def data(self, node):
        return os.path.join(self.dir, f"node{node}", "data")

    def broker(self, *args, check=True):
        return self.cli("broker", "--admin", self.admin(), *args, check=check)

    def status(self, node):
        v = http(self.admin(), f"/v1/maintenance?node_id={node}")
        return v["brokers"][0], v

    def stop(self):
        if not os.path.exists(self.dir):
            return
        r = subprocess.run([FJORD, "dev", "cluster", "stop", "--dir", self.dir],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            log(f"fjord dev cluster stop: {(r.stderr or r.stdout).strip()[-500:]}")
        for n in self.nodes.values():
            try:  # a zombie (exited, not reaped by init here) has an empty cmdline
                with open(f"/proc/{n['pid']}/cmdline", "rb") as f:
                    if n["config"].encode() not in f.read():
                        continue
            except OSError:
                continue
            log(f"node {n['node_id']} (pid {n['pid']}) still alive after stop: killing it")
            try:
                os.kill(n["pid"], signal.SIGKILL)
            except OSError:
                pass


def create_topics(c, a):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": c.bootstrap, "log_level": 3})
    per = a.partitions // a.topics
    topics = [NewTopic(f"fill{t}", num_partitions=per, replication_factor=3)
              for t in range(a.topics)]
    topics.append(NewTopic("load", num_partitions=12, replication_factor=3,
                           config={"min.insync.replicas": "2"}))
    for name, f in admin.create_topics(topics, request_timeout=120).items():
        f.result(timeout=180)
    deadline = time.time() + 120
    while time.time() < deadline:
        md = admin.list_topics(timeout=30).topics
        if all(t.topic in md and all(p.leader >= 0 for p in md[t.topic].partitions.values())
               and len(md[t.topic].partitions) > 0 for t in topics):
            break
        time.sleep(0.5)
    else:
        raise SystemExit("topics did not get leaders within 120 s")
    # Placement gives rack a's replica of each partition to 1 or 4. Draining 1 while the
    # topics are empty puts all of them on 4; then 1 leaves maintenance (empty, uncordoned).
    log("moving every rack-a replica to broker 4 (drain of 1 while empty)")
    c.broker("maintenance", "enable", "1", "--drain-replicas")
    wait_safe(c, 1, 600)
    c.broker("maintenance", "disable", "1")
    b, _ = c.status(4)
    b1, _ = c.status(1)
    log(f"broker 4 holds replicas of {b['replicas']} partitions, leads {b['leaders']}; "
        f"broker 1 holds {b1['replicas']}")
    return [t.topic for t in topics if t.topic != "load"]


def wait_safe(c, node, timeout):
    deadline = time.time() + timeout
    while True:
        b, _ = c.status(node)
        if b["safe_to_remove"]:
            return
        if time.time() > deadline:
            raise SystemExit(f"broker {node} not safe to remove after {timeout} s: "
                             f"{b.get('reasons')}")
        time.sleep(0.5)


def perf(c, topic, records, size, acks, rate=None, batch=None):
    args = ["perf", "produce", "--topic", topic, "--num-records", str(records),
            "--record-size", str(size), "--acks", acks]
    if rate:
        args += ["--throughput", str(int(rate))]
    if batch:
        args += ["--batch-size", str(batch)]
    r = c.cli(*args, timeout=7200)
    m = list(PERF_TOTAL.finditer(r.stdout))
    if not m:
        raise SystemExit(f"perf produce printed no total: {r.stdout[-300:]} {r.stderr[-300:]}")
    g = m[-1].groups()
    return {"records": int(g[0]), "rps": float(g[1]), "mbps": float(g[2]), "avg": float(g[3]),
            "max": float(g[4]), "p50": float(g[5]), "p99": float(g[6]), "p999": float(g[7])}


def fill(c, a, topics):
    target = int(a.gb * 1e9)
    per_topic = target // a.record_size // len(topics)
    log(f"filling {len(topics)} topics with {a.gb} GB ({per_topic} records of {a.record_size} B "
        f"each, acks=1, batches of {a.batch_size} B)")
    t0 = time.time()
    results = []
    threads = []
    lock = threading.Lock()

    def one(topic):
        r = perf(c, topic, per_topic, a.record_size, "1", batch=a.batch_size)
        with lock:
            results.append(r)

    # Two producers at a time: two cores.
    for i in range(0, len(topics), 2):
        threads = [threading.Thread(target=one, args=(t,)) for t in topics[i:i + 2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    secs = time.time() - t0
    if len(results) != len(topics):
        raise SystemExit("a fill producer failed")
    wait_in_sync(c, 900)
    on4 = du(c.data(4))
    log(f"filled in {secs:.0f} s ({target / MB / secs:.0f} MB/s of records); broker 4 holds "
        f"{on4 / 1e9:.2f} GB")
    return {"seconds": secs, "record_bytes": target, "broker4_bytes": on4}


def wait_in_sync(c, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if c.status(1)[0]["under_replicated"] == 0:
            return
        time.sleep(1)
    log("warning: still under-replicated partitions")


def wait_quiet(c, node, timeout=900):
    """Until no partition moves off `node` (after a disable)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        b, _ = c.status(node)
        if b.get("moving", 0) == 0:
            return
        time.sleep(1)
    raise SystemExit(f"moves off broker {node} did not stop within {timeout} s")


def raw_limits(c, a, nbytes):
    out = {}
    src = c.data(4)
    dst = os.path.join(a.work, "rawcopy")
    t0 = time.time()
    subprocess.run(["cp", "-r", src, dst], check=True)
    cp_s = time.time() - t0
    copied = du(dst)
    t1 = time.time()
    subprocess.run(["sync", "-f", dst], check=False)
    sync_s = time.time() - t1
    out["cp"] = {"bytes": copied, "seconds": cp_s, "mbps": copied / MB / cp_s,
                 "sync_seconds": sync_s, "mbps_with_sync": copied / MB / (cp_s + sync_s)}
    shutil.rmtree(dst, ignore_errors=True)
    log(f"raw cp -r of broker 4's data: {copied / 1e9:.2f} GB in {cp_s:.1f} s "
        f"({out['cp']['mbps']:.0f} MB/s; +sync {sync_s:.1f} s)")
    if os.access(RAWLIMITS, os.X_OK):
        d = os.path.join(a.work, "rawlimits")
        os.makedirs(d, exist_ok=True)
        for mode, args in (("append", [d, str(nbytes), "65536"]),
                           ("tcp+append", [d, "5", "65536"])):
            r = subprocess.run([RAWLIMITS, mode, *args], capture_output=True, text=True,
                               timeout=600)
            m = re.search(r"MBps=([\d.]+)", r.stdout)
            if m:
                out[mode] = {"mbps": float(m.group(1)), "line": r.stdout.strip()}
                log(f"rawlimits {mode}: {r.stdout.strip()}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d, exist_ok=True)
        shutil.rmtree(d, ignore_errors=True)
    return out


def drain(c, a):
    b, _ = c.status(4)
    before_fetch = metric(c.admin(1), "fjord_replica_fetch_bytes_total")
    before_du1 = du(c.data(1))
    log(f"draining broker 4 unthrottled ({b['replicas']} partitions)")
    t0 = time.time()
    c.broker("maintenance", "enable", "4", "--drain-replicas")
    samples = []
    while True:
        b, _ = c.status(4)
        t = time.time() - t0
        samples.append({"t": round(t, 2), "replicas": b["replicas"], "moving": b["moving"],
                        "bytes_left": b.get("bytes_left"), "leaders": b["leaders"]})
        if b["safe_to_remove"]:
            break
        if t > a.drain_timeout:
            raise SystemExit(f"drain not safe after {a.drain_timeout} s: {b.get('reasons')}")
        time.sleep(0.5)
    secs = time.time() - t0
    moved = metric(c.admin(1), "fjord_replica_fetch_bytes_total") - before_fetch
    grown = du(c.data(1)) - before_du1
    left_on_4 = du(c.data(4))
    # Partition dirs still on 4 when it is safe to remove (its metadata log, __cluster_quorum,
    # stays: every node is a controller here).
    dirs_left = sorted(d for d in os.listdir(c.data(4)) if not d.startswith("__")
                       and os.path.isdir(os.path.join(c.data(4), d)))
    res = {"seconds": secs, "bytes_moved": moved, "mbps": moved / MB / secs,
           "broker1_growth": grown, "left_on_4": left_on_4,
           "partition_dirs_left_on_4": len(dirs_left), "samples": samples}
    log(f"drain: safe to remove after {secs:.1f} s, {moved / 1e9:.2f} GB moved "
        f"({res['mbps']:.0f} MB/s); broker 1 grew {grown / 1e9:.2f} GB, {left_on_4} B in "
        f"{len(dirs_left)} partition dirs ({dirs_left[:3]}...) + metadata left on 4")
    return res


def throttle_run(c, a, rate):
    c.broker("maintenance", "disable", "4")
    wait_in_sync(c, 300)
    records = int(a.lat_rate * a.lat_seconds)
    log(f"latency before: {records} records of {a.lat_size} B acks=all at {a.lat_rate}/s")
    before = perf(c, "load", records, a.lat_size, "all", rate=a.lat_rate)
    log(f"  p50 {before['p50']} ms p99 {before['p99']} ms")

    def throttled():
        fol = metric(c.admin(4), "fjord_replication_throttled_bytes_total", {"side": "follower"})
        lead = sum(metric(c.admin(n), "fjord_replication_throttled_bytes_total",
                          {"side": "leader"}) for n in (1, 2, 3))
        return fol, lead

    b1, _ = c.status(1)
    log(f"draining broker 1 ({b1['replicas']} partitions) with --throttle {rate} B/s")
    c.broker("maintenance", "enable", "1", "--drain-replicas", "--throttle", str(rate))
    t0 = time.time()
    during = {}

    def probe():
        try:
            during.update(perf(c, "load", records, a.lat_size, "all", rate=a.lat_rate))
        except SystemExit as e:  # a failed probe is a result, not the end of the run
            during["error"] = str(e)
            log(f"latency probe failed: {e}")

    th = threading.Thread(target=probe)
    th.start()
    samples = []
    while True:
        t = time.time() - t0
        fol, lead = throttled()
        b, _ = c.status(1)
        samples.append({"t": round(t, 2), "follower": fol, "leader": lead,
                        "bytes_left": b.get("bytes_left"), "replicas": b["replicas"]})
        if t >= a.throttle_seconds or b["moving"] == 0:
            break
        time.sleep(max(0.0, 1.0 - (time.time() - t0 - t)))
    th.join()
    c.broker("maintenance", "disable", "1")
    wait_quiet(c, 1)
    wait_in_sync(c, 300)
    win = [s for s in samples if s["t"] >= a.throttle_warmup]
    if len(win) < 2:
        raise SystemExit("throttle window too short: raise --throttle-seconds")
    dt = win[-1]["t"] - win[0]["t"]
    fol_rate = (win[-1]["follower"] - win[0]["follower"]) / dt
    lead_rate = (win[-1]["leader"] - win[0]["leader"]) / dt
    left = [s for s in win if s["bytes_left"] is not None]
    left_rate = ((left[0]["bytes_left"] - left[-1]["bytes_left"]) / (left[-1]["t"] - left[0]["t"])
                 if len(left) >= 2 and left[-1]["t"] > left[0]["t"] else None)
    # The rate over every 5 s stretch of the window (1 s samples are too coarse: the fetcher
    # takes the throttle's allowance in bursts).
    per_s = [(win[j]["follower"] - win[i]["follower"]) / (win[j]["t"] - win[i]["t"])
             for i in range(len(win)) for j in range(i + 1, len(win))
             if win[j]["t"] - win[i]["t"] >= 5 and win[j - 1]["t"] - win[i]["t"] < 5]
    per_s = per_s or [fol_rate]
    # The largest amount moved between two consecutive samples (~1 s apart): how bursty.
    burst = max((b["follower"] - x["follower"]) / (b["t"] - x["t"])
                for x, b in zip(samples, samples[1:]))
    res = {"throttle": rate, "window_s": dt, "follower_bps": fol_rate, "leader_bps": lead_rate,
           "bytes_left_bps": left_rate, "ratio": fol_rate / rate,
           "largest_1s_bps": burst,
           "per_5s_follower_bps": {"min": min(per_s), "median": statistics.median(per_s),
                                       "max": max(per_s)},
           "latency_before": before, "latency_during": during, "samples": samples}
    log(f"throttle {rate / MB:.0f} MB/s: follower {fol_rate / MB:.1f} MB/s "
        f"(ratio {res['ratio']:.3f}), leaders {lead_rate / MB:.1f} MB/s; latency during p50 "
        f"{during.get('p50')} ms p99 {during.get('p99')} ms")
    return res


def rebalance_dry_run(c):
    """Wall time of `fjord cluster rebalance --dry-run` (replica sizes from every broker, the
    plan, the answer) on the cluster as it is now (4 back in service)."""
    if c.status(4)[0]["maintenance"] is not None:
        c.broker("maintenance", "disable", "4")
    t0 = time.time()
    r = c.cli("cluster", "rebalance", "--dry-run", "--max-moves", "100000", "-o", "json")
    secs = time.time() - t0
    plan = json.loads(r.stdout)
    moves = plan.get("moves", [])
    res = {"seconds": secs, "moves": len(moves), "bytes_to_move": plan.get("bytes_to_move")}
    log(f"rebalance --dry-run: {secs:.2f} s, {len(moves)} moves")
    return res


def report(a, res):
    out = []
    f = res.get("fill")
    if f:
        out.append(f"fill: {f['record_bytes'] / 1e9:.1f} GB of records in {f['seconds']:.0f} s; "
                   f"broker 4 holds {f['broker4_bytes'] / 1e9:.2f} GB in {a.partitions} partitions")
    d = res.get("drain")
    if d:
        out.append(f"drain (unthrottled): safe to remove after {d['seconds']:.1f} s, "
                   f"{d['bytes_moved'] / 1e9:.2f} GB moved, {d['mbps']:.0f} MB/s")
        for k, v in res.get("raw", {}).items():
            out.append(f"  raw {k}: {v['mbps']:.0f} MB/s -> drain/raw {d['mbps'] / v['mbps']:.2f}")
    for t in res.get("throttle", []):
        lb, ld = t["latency_before"], t["latency_during"]
        out.append(f"throttle {t['throttle'] / MB:.0f} MB/s: moved {t['follower_bps'] / MB:.1f} "
                   f"MB/s over {t['window_s']:.0f} s -> ratio {t['ratio']:.3f} (5 s windows "
                   f"{t['per_5s_follower_bps']['min'] / MB:.1f}..."
                   f"{t['per_5s_follower_bps']['max'] / MB:.1f} MB/s; largest 1 s sample "
                   f"{t['largest_1s_bps'] / MB:.1f} MB/s)")
        out.append(f"  acks=all {a.lat_rate}/s x {a.lat_size} B: p50 {lb['p50']} -> {ld.get('p50')}"
                   f" ms, p99 {lb['p99']} -> {ld.get('p99')} ms (ratio p99 during/before "
                   f"{ld.get('p99', 0) / lb['p99']:.2f})")
        if "error" in ld:
            out.append(f"  latency probe during the drain failed: {ld['error'][-300:]}")
    r = res.get("rebalance")
    if r:
        out.append(f"fjord cluster rebalance --dry-run ({a.partitions + 12} partitions): "
                   f"{r['seconds']:.2f} s wall, {r['moves']} moves")
    return "\n".join(out)


def main():
    global FJORD
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=3.0, help="GB of records (broker 4 holds them)")
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=4)
    ap.add_argument("--record-size", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=65536)
    ap.add_argument("--throttles", default="20MB,50MB")
    ap.add_argument("--throttle-seconds", type=float, default=60)
    ap.add_argument("--throttle-warmup", type=float, default=10)
    ap.add_argument("--lat-rate", type=int, default=5000, help="records/s of the latency probe")
    ap.add_argument("--lat-size", type=int, default=1000)
    ap.add_argument("--lat-seconds", type=float, default=30)
    ap.add_argument("--drain-timeout", type=float, default=3600)
    ap.add_argument("--only", default="drain,throttle,rebalance")
    ap.add_argument("--work", help="work dir (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's data dir")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="also write the command, the results and the JSON to this file")
    ap.add_argument("--fjord", default=FJORD, help="the fjord binary (default: the release build)")
    a = ap.parse_args()
    FJORD = a.fjord
    a.throttles = [rate_arg(x) for x in a.throttles.split(",") if x]
    only = set(a.only.split(","))
    if a.lat_seconds + a.throttle_warmup + 5 > a.throttle_seconds:
        a.throttle_seconds = a.lat_seconds + a.throttle_warmup + 5
    if not os.access(FJORD, os.X_OK):
        raise SystemExit(f"{FJORD} missing: cargo build --release -p fjord")
    created = a.work is None
    a.work = a.work or tempfile.mkdtemp(prefix="fjord-fleet-ops-")
    os.makedirs(a.work, exist_ok=True)
    c = Cluster(a.work)

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    res = {"args": {k: v for k, v in vars(a).items()}, "started": time.strftime("%FT%TZ"),
           "loadavg_start": os.getloadavg()}
    try:
        c.start()
        topics = create_topics(c, a)
        res["fill"] = fill(c, a, topics)
        if "drain" in only:
            res["raw"] = raw_limits(c, a, res["fill"]["broker4_bytes"])
            res["drain"] = drain(c, a)
        else:
            c.broker("maintenance", "enable", "4", "--drain-replicas")
            wait_safe(c, 4, a.drain_timeout)
        if "throttle" in only:
            res["throttle"] = []
            for i, rate in enumerate(a.throttles):
                res["throttle"].append(throttle_run(c, a, rate))
                # throttle_run leaves 4 out of maintenance and 1's drain cancelled: put 4
                # back into the state the next run starts from (4 in maintenance, drained).
                if i + 1 < len(a.throttles):
                    c.broker("maintenance", "enable", "4", "--drain-replicas")
                    wait_safe(c, 4, a.drain_timeout)
        if "rebalance" in only:
            res["rebalance"] = rebalance_dry_run(c)
    finally:
        c.stop()
        if not a.keep:
            shutil.rmtree(a.work if created else c.dir, ignore_errors=True)
    res["finished"] = time.strftime("%FT%TZ")
    res["loadavg_end"] = os.getloadavg()
    text = report(a, res)
    doc = json.dumps(res, indent=1)
    print(doc if a.json else text)
    if a.out:
        with open(a.out, "w") as f:
            cmd = " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv])
            f.write(f"$ {cmd}\n# {res['started']} .. {res['finished']}, fjord {a.fjord}, "
                    f"load average (1/5/15 min) at start {res['loadavg_start']}, at end "
                    f"{res['loadavg_end']}\n\n{text}\n\n{doc}\n")


if __name__ == "__main__":
    main()
