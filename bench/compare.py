#!/usr/bin/env python3
"""Side-by-side benchmark: Fjord vs librdkafka's mock broker vs the machine's raw limits.

Run through bench/compare.sh, which builds the tools first. Standard library only.

Every round starts a fresh Fjord (release build, durable on disk, temp data dir) and a fresh
mock broker, and runs the same rdkafka_performance workloads against each, alternating which
goes first, so a noisy neighbour hurts both alike. The table shows min/median/max over rounds.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workload:
    def __init__(self, name, topic, partitions, size, count, acks, extra=(), kind="produce"):
        self.name, self.topic, self.partitions = name, topic, partitions
        self.size, self.count, self.acks = size, count, acks
        self.extra, self.kind = list(extra), kind


def workloads(scale):
    n = lambda x: max(1000, int(x * scale))  # noqa: E731
    return [
        Workload("produce 100B acks=1 1p", "p1", 1, 100, n(3_000_000), 1),
        Workload("produce 100B acks=1 16p", "p16", 16, 100, n(3_000_000), 1),
        Workload("produce 1KB acks=all", "big", 1, 1024, n(1_000_000), -1),
        # A key per message and at most 10 records per batch: many small batches.
        Workload("produce 100B keyed, small batches", "keyed", 16, 100, n(600_000), 1,
                 ["-k", "order-42", "-X", "batch.num.messages=10", "-X", "linger.ms=1"]),
        Workload("consume catch-up 1KB", "catchup", 1, 1024, n(2_000_000), 1, kind="consume"),
        Workload("latency 100B acks=1 @50%", "lat", 1, 100, 0, 1,
                 ["-X", "linger.ms=0"], kind="latency"),
    ]


class Broker:
    """A running broker under test."""

    def __init__(self, kind, work, perf_bin, fjord_bin, mock_bin, topics):
        self.kind = kind
        self.tmp = None
        if kind == "fjord":
            self.tmp = tempfile.mkdtemp(prefix="fjord-bench-", dir=work)
            port, admin = free_port(), free_port()
            self.bootstrap = f"127.0.0.1:{port}"
            self.proc = subprocess.Popen(
                [fjord_bin, "server", "--log-dirs", os.path.join(self.tmp, "data"),
                 "--listeners", f"PLAINTEXT://{self.bootstrap}",
                 "--admin-listener", f"127.0.0.1:{admin}"],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "server.log"), "w"),
                text=True, env={**os.environ, "FJORD_LOG": "warn", "NO_COLOR": "1"})
            line = self.proc.stdout.readline()
            if "fjord ready" not in line:
                raise SystemExit(f"fjord did not start: {line!r}, see {self.tmp}/server.log")
            for name, parts in topics:
                subprocess.run([fjord_bin, "topic", "create", name, "--partitions", str(parts),
                                "--bootstrap-server", self.bootstrap],
                               check=True, stdout=subprocess.DEVNULL)
        else:
            self.proc = subprocess.Popen(
                [mock_bin] + [f"{t}:{p}" for t, p in topics],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.bootstrap = self.proc.stdout.readline().strip()
            if not self.bootstrap:
                raise SystemExit("mock broker did not start")

    def rss_mb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


SUMMARY_P = re.compile(r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .* "
                       r"in (\d+)ms: (\d+) msgs/s and ([\d.]+) MB/s")
SUMMARY_C = re.compile(r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s "
                       r"\(([\d.]+) MB/s\)")


def last(pattern, text):
    """The final summary line (rdkafka_performance also prints one per interval)."""
    ms = list(pattern.finditer(text))
    return ms[-1] if ms else None


def percentiles(path):
    try:
        with open(path) as f:
            xs = sorted(int(x) for x in f if x.strip())
    except OSError:
        return {}
    if not xs:
        return {}
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] / 1000.0  # noqa: E731  (us -> ms)
    return {"p50": pick(0.50), "p99": pick(0.99), "p99.9": pick(0.999)}


def run_perf(perf_bin, args, timeout):
    p = subprocess.run([perf_bin] + args, capture_output=True, text=True, timeout=timeout)
    return p.stdout + p.stderr


def run_workload(w, b, perf_bin, work, rate, timeout):
    """Returns {'msgs': msgs/s, 'mbps': MB/s, 'p50':..., ...} or {'error': text}."""
    lat_file = os.path.join(work, f"lat-{b.kind}.txt")
    if os.path.exists(lat_file):
        os.remove(lat_file)
    base = ["-b", b.bootstrap, "-t", w.topic]
    if w.kind == "consume":
        # Fill first (not timed here), then read everything back from offset 0.
        out = run_perf(perf_bin, base + ["-P", "-s", str(w.size), "-c", str(w.count), "-a", "1",
                                         "-p", "0"], timeout)
        if not last(SUMMARY_P, out):
            return {"error": "fill failed: " + out[-300:]}
        args = base + ["-C", "-p", "0", "-o", "beginning", "-c", str(w.count)]
    elif w.kind == "latency":
        count = max(1000, int(rate * LATENCY_SECONDS))
        args = base + ["-P", "-s", str(w.size), "-c", str(count), "-a", str(w.acks), "-p", "0",
                       "-r", str(int(rate)), "-l", "-A", lat_file] + w.extra
    else:
        # No per-message latency file here: writing it would compete for the 2 cores.
        args = base + ["-P", "-s", str(w.size), "-c", str(w.count), "-a", str(w.acks)] + w.extra
    out = run_perf(perf_bin, args, timeout)
    if w.kind == "consume":
        m = last(SUMMARY_C, out)
        if not m or int(m.group(1)) < w.count:
            return {"error": "consume failed: " + out[-300:]}
        return {"msgs": int(m.group(4)), "mbps": float(m.group(5))}
    m = last(SUMMARY_P, out)
    if not m:
        return {"error": "produce failed: " + out[-300:]}
    produced, delivered = int(m.group(1)), int(m.group(3))
    if delivered < produced:
        return {"error": f"only {delivered}/{produced} delivered"}
    r = {"msgs": int(m.group(5)), "mbps": float(m.group(6))}
    r.update(percentiles(lat_file))
    return r


LATENCY_SECONDS = 10


def fmt_range(xs, f="{:.0f}"):
    if not xs:
        return "-"
    if len(xs) == 1:
        return f.format(xs[0])
    return f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1/10 of the data, 2 rounds")
    ap.add_argument("--only", help="comma-separated workload name substrings")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-work"))
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    args = ap.parse_args()
    global LATENCY_SECONDS
    scale = 1.0
    if args.quick:
        scale, LATENCY_SECONDS = 0.1, 4
        if args.rounds == 3:
            args.rounds = 2
    work = args.work
    perf_bin = os.path.join(work, "rdkafka_performance")
    mock_bin = os.path.join(work, "mock_broker")
    raw_bin = os.path.join(work, "rawlimits")
    ws = workloads(scale)
    if args.only:
        keys = args.only.split(",")
        ws = [w for w in ws if any(k in w.name for k in keys)]
    topics = sorted({(w.topic, w.partitions) for w in ws})

    # Raw limits, measured once before and once after the broker rounds.
    raw = {"tcp": [], "append": [], "tcp+append": []}
    rawdir = tempfile.mkdtemp(prefix="raw-", dir=work)

    def measure_raw():
        secs = "2" if args.quick else "3"
        for mode, argv in [("tcp", ["tcp", secs, "65536"]),
                           ("append", ["append", rawdir, str(1 << 30), "65536"]),
                           ("tcp+append", ["tcp+append", rawdir, secs, "65536"])]:
            out = subprocess.run([raw_bin] + argv, capture_output=True, text=True, check=True).stdout
            raw[mode].append(float(re.search(r"MBps=([\d.]+)", out).group(1)))

    log("raw limits")
    measure_raw()

    results = {}  # (workload, broker) -> list of dicts
    latency_rate = None
    t_start = time.time()
    for rnd in range(args.rounds):
        order = ["fjord", "mock"] if rnd % 2 == 0 else ["mock", "fjord"]
        for kind in order:
            log(f"round {rnd + 1}/{args.rounds}: {kind}")
            b = Broker(kind, work, perf_bin, args.fjord, mock_bin, topics)
            try:
                for w in ws:
                    if w.kind == "consume" and kind == "mock":
                        # The mock answers each Fetch with one message set per partition and
                        # then waits: it is not a catch-up reference (raw loopback TCP is).
                        continue
                    if w.kind == "latency":
                        if latency_rate is None:
                            # 50 % of Fjord's measured max for 100 B acks=1 on one partition.
                            got = [r["msgs"] for r in results.get(("produce 100B acks=1 1p", "fjord"), [])
                                   if "msgs" in r]
                            latency_rate = 0.5 * med(got) if got else 50_000
                        rate = latency_rate
                    else:
                        rate = None
                    r = run_workload(w, b, perf_bin, work, rate, timeout=600)
                    if "error" in r:
                        log(f"  {w.name}: {kind}: ERROR {r['error']}")
                    else:
                        extra = f" p99={r['p99']:.2f}ms" if "p99" in r else ""
                        log(f"  {w.name}: {kind}: {r['msgs']} msgs/s {r['mbps']:.1f} MB/s{extra}")
                    results.setdefault((w.name, kind), []).append(r)
                results.setdefault(("rss", kind), []).append({"rss": b.rss_mb()})
            finally:
                b.stop()
    measure_raw()
    shutil.rmtree(rawdir, ignore_errors=True)
    elapsed = time.time() - t_start

    # The table.
    raw_tcp, raw_app, raw_ta = med(raw["tcp"]), med(raw["append"]), med(raw["tcp+append"])
    print()
    print(f"Machine: {machine()}")
    print(f"Raw limits (median of {len(raw['tcp'])}): loopback TCP {raw_tcp:.0f} MB/s, "
          f"append-to-file {raw_app:.0f} MB/s, TCP→append {raw_ta:.0f} MB/s")
    if latency_rate:
        print(f"Latency workload rate: {latency_rate:.0f} msgs/s (50 % of Fjord's 100 B 1p max)")
    print(f"{args.rounds} rounds, broker rounds took {elapsed:.0f} s; "
          "cells: median (min–max) over rounds\n")
    hdr = ["workload", "broker", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms",
           "Fjord/mock", "Fjord/raw"]
    rows = []
    for w in ws:
        limit = {"produce 1KB acks=all": raw_ta, "consume catch-up 1KB": raw_tcp}.get(w.name)
        for kind in ["fjord", "mock"]:
            if (w.name, kind) not in results:
                rows.append([w.name, kind, "n/a", "", "", "", "", "", ""])
                continue
            rs = [r for r in results.get((w.name, kind), []) if "msgs" in r]
            errs = len(results.get((w.name, kind), [])) - len(rs)
            msgs = [r["msgs"] for r in rs]
            mbps = [r["mbps"] for r in rs]
            lat = {q: [r[q] for r in rs if q in r] for q in ["p50", "p99", "p99.9"]}
            ratio_mock = ratio_raw = ""
            if kind == "fjord":
                other = [r["msgs"] for r in results.get((w.name, "mock"), []) if "msgs" in r]
                if msgs and other:
                    ratio_mock = f"{med(msgs) / med(other):.2f}"
                if msgs and limit:
                    ratio_raw = f"{med(mbps) / limit:.2f}"
            row = [w.name, kind + (f" ({errs} failed)" if errs else ""), fmt_range(msgs),
                   fmt_range(mbps, "{:.1f}")] + \
                  [fmt_range(lat[q], "{:.2f}") for q in ["p50", "p99", "p99.9"]] + \
                  [ratio_mock, ratio_raw]
            rows.append(row)
    for kind in ["fjord", "mock"]:
        rss = [r["rss"] for r in results.get(("rss", kind), [])]
        rows.append(["RSS after the round (MB)", kind, "", fmt_range(rss), "", "", "", "", ""])
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |"  # noqa
    print(line(hdr))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print(line(r))
    print("\nFjord/raw: produce 1KB MB/s ÷ TCP→append; consume MB/s ÷ loopback TCP.")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Linux {os.uname().release}"


if __name__ == "__main__":
    main()
