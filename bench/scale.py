#!/usr/bin/env python3
"""Scale check: one Fjord node with many RF1 partitions — creation time, startup time, RSS,
memory per partition and open file descriptors, before and after a restart.

    python3 bench/scale.py [--partitions 100000] [--per-topic 1000] [--fjord target/release/fjord]
    python3 bench/scale.py --broker kafka [--kafka-heap "-Xmx1g -Xms1g"]   # the same for Apache
                                           # Kafka (one KRaft node, bench/kafka/start.sh)

To iterate on startup without re-creating the partitions every time:

    python3 bench/scale.py --keep DIR           # as above, but leave the data dir in DIR
    python3 bench/scale.py --reuse DIR [--restarts 3]   # restart DIR's node only; DIR is kept

With --reuse, --partitions must match what DIR holds (it only scales the per-partition RSS).
Without --keep/--reuse the data dir is a temp dir under --work, removed at the end.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNING = []  # fjord processes started here, killed on the way out if still running


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def start(fjord, data, port, admin):
    t0 = time.time()
    p = subprocess.Popen([fjord, "server", "--log-dirs", data,
                          "--listeners", f"PLAINTEXT://127.0.0.1:{port}",
                          "--admin-listener", f"127.0.0.1:{admin}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "FJORD_LOG": "warn"})
    RUNNING.append(p)
    line = p.stdout.readline()
    if "fjord ready" not in line:
        raise SystemExit(f"fjord did not start: {line!r}")
    return p, time.time() - t0


def stop(p):
    p.send_signal(signal.SIGTERM)
    t0 = time.time()
    p.wait(timeout=600)
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=100_000)
    ap.add_argument("--per-topic", type=int, default=1000)
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-work"))
    ap.add_argument("--keep", metavar="DIR",
                    help="create the partitions in DIR (must not exist) and keep it")
    ap.add_argument("--reuse", metavar="DIR",
                    help="skip creation: restart the node of DIR (made with --keep); DIR is kept")
    ap.add_argument("--restarts", type=int, default=1,
                    help="with --reuse: measured clean shutdown + startup rounds")
    ap.add_argument("--broker", choices=["fjord", "kafka"], default="fjord")
    ap.add_argument("--kafka-heap", default="-Xmx1g -Xms1g",
                    help="Kafka's JVM heap (kafka-server-start.sh's default is 1 GiB)")
    a = ap.parse_args()
    if a.broker == "kafka":
        kafka(a)
        return
    if a.keep and a.reuse:
        raise SystemExit("--keep and --reuse exclude each other")
    os.makedirs(a.work, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="scale-", dir=a.work)
    port, admin = free_port(), free_port()
    try:
        if a.reuse:
            reuse(a, tmp, port, admin)
            return
        if a.keep:
            if os.path.exists(a.keep):
                raise SystemExit(f"{a.keep} exists; --keep wants a new directory")
            data = a.keep
        else:
            data = os.path.join(tmp, "data")
        p, t_empty = start(a.fjord, data, port, admin)
        base = status(p.pid)
        t0 = time.time()
        left, i = a.partitions, 0
        while left > 0:
            n = min(a.per_topic, left)
            subprocess.run([a.fjord, "topic", "create", f"scale-{i:05}", "--partitions", str(n),
                            "--bootstrap-server", f"127.0.0.1:{port}"],
                           check=True, stdout=subprocess.DEVNULL)
            left -= n
            i += 1
        t_create = time.time() - t0
        created = status(p.pid)
        t_stop = stop(p)
        p, t_start = start(a.fjord, data, port, admin)
        time.sleep(1)
        restarted = status(p.pid)
        stop(p)
        per = (restarted["VmRSS"] - base["VmRSS"]) * 1024 / a.partitions
        print(f"partitions: {a.partitions} in {i} topics (RF 1)")
        print(f"create: {t_create:.1f} s; RSS {created['VmRSS']:.0f} MB, fds {created['fds']}")
        print(f"clean shutdown: {t_stop:.1f} s")
        print(f"startup: {t_start:.2f} s (empty node: {t_empty:.2f} s)")
        print(f"after restart: RSS {restarted['VmRSS']:.0f} MB (empty node {base['VmRSS']:.0f} MB), "
              f"{per:.1f} KB per partition, fds {restarted['fds']}")
        if a.keep:
            print(f"data kept in {data} (restart with --reuse {data}; delete it when done)")
    finally:
        for p in RUNNING:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def kafka_status(base):
    """RSS, peak RSS and fds of the Kafka JVM started in `base` (bench/kafka/start.sh)."""
    with open(os.path.join(base, "pids")) as f:
        pid = int(f.read().split()[1])
    return status(pid)


def kafka_start(base, port, cport, heap, partitions):
    """Start Kafka on `base`; returns the seconds until it answers and Metadata lists every
    partition (a restart is not done before its logs are loaded and served)."""
    t0 = time.time()
    p = subprocess.run([os.path.join(ROOT, "bench", "kafka", "start.sh"), "--port", str(port),
                        "--controller-port", str(cport), "--base-dir", base, "--heap", heap,
                        "--timeout", "1800"], capture_output=True, text=True)
    if "kafka ready" not in p.stdout:
        raise SystemExit(f"kafka did not start: {p.stdout} {p.stderr[-2000:]}")
    fjord = os.path.join(ROOT, "target", "release", "fjord")
    while partitions:
        out = subprocess.run([fjord, "--bootstrap-server", f"127.0.0.1:{port}", "topic", "list",
                              "-o", "json"], capture_output=True, text=True)
        if out.returncode == 0:
            got = sum(t["partitions"] for t in json.loads(out.stdout)["topics"])
            if got >= partitions:
                break
        time.sleep(0.5)
    return time.time() - t0


def kafka_stop(base):
    t0 = time.time()
    subprocess.run([os.path.join(ROOT, "bench", "kafka", "stop.sh"), "--base-dir", base,
                    "--timeout", "600"], capture_output=True)
    return time.time() - t0


def kafka(a):
    """The same measurement for Apache Kafka: one KRaft node, RF 1, default configs."""
    os.makedirs(a.work, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="scale-kafka-", dir=a.work)
    base = os.path.join(tmp, "kafka")
    port, cport = free_port(), free_port()
    fjord = os.path.join(ROOT, "target", "release", "fjord")
    try:
        t_empty = kafka_start(base, port, cport, a.kafka_heap, 0)
        empty = kafka_status(base)
        t0 = time.time()
        left, i = a.partitions, 0
        while left > 0:
            n = min(a.per_topic, left)
            subprocess.run([fjord, "topic", "create", f"scale-{i:05}", "--partitions", str(n),
                            "--bootstrap-server", f"127.0.0.1:{port}",
                            "--request-timeout-ms", "600000"],
                           check=True, stdout=subprocess.DEVNULL)
            left -= n
            i += 1
        t_create = time.time() - t0
        created = kafka_status(base)
        t_stop = kafka_stop(base)
        t_start = kafka_start(base, port, cport, a.kafka_heap, a.partitions)
        time.sleep(1)
        restarted = kafka_status(base)
        kafka_stop(base)
        per = (restarted["VmRSS"] - empty["VmRSS"]) * 1024 / a.partitions
        print(f"Apache Kafka, heap {a.kafka_heap}: partitions: {a.partitions} in {i} topics (RF 1)")
        print(f"create: {t_create:.1f} s; RSS {created['VmRSS']:.0f} MB, fds {created['fds']}")
        print(f"clean shutdown: {t_stop:.1f} s")
        print(f"startup until every partition is listed: {t_start:.2f} s "
              f"(empty node: {t_empty:.2f} s)")
        print(f"after restart: RSS {restarted['VmRSS']:.0f} MB (empty node {empty['VmRSS']:.0f} "
              f"MB), {per:.1f} KB per partition, fds {restarted['fds']}")
    finally:
        kafka_stop(base)
        shutil.rmtree(tmp, ignore_errors=True)


def reuse(a, tmp, port, admin):
    """Restart an existing data dir: an empty node first (RSS baseline), then --restarts rounds
    of start, RSS, clean shutdown. The first start after --keep follows a clean shutdown too."""
    if not os.path.isdir(a.reuse):
        raise SystemExit(f"{a.reuse} is not a directory")
    p, t_empty = start(a.fjord, os.path.join(tmp, "empty"), port, admin)
    base = status(p.pid)
    stop(p)
    for r in range(a.restarts):
        p, t_start = start(a.fjord, a.reuse, port, admin)
        time.sleep(1)
        restarted = status(p.pid)
        t_stop = stop(p)
        per = (restarted["VmRSS"] - base["VmRSS"]) * 1024 / a.partitions
        print(f"round {r + 1}: startup {t_start:.2f} s (empty node: {t_empty:.2f} s); "
              f"RSS {restarted['VmRSS']:.0f} MB (empty node {base['VmRSS']:.0f} MB), "
              f"{per:.1f} KB per partition, fds {restarted['fds']}; clean shutdown {t_stop:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
