#!/usr/bin/env python3
"""Side-by-side benchmark: Fjord vs Apache Kafka vs librdkafka's mock broker vs the machine's raw
limits.

Run through bench/compare.sh, which builds the tools first. Standard library only.

Every round starts a fresh Fjord (release build, durable on disk, temp data dir), a fresh Apache
Kafka (single KRaft node from the Maven jars, bench/kafka/start.sh, default configs, 1 GiB heap as
Kafka's own start script, data on the same disk) and a fresh mock broker (and, with --baseline, a
fresh Fjord built from an earlier commit), and runs the same workloads against each, rotating
which goes first, so a noisy neighbour hurts all alike. Workloads are driven by librdkafka's
rdkafka_performance, by `fjord perf` (our client, which pre-builds batches and so can push more
bytes than one librdkafka producer on a shared core) and by Kafka's kafka-producer-perf-test
and kafka-consumer-perf-test (the Java clients, run from the same jars; not against the mock,
where they stall). The catch-up rows of both consumers read the same records, written once per
broker round; kafka-consumer-perf-test's rate is counted after its group join (printed apart).
The table shows min/median/max over rounds, and the CPU time the broker process spent per MB
moved next to the CPU time of the raw receive/append (or send) path for the same bytes.

    bench/compare.sh                                  # everything, 3 rounds
    bench/compare.sh --rounds 3 --only catch-up       # the four catch-up rows (both consumers)
    bench/compare.sh --only "(kafka-consumer-perf-test)" --no-mock
    bench/compare.sh --tls --rounds 3 --raw-dir DIR   # issue 16: also fjord-tls and kafka-tls
                                                      # (one-way TLS), TLS ÷ plaintext table
"""

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workload:
    """kind: produce | consume | latency; tool: rdkafka (rdkafka_performance) | perf (fjord perf).
    raw: the raw limit the MB/s is compared with (tcp+append for produce, tcp for consume)."""

    def __init__(self, name, topic, partitions, size, count, acks, extra=(), kind="produce",
                 tool="rdkafka", raw=None, rate_from=None, txn=0):
        self.name, self.topic, self.partitions = name, topic, partitions
        self.size, self.count, self.acks = size, count, acks
        self.extra, self.kind, self.tool, self.raw = list(extra), kind, tool, raw
        self.rate_from = rate_from
        self.txn = txn  # jtxn: records per transaction (0: none)


