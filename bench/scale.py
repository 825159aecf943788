#!/usr/bin/env python3
"""Scale check: one Fjord node with many RF1 partitions — creation time, startup time, RSS,
memory per partition and open file descriptors, before and after a restart.

    python3 bench/scale.py [--partitions 100000] [--per-topic 1000] [--fjord target/release/fjord]
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="scale-", dir=a.work)
    data = os.path.join(tmp, "data")
    port, admin = free_port(), free_port()
    try:
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
