#!/usr/bin/env python3
"""Partition-skew sketch cost: produce throughput with `skew.sketch.enable` on and off, in one
run, alternating the order every round, the same volume each time (docs/performance.md,
"Partition skew sketch").

Each run starts a fresh release `fjord server` (temp data dir, `FJORD_LOG=warn`), runs
`fjord perf produce` against it and stops it. Configurations:
  off          skew.sketch.enable=false (only the per-partition byte counter)
  on/16        the default: one batch in 16 per partition sampled
  on/1         every batch sampled (the worst case)
each uncompressed and with --compression lz4 (a sampled compressed batch is inflated again).
`fjord perf` sends unkeyed records: the sketch then counts one key, `(null)`, which costs
what one hot key does; the key walk is the same per record.

    cargo build --release -p fjord
    python3 bench/skew.py [--rounds 3] [--records 2000000] [--out bench/results/skew]

Raw perf outputs go to OUT/raw-<time>.txt, the summary (median per configuration) to stdout
and OUT/summary-<time>.txt. Every process started here is killed on the way out.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNING = []

CONFIGS = [
    ("off", ["skew.sketch.enable=false"]),
    ("on/16", ["skew.sketch.enable=true", "skew.sample.rate=16"]),
    ("on/1", ["skew.sketch.enable=true", "skew.sample.rate=1"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(fjord, data, sets):
    port, admin = free_port(), free_port()
    args = [fjord, "server", "--log-dirs", data,
            "--listeners", f"PLAINTEXT://127.0.0.1:{port}",
            "--admin-listener", f"127.0.0.1:{admin}"]
    for s in sets:
        args += ["--set", s]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "FJORD_LOG": "warn"})
    RUNNING.append(p)
    line = p.stdout.readline()
    if "fjord ready" not in line:
        raise SystemExit(f"fjord did not start: {line!r}")
    return p, f"127.0.0.1:{port}"


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=300)
    RUNNING.remove(p)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(fjord, sets, compression, a, raw):
    with tempfile.TemporaryDirectory(prefix="fjord-skew-bench-") as data:
        p, boot = start(fjord, data, sets)
        try:
            cpu0 = cpu_seconds(p.pid)
            out = subprocess.run(
                [fjord, "--bootstrap-server", boot, "perf", "produce", "--topic", "bench",
                 "--num-records", str(a.records), "--record-size", str(a.record_size),
                 "--acks", "1", "--partitions", str(a.partitions),
                 "--compression", compression],
                capture_output=True, text=True, timeout=600)
            cpu = cpu_seconds(p.pid) - cpu0
        finally:
            stop(p)
    raw.write(f"### sets={sets} compression={compression}\n{out.stdout}{out.stderr}"
              f"broker cpu seconds: {cpu:.2f}\n\n")
    raw.flush()
    if out.returncode != 0:
        raise SystemExit(f"fjord perf failed: {out.stderr}")
    last = [l for l in out.stdout.splitlines() if "records sent" in l][-1]
    rate = float(re.search(r"([\d.]+) records/sec", last).group(1))
    return rate, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target/release/fjord"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/skew"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    res = {}
    with open(os.path.join(a.out, f"raw-{stamp}.txt"), "w") as raw:
        raw.write(f"# bench/skew.py {' '.join(sys.argv[1:])}\n# {os.uname().release} "
                  f"{os.cpu_count()} cpus, load before: {os.getloadavg()}\n\n")
        for r in range(a.rounds):
            for compression in ["none", "lz4"]:
                order = CONFIGS if r % 2 == 0 else list(reversed(CONFIGS))
                for name, sets in order:
                    rate, cpu = one(a.fjord, sets, compression, a, raw)
                    res.setdefault((compression, name), []).append((rate, cpu))
                    print(f"round {r + 1} {compression:4} {name:5}: {rate:12,.0f} records/s,"
                          f" broker {cpu:.2f} cpu-s", file=sys.stderr)
        raw.write(f"# load after: {os.getloadavg()}\n")
    lines = [f"{a.records:,} records of {a.record_size} B, acks=1, {a.partitions} partitions, "
             f"{a.rounds} rounds (median, min-max records/s; broker cpu-seconds median)"]
    for compression in ["none", "lz4"]:
        base = statistics.median(x for x, _ in res[(compression, "off")])
        for name, _ in CONFIGS:
            v = res[(compression, name)]
            rates = [x for x, _ in v]
            med = statistics.median(rates)
            lines.append(f"{compression:4} {name:5} {med:12,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
                         f"  {med / base * 100:6.1f}% of off"
                         f"  cpu {statistics.median(c for _, c in v):.2f} s")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(a.out, f"summary-{stamp}.txt"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in RUNNING:
            p.kill()