def workloads(scale):
    n = lambda x: max(1000, int(x * scale))  # noqa: E731
    catch_up = 2_000_000_000  # bytes read back in the catch-up workloads
    return [
        Workload("produce 100B acks=1 1p", "p1", 1, 100, n(3_000_000), 1),
        Workload("produce 100B acks=1 16p", "p16", 16, 100, n(3_000_000), 1),
        Workload("produce 1KB acks=all", "big", 1, 1024, n(1_000_000), -1, raw="tcp+append"),
        # Issue 14's first target: 1 KB acks=1 against the TCP→append limit and Kafka.
        Workload("produce 1KB acks=1 1p", "big1", 1, 1024, n(1_000_000), 1, raw="tcp+append"),
        Workload("produce 1KB acks=1 1p (fjord perf)", "big1perf", 1, 1024, n(2_000_000), 1,
                 tool="perf", raw="tcp+append"),
        Workload("produce 1KB acks=all (fjord perf)", "bigperf", 1, 1024, n(2_000_000), -1,
                 tool="perf", raw="tcp+append"),
        # A key per message and at most 10 records per batch: many small batches.
        Workload("produce 100B keyed, small batches", "keyed", 16, 100, n(600_000), 1,
                 ["-k", "order-42", "-X", "batch.num.messages=10", "-X", "linger.ms=1"]),
        Workload("consume catch-up 1KB records", "catchup", 1, 1024, n(catch_up // 1024), 1,
                 kind="consume", raw="tcp"),
        Workload("consume catch-up 16KB records", "catchup16", 1, 16384, n(catch_up // 16384), 1,
                 kind="consume", raw="tcp"),
        Workload("latency 100B acks=1 @50%", "lat", 1, 100, 0, 1, ["-X", "linger.ms=0"],
                 kind="latency", rate_from="produce 100B acks=1 1p"),
        Workload("produce 100B acks=1 1p (fjord perf)", "p1perf", 1, 100, n(5_000_000), 1,
                 tool="perf"),
        # Per produce request (16 KB batches, as at full speed), paced by fjord perf's clock.
        Workload("latency 100B acks=1 @50% (fjord perf)", "latperf", 1, 100, 0, 1,
                 kind="latency", tool="perf", rate_from="produce 100B acks=1 1p (fjord perf)"),
        # The Java client, as most Kafka users run it (idempotent by default).
        Workload("produce 100B acks=1 1p (kafka-producer-perf-test)", "p1java", 1, 100,
                 n(3_000_000), 1, tool="kperf"),
        Workload("produce 1KB acks=all (kafka-producer-perf-test)", "bigjava", 1, 1024,
                 n(1_000_000), -1, tool="kperf", raw="tcp+append"),
        # The Java consumer (a classic-protocol group member, as kafka-consumer-perf-test
        # runs it) reading the same topics back; filled here only if the rdkafka_performance
        # row above did not already fill them in this broker's round.
        Workload("consume catch-up 1KB records (kafka-consumer-perf-test)", "catchup", 1, 1024,
                 n(catch_up // 1024), 1, kind="consume", tool="kcperf", raw="tcp"),
        Workload("consume catch-up 16KB records (kafka-consumer-perf-test)", "catchup16", 1,
                 16384, n(catch_up // 16384), 1, kind="consume", tool="kcperf", raw="tcp"),
        # Transactions (issue 15): one Java producer (acks=all, idempotent, the client's
        # defaults) without transactions and with transactions of 100 and of 10,000 records,
        # each commit waited for (tests/clients/java TxnPerfScenario); compared with each other
        # in the table after the main one.
        Workload(TXN_ROWS[0], "txn0", 1, 100, n(1_000_000), -1, tool="jtxn"),
        Workload(TXN_ROWS[1], "txn100", 1, 100, n(100_000), -1, tool="jtxn", txn=100),
        Workload(TXN_ROWS[2], "txn10k", 1, 100, n(1_000_000), -1, tool="jtxn", txn=10_000),
    ]


TXN_ROWS = ["produce 100B acks=all (Java, no transactions)",
            "produce 100B acks=all (Java, transactions of 100)",
            "produce 100B acks=all (Java, transactions of 10,000)"]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (clock-tick resolution)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return float("nan")


KAFKA_HEAP = "-Xmx1g -Xms1g"  # what Kafka's kafka-server-start.sh gives a broker


def kafka_home():
    version = open(os.path.join(ROOT, "bench", "kafka", "VERSION")).read().strip()
    version = os.environ.get("FJORD_KAFKA_VERSION", version)
    return os.environ.get("FJORD_KAFKA_HOME",
                          os.path.expanduser(f"~/.cache/fjord/kafka-{version}"))


class Tls:
    """Certificates for the TLS rows (--tls), made with openssl in the work dir: a CA and a
    server certificate for IP:127.0.0.1 and DNS:localhost (RSA 2048), and the client settings
    of each load generator (one-way TLS: no client certificate). Both brokers get the same key
    and certificate as PEM (KIP-651): Fjord a keystore file with the key as encrypted PKCS#8
    and ssl.key.password; Kafka the same key unencrypted, inline (ssl.keystore.key and
    ssl.keystore.certificate.chain), because a file-based PEM keystore in Kafka needs an
    encrypted key and Java 17 cannot decrypt PBES2 keys ("PBES2 SecretKeyFactory not
    available"; openssl's PBES1 ciphers are not what operators use either)."""

    PASSWORD = "fjord-bench"

    def __init__(self, work):
        self.dir = os.path.join(work, "tls")
        os.makedirs(self.dir, exist_ok=True)
        d = lambda name: os.path.join(self.dir, name)  # noqa: E731
        self.ca, self.keystore = d("ca.pem"), d("server-keystore.pem")
        san = d("san.ext")
        with open(san, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for argv in [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d("ca.key"), "-out",
             self.ca, "-days", "7", "-subj", "/CN=fjord-bench-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", d("server.key"), "-out",
             d("server.csr"), "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", d("server.csr"), "-CA", self.ca, "-CAkey", d("ca.key"),
             "-CAcreateserial", "-out", d("server.pem"), "-days", "7", "-extfile", san],
            ["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", d("server.key"), "-out",
             d("server-enc.key"), "-passout", f"pass:{self.PASSWORD}"],
        ]:
            subprocess.run(["openssl"] + argv, check=True, capture_output=True)
        with open(self.keystore, "w") as out:
            for part in ("server-enc.key", "server.pem"):
                with open(d(part)) as f:
                    out.write(f.read())
        # The Java tools' client settings (KIP-651 PEM truststore).
        self.java_props = d("client-ssl.properties")
        with open(self.java_props, "w") as f:
            f.write(f"security.protocol=SSL\nssl.truststore.type=PEM\n"
                    f"ssl.truststore.location={self.ca}\n")
        # rdkafka_performance (librdkafka on OpenSSL; it checks the host name by default).
        self.rdkafka = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={self.ca}"]

    def broker_settings(self, system):
        """The broker's ssl.* keys (one-way TLS)."""
        if system == "kafka":
            # A properties line: newlines as \n escapes (java.util.Properties).
            pem = lambda name: open(os.path.join(self.dir, name)).read().strip() \
                .replace("\n", "\\n")  # noqa: E731
            return ["ssl.keystore.type=PEM", f"ssl.keystore.key={pem('server.key')}",
                    f"ssl.keystore.certificate.chain={pem('server.pem')}",
                    "ssl.client.auth=none"]
        return ["ssl.keystore.type=PEM", f"ssl.keystore.location={self.keystore}",
                f"ssl.key.password={self.PASSWORD}", "ssl.client.auth=none"]


TLS_SUFFIX = "-tls"


class Broker:
    """A running broker under test: kind is fjord, base (an earlier Fjord build), kafka (Apache
    Kafka, one KRaft node) or mock; fjord-tls and kafka-tls are the same brokers serving their
    clients over TLS (--tls)."""

    def __init__(self, kind, work, fjord_bin, mock_bin, topics, tls=None):
        self.kind = kind
        self.system = kind[:-len(TLS_SUFFIX)] if kind.endswith(TLS_SUFFIX) else kind
        self.tls = tls if kind.endswith(TLS_SUFFIX) else None
        self.tmp = None
        self.proc = None
        self.filled = set()  # (topic, record size, count) already written for a consume row
        if self.system == "kafka":
            self.tmp = tempfile.mkdtemp(prefix=f"{kind}-bench-", dir=work)
            port, cport = free_port(), free_port()
            sets = []
            if self.tls:
                # Clients on an SSL listener; start.sh's readiness probe and the topic creation
                # below stay on its PLAINTEXT one (idle during the runs). These lines come after
                # start.sh's own in server.properties, and the last occurrence of a key wins
                # (java.util.Properties).
                sport = free_port()
                sets = [f"listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{sport},"
                        f"CONTROLLER://127.0.0.1:{cport}",
                        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},"
                        f"SSL://127.0.0.1:{sport}",
                        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,"
                        "PLAINTEXT:PLAINTEXT,SSL:SSL"] + self.tls.broker_settings("kafka")
            argv = [os.path.join(ROOT, "bench", "kafka", "start.sh"), "--port", str(port),
                    "--controller-port", str(cport), "--base-dir", self.tmp, "--heap", KAFKA_HEAP]
            for kv in sets:
                argv += ["--set", kv]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            m = re.search(r"kafka ready bootstrap=(\S+)", p.stdout)
            if not m:
                raise SystemExit(f"kafka did not start: {p.stdout[-300:]} {p.stderr[-500:]}")
            self.bootstrap = m.group(1)
            with open(os.path.join(self.tmp, "pids")) as f:
                self.pid = int(f.read().split()[1])
            for name, parts in topics:
                subprocess.run([fjord_bin, "topic", "create", name, "--partitions", str(parts),
                                "--bootstrap-server", self.bootstrap],
                               check=True, stdout=subprocess.DEVNULL)
            if self.tls:
                self.bootstrap = f"127.0.0.1:{sport}"
            return
        if self.system in ("fjord", "base"):
            self.tmp = tempfile.mkdtemp(prefix=f"{kind}-bench-", dir=work)
            port, admin = free_port(), free_port()
            self.bootstrap = f"127.0.0.1:{port}"
            argv = [fjord_bin, "server", "--log-dirs", os.path.join(self.tmp, "data"),
                    "--listeners", f"PLAINTEXT://{self.bootstrap}",
                    "--admin-listener", f"127.0.0.1:{admin}"]
            if self.tls:
                # One client listener, named PLAINTEXT, speaking SSL.
                for kv in ["listener.security.protocol.map=PLAINTEXT:SSL"] + \
                        self.tls.broker_settings("fjord"):
                    argv += ["--set", kv]
            self.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "server.log"), "w"),
                text=True, env={**os.environ, "FJORD_LOG": "warn", "NO_COLOR": "1"})
            line = self.proc.stdout.readline()
            if "fjord ready" not in line:
                raise SystemExit(f"fjord did not start: {line!r}, see {self.tmp}/server.log")
            for name, parts in topics:
                if self.tls:
                    # `fjord topic` has no TLS client: Kafka's own tool, over SSL.
                    argv = [os.path.join(kafka_home(), "bin", "kafka-topics.sh"),
                            "--bootstrap-server", self.bootstrap, "--command-config",
                            self.tls.java_props, "--create", "--topic", name, "--partitions",
                            str(parts), "--replication-factor", "1"]
                else:
                    argv = [fjord_bin, "topic", "create", name, "--partitions", str(parts),
                            "--bootstrap-server", self.bootstrap]
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        else:
            self.proc = subprocess.Popen(
                [mock_bin] + [f"{t}:{p}" for t, p in topics],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.bootstrap = self.proc.stdout.readline().strip()
            if not self.bootstrap:
                raise SystemExit("mock broker did not start")
        self.pid = self.proc.pid

    def rss_mb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def cpu(self):
        return cpu_seconds(self.pid)

    def stop(self):
        if self.system == "kafka":
            subprocess.run([os.path.join(ROOT, "bench", "kafka", "stop.sh"), "--base-dir",
                            self.tmp, "--clean"], capture_output=True, timeout=120)
            return
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
SUMMARY_PERF = re.compile(r"(\d+) records sent, ([\d.]+) records/sec .* ([\d.]+) ms 50th, "
                          r"([\d.]+) ms 99th, ([\d.]+) ms 99.9th")


def last(pattern, text):
    """The final summary line (the tools also print one per interval)."""
    ms = list(pattern.finditer(text))
    return ms[-1] if ms else None


def percentiles(path, skip=0):
    """p50/p99/p99.9 in ms of rdkafka_performance -A's per-message latencies (µs, one a line,
    in delivery order), without the first `skip` lines."""
    try:
        with open(path) as f:
            xs = sorted([int(x) for x in f if x.strip()][skip:])
    except OSError:
        return {}
    if not xs:
        return {}
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] / 1000.0  # noqa: E731  (us -> ms)
    return {"p50": pick(0.50), "p99": pick(0.99), "p99.9": pick(0.999)}


CLIENT_CPU = [0.0]  # CPU seconds of the last load-generator run
# --raw-dir: every tool run's command line and output is appended to RAW_LOG["path"].
RAW_LOG = {"dir": None, "path": None}


def run_tool(argv, timeout):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CLIENT_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if RAW_LOG["path"]:
        with open(RAW_LOG["path"], "a") as f:
            f.write(f"$ {' '.join(argv)}\n# exit {p.returncode}, {time.time() - t0:.1f} s, "
                    f"client CPU {CLIENT_CPU[0]:.2f} s, load average "
                    f"{' '.join(open('/proc/loadavg').read().split()[:3])}\n")
            f.write(p.stdout + p.stderr + "\n")
    return p.stdout + p.stderr


class Tools:
    def __init__(self, work, fjord_bin):
        self.perf = os.path.join(work, "rdkafka_performance")
        self.fjord = fjord_bin
        self.work = work


def run_workload(w, b, tools, rate, timeout):
    """Returns {'msgs': msgs/s, 'mbps': MB/s, 'cpu': broker CPU s, 'p50':..., ...} or
    {'error': text}."""
    if w.tool == "perf":
        return run_fjord_perf(w, b, tools, rate, timeout)
    if w.tool == "kperf":
        return run_kafka_perf(w, b, tools, timeout)
    if w.tool == "kcperf":
        return run_kafka_consumer_perf(w, b, tools, timeout)
    if w.tool == "jtxn":
        return run_java_txn_perf(w, b, timeout)
    lat_file = os.path.join(tools.work, f"lat-{b.kind}.txt")
    if os.path.exists(lat_file):
        os.remove(lat_file)
    base = [tools.perf, "-b", b.bootstrap, "-t", w.topic] + (b.tls.rdkafka if b.tls else [])
    if w.kind == "consume":
        err = fill(w, b, tools, timeout)
        if err:
            return err
        args = base + ["-C", "-p", "0", "-o", "beginning", "-c", str(w.count)]
    elif w.kind == "latency":
        count = max(1000, int(rate * LATENCY_SECONDS))
        args = base + ["-P", "-s", str(w.size), "-c", str(count), "-a", str(w.acks), "-p", "0",
                       "-r", str(int(rate)), "-l", "-A", lat_file] + w.extra
    else:
        # No per-message latency file here: writing it would compete for the 2 cores.
        args = base + ["-P", "-s", str(w.size), "-c", str(w.count), "-a", str(w.acks)] + w.extra
    cpu0 = b.cpu()
    out = run_tool(args, timeout)
    cpu = b.cpu() - cpu0
    if w.kind == "consume":
        m = last(SUMMARY_C, out)
        if not m or int(m.group(1)) < w.count:
            return {"error": "consume failed: " + out[-300:]}
        return {"msgs": int(m.group(4)), "mbps": float(m.group(5)), "cpu": cpu,
                "client_cpu": CLIENT_CPU[0], "mb": int(m.group(2)) / 1e6}
    m = last(SUMMARY_P, out)
    if not m:
        return {"error": "produce failed: " + out[-300:]}
    produced, delivered = int(m.group(1)), int(m.group(3))
    if delivered < produced:
        return {"error": f"only {delivered}/{produced} delivered"}
    r = {"msgs": int(m.group(5)), "mbps": float(m.group(6)), "cpu": cpu,
         "client_cpu": CLIENT_CPU[0], "mb": int(m.group(2)) / 1e6}
    r.update(percentiles(lat_file))
    return r


def fill(w, b, tools, timeout):
    """Write the records a catch-up row reads back (rdkafka_performance, acks=1, not timed),
    once per broker round and topic: the rows of both consumers read the same records.
    None, or {'error': text}."""
    key = (w.topic, w.size, w.count)
    if key in b.filled:
        return None
    out = run_tool([tools.perf, "-b", b.bootstrap, "-t", w.topic, "-P", "-s", str(w.size),
                    "-c", str(w.count), "-a", "1", "-p", "0"] + (b.tls.rdkafka if b.tls else []),
                   timeout)
    if not last(SUMMARY_P, out):
        return {"error": "fill failed: " + out[-300:]}
    b.filled.add(key)
    return None


def run_fjord_perf(w, b, tools, rate, timeout):
    count = w.count
    args = [tools.fjord, "--bootstrap-server", b.bootstrap, "perf", "produce", "--topic", w.topic,
            "--record-size", str(w.size), "--acks", "all" if w.acks == -1 else str(w.acks)]
    if w.kind == "latency":
        count = max(1000, int(rate * LATENCY_SECONDS))
        args += ["--throughput", str(int(rate))]
    args += ["--num-records", str(count)] + w.extra
    cpu0 = b.cpu()
    out = run_tool(args, timeout)
    cpu = b.cpu() - cpu0
    m = last(SUMMARY_PERF, out)
    if not m or int(m.group(1)) < count:
        return {"error": "fjord perf failed: " + out[-300:]}
    msgs = float(m.group(2))
    r = {"msgs": int(msgs), "mbps": msgs * w.size / 1e6, "cpu": cpu,
         "client_cpu": CLIENT_CPU[0], "mb": count * w.size / 1e6}
    if w.kind == "latency":
        r.update({"p50": float(m.group(3)), "p99": float(m.group(4)),
                  "p99.9": float(m.group(5))})
    return r


SUMMARY_KPERF = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\).* "
                           r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def run_kafka_perf(w, b, tools, timeout):
    """kafka-producer-perf-test (the Java producer; idempotent by default, as users run it)."""
    tool = os.path.join(kafka_home(), "bin", "kafka-producer-perf-test.sh")
    args = [tool, "--topic", w.topic, "--num-records", str(w.count), "--record-size",
            str(w.size), "--throughput", "-1", "--producer-props",
            f"bootstrap.servers={b.bootstrap}", f"acks={'all' if w.acks == -1 else w.acks}"]
    if b.tls:
        args += ["--producer.config", b.tls.java_props]
    cpu0 = b.cpu()
    out = run_tool(args, timeout)
    cpu = b.cpu() - cpu0
    m = last(SUMMARY_KPERF, out)
    if not m or int(m.group(1)) < w.count:
        return {"error": "kafka-producer-perf-test failed: " + out[-300:]}
    msgs = float(m.group(2))
    return {"msgs": int(msgs), "mbps": msgs * w.size / 1e6, "cpu": cpu,
            "client_cpu": CLIENT_CPU[0], "mb": w.count * w.size / 1e6}


# kafka-consumer-perf-test's last line (without --show-detailed-stats): start.time, end.time,
# data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms,
# fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec.
SUMMARY_KCPERF = re.compile(r"^[^,\n]+, [^,\n]+, ([\d.]+), ([\d.]+), (\d+), ([\d.]+), (-?\d+), "
                            r"(-?\d+), ([\d.]+), ([\d.]+)\s*$", re.M)


def run_kafka_consumer_perf(w, b, tools, timeout):
    """kafka-consumer-perf-test (the Java consumer, ConsumerPerformance from the same Kafka
    jars) reading the whole topic from the beginning in a new group. msgs/s is its
    fetch.nMsg.sec: records over the time after the group join (the join itself, e.g.
    Kafka's group.initial.rebalance.delay.ms, is reported apart as 'join_ms')."""
    err = fill(w, b, tools, timeout)
    if err:
        return err
    tool = os.path.join(kafka_home(), "bin", "kafka-consumer-perf-test.sh")
    group = f"fjord-bench-{b.kind}-{w.topic}-{time.time_ns()}"
    args = [tool, "--bootstrap-server", b.bootstrap, "--topic", w.topic, "--num-records",
            str(w.count), "--group", group, "--timeout", "30000"]
    if b.tls:
        args += ["--consumer.config", b.tls.java_props]
    cpu0 = b.cpu()
    out = run_tool(args, timeout)
    cpu = b.cpu() - cpu0
    m = last(SUMMARY_KCPERF, out)
    if not m or int(m.group(3)) < w.count:
        return {"error": "kafka-consumer-perf-test failed: " + out[-300:]}
    msgs = float(m.group(8))
    return {"msgs": int(msgs), "mbps": msgs * w.size / 1e6, "cpu": cpu,
            "client_cpu": CLIENT_CPU[0], "mb": w.count * w.size / 1e6,
            "join_ms": int(m.group(5))}


JAVA_CLIENTS_JAR = os.path.join(ROOT, "tests", "clients", "java", "target",
                                "fjord-java-clients.jar")


def run_java_txn_perf(w, b, timeout):
    """tests/clients/java's txn-perf scenario (built by scripts/setup-java-clients.sh): one
    Java producer, transactions of w.txn records (0: none), timed after a fifth as many records
    sent the same way (a fresh JVM broker's JIT otherwise handicaps the first row)."""
    import json
    args = ["java", "-Xmx512m", "-jar", JAVA_CLIENTS_JAR, "txn-perf", "--bootstrap", b.bootstrap,
            "--topic", w.topic, "--records", str(w.count), "--record-size", str(w.size),
            "--txn-records", str(w.txn), "--warmup-records", str(w.count // 5),
            "--timeout-sec", str(int(timeout))]
    cpu0 = b.cpu()
    out = run_tool(args, timeout + 30)
    cpu = b.cpu() - cpu0
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
    v = json.loads(line) if line else {}
    if not v.get("ok"):
        return {"error": "txn-perf failed: " + (str(v.get("failures")) if v else out[-300:])}
    msgs = float(v["records_per_sec"])
    return {"msgs": int(msgs), "mbps": msgs * w.size / 1e6, "cpu": cpu,
            "client_cpu": CLIENT_CPU[0], "mb": w.count * w.size / 1e6}


def txn_lines(results, kinds):
    """Transactional produce ÷ non-transactional produce (median msgs/s), per broker."""
    out = []
    for kind in kinds:
        base = [r["msgs"] for r in results.get((TXN_ROWS[0], kind), []) if "msgs" in r]
        if not base:
            continue
        cells = []
        for row, label in [(TXN_ROWS[1], "of 100"), (TXN_ROWS[2], "of 10,000")]:
            got = [r["msgs"] for r in results.get((row, kind), []) if "msgs" in r]
            if got:
                cells.append(f"transactions {label}: {med(got) / med(base):.3f}")
        if cells:
            out.append(f"  {kind}: " + ", ".join(cells)
                       + f" (no transactions: {med(base):.0f} msgs/s)")
    if out:
        out.insert(0, "Transactional ÷ non-transactional produce (Java producer, 100 B, "
                      "acks=all, median msgs/s):")
    return out


def tls_lines(results, ws, kinds):
    """Issue 16: each row's MB/s over PLAINTEXT and over TLS per system, TLS ÷ plaintext, the
    broker's and the client's CPU per MB on each, and Fjord ÷ Kafka over TLS."""
    def col(name, kind, key):
        return [r[key] for r in results.get((name, kind), []) if key in r]

    def per_mb(name, kind, key):
        return [r[key] * 1e6 / r["mb"] for r in results.get((name, kind), [])
                if "msgs" in r and r.get("mb")]

    out = ["TLS ÷ plaintext (same rows, same rounds; one-way TLS; median (min–max) MB/s; CPU "
           "µs per MB, plaintext → TLS):",
           "| workload | broker | PLAINTEXT MB/s | SSL MB/s | SSL ÷ PLAINTEXT | "
           "broker CPU µs/MB | client CPU µs/MB | Fjord ÷ Kafka over SSL |",
           "|---|---|---|---|---|---|---|---|"]
    systems = [k for k in kinds if not k.endswith(TLS_SUFFIX)]
    for w in ws:
        for system in systems:
            plain, ssl = col(w.name, system, "mbps"), col(w.name, system + TLS_SUFFIX, "mbps")
            if not plain and not ssl:
                continue
            ratio = f"{med(ssl) / med(plain):.2f}" if plain and ssl else "-"
            cpu = lambda key: (f"{fmt_range(per_mb(w.name, system, key))} → "  # noqa: E731
                               f"{fmt_range(per_mb(w.name, system + TLS_SUFFIX, key))}")
            vs = ""
            kafka_ssl = col(w.name, "kafka" + TLS_SUFFIX, "mbps")
            if system == "fjord" and ssl and kafka_ssl:
                vs = f"{med(ssl) / med(kafka_ssl):.2f}"
            out.append(f"| {w.name} | {system} | {fmt_range(plain, '{:.1f}')} | "
                       f"{fmt_range(ssl, '{:.1f}')} | {ratio} | {cpu('cpu')} | "
                       f"{cpu('client_cpu')} | {vs} |")
    return out


# The rows --tls runs without --only: the plain single-partition produce rows (100 B and 1 KB,
# acks=1) and the 1 KB catch-up, with librdkafka and with Kafka's Java consumer.
TLS_ROWS = ["produce 100B acks=1 1p", "produce 1KB acks=1 1p", "consume catch-up 1KB records",
            "consume catch-up 1KB records (kafka-consumer-perf-test)"]

LATENCY_SECONDS = 10

# The rows issue 14's targets are read from (--targets runs only these, plus the RF 3 part).
TARGET_ROWS = ["produce 1KB acks=1 1p", "produce 1KB acks=1 1p (fjord perf)",
               "consume catch-up 1KB records",
               "consume catch-up 1KB records (kafka-consumer-perf-test)",
               "produce 100B acks=1 1p", "produce 100B acks=1 1p (fjord perf)",
               "latency 100B acks=1 @50%", "latency 100B acks=1 @50% (fjord perf)"]


def run_rf3(args, work):
    """Three-node produce runs (bench/replication.py --only produce): RF 3 acks=all, RF 3
    acks=1 and RF 1 acks=1 at full speed and at 50 % of Fjord's full speed of the same
    configuration, with Kafka unless --no-kafka. Returns its JSON results (or None), and
    keeps them in WORK/rf3.json."""
    argv = [sys.executable, os.path.join(ROOT, "bench", "replication.py"), "--only", "produce",
            "--json", "--rounds", str(args.rounds), "--rate-fraction", "0.5",
            "--records", str(max(50_000, int(args.rf3_records))),
            "--record-size", str(args.rf3_record_size),
            "--no-rdkafka", "--delete-topics", "--rate-seconds", "3", "--fjord", args.fjord,
            "--work", work]
    if not args.no_kafka:
        argv += ["--kafka", "--warmup-records", "200000"]
    log("RF 3: " + " ".join(argv[1:]))
    p = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    with open(os.path.join(work, "rf3.json"), "w") as f:
        f.write(p.stdout)
    if p.returncode != 0:
        log(f"RF 3 part failed (exit {p.returncode})")
        return None
    import json
    return json.loads(p.stdout)


def target_lines(results, lim, rf3):
    """Issue 14's targets as ratios of this run's medians, each with its bound and whether it
    is met ('-' where this run lacks a measurement)."""
    def get(name, kind, key):
        xs = [r[key] for r in results.get((name, kind), []) if key in r]
        return med(xs) if xs else None

    out = []

    def add(what, value, bound, better):
        if value is None:
            out.append(f"| {what} | - | {better} {bound:g} | not measured |")
            return
        ok = value >= bound if better == "≥" else value <= bound
        out.append(f"| {what} | {value:.2f} | {better} {bound:g} | {'met' if ok else 'NOT met'} |")

    def ratio(x, y):
        return x / y if x is not None and y else None

    for tool in ("", " (fjord perf)"):
        row = "produce 1KB acks=1 1p" + tool
        add(f"{row}: Fjord MB/s ÷ TCP→append", ratio(get(row, "fjord", "mbps"),
                                                     lim.get("tcp+append")), 0.8, "≥")
        add(f"{row}: Fjord ÷ Kafka", ratio(get(row, "fjord", "msgs"), get(row, "kafka", "msgs")),
            1.5, "≥")
    for tool in ("", " (kafka-consumer-perf-test)"):
        row = "consume catch-up 1KB records" + tool
        add(f"{row}: Fjord MB/s ÷ loopback TCP", ratio(get(row, "fjord", "mbps"), lim.get("tcp")),
            0.8, "≥")
        add(f"{row}: Fjord ÷ Kafka", ratio(get(row, "fjord", "msgs"), get(row, "kafka", "msgs")),
            1.5, "≥")
    for row, unit in (("latency 100B acks=1 @50% (fjord perf)", "per request"),
                      ("latency 100B acks=1 @50%", "per message, linger.ms=0")):
        add(f"{row}: Fjord p99 ms ({unit})", get(row, "fjord", "p99"), 2, "≤")
        add(f"{row}: Fjord p99 ÷ Kafka p99", ratio(get(row, "fjord", "p99"),
                                                   get(row, "kafka", "p99")), 0.5, "≤")
    runs = (rf3 or {}).get("produce", [])

    def rf(config, system, key, q):
        xs = [r[key][q] for r in runs if r["config"] == config and r["system"] == system
              and q in r.get(key, {})]
        return med(xs) if xs else None

    add("RF 3 acks=all at 50 % load (fjord perf): Fjord p99 ms",
        rf("RF 3 acks=all", "fjord", "rate", "p99"), 5, "≤")
    add("RF 3 acks=all at 50 % load: Fjord p99 ÷ Kafka p99",
        ratio(rf("RF 3 acks=all", "fjord", "rate", "p99"),
              rf("RF 3 acks=all", "kafka", "rate", "p99")), 0.5, "≤")
    add("RF 3 acks=all ÷ RF 3 acks=1 records/s (fjord perf full speed)",
        ratio(rf("RF 3 acks=all", "fjord", "max", "rps"), rf("RF 3 acks=1", "fjord", "max", "rps")),
        0.7, "≥")
    p999 = rf("RF 3 acks=all", "fjord", "max", "p999")
    if p999 is not None:
        out.append(f"| RF 3 acks=all full speed: Fjord p99.9 ms (to explain) | {p999:.2f} | "
                   f"bounded | RF 3 acks=1: {rf('RF 3 acks=1', 'fjord', 'max', 'p999') or 0:.2f}"
                   f" ms |")
    for tool in ("", " (fjord perf)"):
        row = "produce 100B acks=1 1p" + tool
        add(f"{row}: Fjord ÷ mock", ratio(get(row, "fjord", "msgs"), get(row, "mock", "msgs")),
            0.7, "≥")
    return ["| target (issue 14) | measured | bound | |", "|---|---|---|---|"] + out


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
    ap.add_argument("--scale", type=float, help="share of the full data (overrides --quick's)")
    ap.add_argument("--only", help="comma-separated workload name substrings")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-work"))
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--baseline", help="an earlier fjord binary, run beside the others "
                    "(what a change bought, in the same run)")
    ap.add_argument("--no-mock", action="store_true", help="skip the mock broker")
    ap.add_argument("--no-kafka", action="store_true", help="skip Apache Kafka")
    ap.add_argument("--rf3", action="store_true",
                    help="also the three-node produce runs (bench/replication.py) for the RF 3 "
                         "targets")
    ap.add_argument("--rf3-records", type=float, default=300_000,
                    help="records per full-speed RF 3 run")
    ap.add_argument("--rf3-record-size", type=int, default=1024)
    ap.add_argument("--raw-seconds", help="seconds of each raw TCP measurement (TCP→append "
                    "writes ~1 GB a second to the work dir's disk); default 3, 2 with --quick")
    ap.add_argument("--raw-append-mb", type=int, default=1024,
                    help="MB appended by the raw append measurement")
    ap.add_argument("--delete-topics", action="store_true",
                    help="delete each produce row's topic after it (when disk space is short)")
    ap.add_argument("--tls", action="store_true",
                    help="issue 16: Fjord and Kafka also serving their clients over TLS (one-way, "
                         "certificates made with openssl in the work dir), in the same rounds; "
                         "without --only, the TLS rows (produce, catch-up); prints TLS ÷ "
                         "plaintext per system. No mock (it has no TLS).")
    ap.add_argument("--raw-dir", help="keep every load generator's command and output here, "
                    "one file per round, broker and row")
    ap.add_argument("--targets", action="store_true",
                    help="only what issue 14's targets need: their rows (--only) and --rf3; "
                         "prints the targets table")
    args = ap.parse_args()
    if args.targets:
        args.rf3 = True
    global LATENCY_SECONDS
    scale = 1.0
    if args.quick:
        scale, LATENCY_SECONDS = 0.1, 4
        if args.rounds == 3:
            args.rounds = 2
    if args.scale:
        scale = args.scale
    work = args.work
    tools = Tools(work, args.fjord)
    mock_bin = os.path.join(work, "mock_broker")
    raw_bin = os.path.join(work, "rawlimits")
    ws = workloads(scale)
    if args.only:
        keys = args.only.split(",")
        ws = [w for w in ws if any(k in w.name for k in keys)]
    elif args.targets:
        ws = [w for w in ws if w.name in TARGET_ROWS]
    elif args.tls:
        ws = [w for w in ws if w.name in TLS_ROWS]
    topics = sorted({(w.topic, w.partitions) for w in ws})
    kinds = ["fjord"] + (["base"] if args.baseline else []) + \
        ([] if args.no_kafka else ["kafka"]) + ([] if args.no_mock else ["mock"])
    tls = None
    if args.tls:
        tls = Tls(work)
        kinds = [k for k in kinds if k != "mock"]
        kinds = [k for base in kinds for k in (base, base + TLS_SUFFIX)]
    if args.raw_dir:
        os.makedirs(args.raw_dir, exist_ok=True)

    # Raw limits, measured once before and once after the broker rounds.
    raw = {k: [] for k in ["tcp", "append", "tcp+append", "tcp rx cpu", "tcp tx cpu",
                           "tcp+append rx cpu"]}
    rawdir = tempfile.mkdtemp(prefix="raw-", dir=work)

    def measure_raw():
        secs = args.raw_seconds or ("2" if args.quick else "3")
        for mode, argv in [("tcp", ["tcp", secs, "65536"]),
                           ("append", ["append", rawdir, str(args.raw_append_mb << 20), "65536"]),
                           ("tcp+append", ["tcp+append", rawdir, secs, "65536"])]:
            out = subprocess.run([raw_bin] + argv, capture_output=True, text=True, check=True).stdout
            raw[mode].append(float(re.search(r"MBps=([\d.]+)", out).group(1)))
            rx = re.search(r"rx_cpu_us_per_MB=([\d.]+)", out)
            if rx:
                raw[f"{mode} rx cpu"].append(float(rx.group(1)))
            tx = re.search(r"tx_cpu_us_per_MB=([\d.]+)", out)
            if tx and mode == "tcp":
                raw["tcp tx cpu"].append(float(tx.group(1)))

    log("raw limits")
    measure_raw()

    results = {}  # (workload, broker) -> list of dicts
    rates = {}
    t_start = time.time()
    for rnd in range(args.rounds):
        order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
        for kind in order:
            log(f"round {rnd + 1}/{args.rounds}: {kind}")
            b = Broker(kind, work, args.baseline if kind == "base" else args.fjord, mock_bin,
                       topics, tls)
            try:
                for w in ws:
                    skip = None
                    if w.kind == "consume" and kind == "mock":
                        # The mock answers each Fetch with one message set per partition and
                        # then waits: it is not a catch-up reference (raw loopback TCP is).
                        skip = "not a catch-up reference: one message set per Fetch, then waits"
                    if w.tool in ("kperf", "kcperf", "jtxn") and kind == "mock":
                        # The Java clients stall against librdkafka's mock broker: the producer
                        # never completes a run, and the consumer reads nothing ("Connection to
                        # node -1 is throttled for 1179648 ms": it takes a throttle time from
                        # the mock's answers). Kafka is these load generators' reference.
                        skip = "the Java client stalls against the mock: it never completes"
                    if b.tls and w.tool in ("perf", "jtxn"):
                        skip = "no TLS in this load generator"
                    if skip:
                        if rnd == 0:
                            log(f"  {w.name}: mock: skipped ({skip})")
                        continue
                    rate = None
                    if w.kind == "latency":
                        if w.name not in rates:
                            # 50 % of Fjord's measured max with the same tool, 1 partition.
                            got = [r["msgs"] for r in results.get((w.rate_from, "fjord"), [])
                                   if "msgs" in r]
                            rates[w.name] = 0.5 * med(got) if got else 50_000
                        rate = rates[w.name]
                    if args.raw_dir:
                        slug = re.sub(r"[^A-Za-z0-9]+", "-", w.name).strip("-")
                        RAW_LOG["path"] = os.path.join(args.raw_dir,
                                                       f"round{rnd + 1}-{kind}-{slug}.txt")
                    r = run_workload(w, b, tools, rate, timeout=900)
                    RAW_LOG["path"] = None
                    if "error" in r:
                        log(f"  {w.name}: {kind}: ERROR {r['error']}")
                    else:
                        extra = f" p99={r['p99']:.2f}ms" if "p99" in r else ""
                        if "join_ms" in r:
                            extra += f" (group join {r['join_ms']} ms, not counted)"
                        log(f"  {w.name}: {kind}: {r['msgs']} msgs/s {r['mbps']:.1f} MB/s "
                            f"broker cpu {r['cpu']:.2f}s{extra}")
                    results.setdefault((w.name, kind), []).append(r)
                    if args.delete_topics and w.kind != "consume" and kind != "mock":
                        # Not timed; the next row waits for nothing but the command.
                        subprocess.run([args.fjord, "topic", "delete", w.topic, "--if-exists",
                                        "--bootstrap-server", b.bootstrap],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results.setdefault(("rss", kind), []).append({"rss": b.rss_mb()})
            finally:
                b.stop()
    measure_raw()
    shutil.rmtree(rawdir, ignore_errors=True)
    elapsed = time.time() - t_start
    rf3 = None
    if args.rf3:
        rf3 = run_rf3(args, work)

    # The table.
    lim = {k: med(v) for k, v in raw.items()}
    raw_cpu = {"tcp+append": lim["tcp+append rx cpu"], "tcp": lim["tcp tx cpu"]}
    print()
    print(f"Machine: {machine()}")
    print(f"Raw limits (median of {len(raw['tcp'])}): loopback TCP {lim['tcp']:.0f} MB/s, "
          f"append-to-file {lim['append']:.0f} MB/s, TCP→append {lim['tcp+append']:.0f} MB/s; "
          f"CPU per MB: TCP receive+append {lim['tcp+append rx cpu']:.0f} µs, "
          f"TCP send {lim['tcp tx cpu']:.0f} µs")
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} msgs/s (50 % of Fjord's max with the same tool)")
    print(f"{args.rounds} rounds, broker rounds took {elapsed:.0f} s; "
          "cells: median (min–max) over rounds\n")
    hdr = ["workload", "broker", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms",
           "broker CPU µs/MB", "client CPU µs/MB", "Fjord/Kafka", "Fjord/mock", "Fjord/raw",
           "raw/Fjord CPU"]
    if args.baseline:
        hdr.insert(11, "Fjord/base")
    rows = []
    for w in ws:
        for kind in kinds:
            if (w.name, kind) not in results:
                continue
            rs = [r for r in results[(w.name, kind)] if "msgs" in r]
            errs = len(results[(w.name, kind)]) - len(rs)
            msgs = [r["msgs"] for r in rs]
            mbps = [r["mbps"] for r in rs]
            cpu_per_mb = [r["cpu"] * 1e6 / r["mb"] for r in rs if r.get("mb")]
            client_per_mb = [r["client_cpu"] * 1e6 / r["mb"] for r in rs if r.get("mb")]
            lat = {q: [r[q] for r in rs if q in r] for q in ["p50", "p99", "p99.9"]}
            ratio = {"kafka": "", "mock": "", "base": "", "raw": "", "cpu": ""}
            if kind == "fjord" and w.kind != "latency":  # latency rows run at the same rate
                for other in ("kafka", "mock", "base"):
                    theirs = [r["msgs"] for r in results.get((w.name, other), []) if "msgs" in r]
                    if msgs and theirs:
                        ratio[other] = f"{med(msgs) / med(theirs):.2f}"
                if msgs and w.raw:
                    ratio["raw"] = f"{med(mbps) / lim[w.raw]:.2f}"
                if cpu_per_mb and w.raw:
                    ratio["cpu"] = f"{raw_cpu[w.raw] / med(cpu_per_mb):.2f}"
            row = [w.name, kind + (f" ({errs} failed)" if errs else ""), fmt_range(msgs),
                   fmt_range(mbps, "{:.1f}")] + \
                  [fmt_range(lat[q], "{:.2f}") for q in ["p50", "p99", "p99.9"]] + \
                  [fmt_range(cpu_per_mb), fmt_range(client_per_mb), ratio["kafka"],
                   ratio["mock"]] + \
                  ([ratio["base"]] if args.baseline else []) + [ratio["raw"], ratio["cpu"]]
            rows.append(row)
    for kind in kinds:
        rss = [r["rss"] for r in results.get(("rss", kind), [])]
        rows.append(["RSS after the round (MB)", kind, "", fmt_range(rss)] + [""] * (len(hdr) - 4))
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |"  # noqa
    print(line(hdr))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print(line(r))
    joins = {kind: [r["join_ms"] for (name, k), rs in results.items() if k == kind
                    for r in rs if "join_ms" in r] for kind in kinds}
    if any(joins.values()):
        print("\nkafka-consumer-perf-test rows: records over the time after the group join "
              "(its fetch.nMsg.sec); the join took (median ms) "
              + ", ".join(f"{k} {med(v):.0f}" for k, v in joins.items() if v) + ".")
    print("\nFjord/raw: produce MB/s ÷ TCP→append; consume MB/s ÷ loopback TCP. "
          "raw/Fjord CPU: the raw path's CPU per MB (receive+append for produce, send for "
          "consume) ÷ the broker's; 1.0 = as cheap as moving the bytes and nothing else.")
    if args.tls:
        print()
        print("\n".join(tls_lines(results, ws, kinds)))
    txn = txn_lines(results, kinds)
    if txn:
        print()
        print("\n".join(txn))
    if args.rf3 and rf3:
        import replication
        print(f"\nRF 3 (three nodes, bench/replication.py, raw JSON in {work}/rf3.json):")
        rep_args = argparse.Namespace(rate=0, rate_fraction=0.5, rdkafka_linger=[],
                                      record_size=args.rf3_record_size)
        print(replication.table(rep_args, rf3))
    if args.targets or args.rf3:
        print()
        print("\n".join(target_lines(results, lim, rf3)))


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
