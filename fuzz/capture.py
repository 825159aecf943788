#!/usr/bin/env python3
"""Seed the fuzz corpora from real clients talking to a real Fjord broker.

Starts `fjord server` on a free port, puts a TCP proxy in front of it (the broker advertises the
proxy, so every connection goes through it), runs kcat and confluent-kafka against the proxy, and
writes:

- fuzz/corpus/request_decode/: every distinct request frame the clients sent (mode byte 0, then
  the frame with its size prefix, as the target reads a connection), a few per API and version;
- after a clean shutdown, from the broker's log directories:
  - fuzz/corpus/batch_decode/: the record batches as the producers sent them (the broker stores
    produced batches unchanged except base offset and leader epoch, outside the CRC), for
    uncompressed, gzip, snappy, lz4 and zstd topics (flag byte 1: the target fixes CRCs);
  - fuzz/corpus/segment_recovery/: segment files (flags 0, or with index files);
  - fuzz/corpus/group_replay/: the __consumer_offsets records, in the target's record format.

Usage (from the repo root, after scripts/setup-test-deps.sh and cargo build -p fjord):

    .venv/bin/pip install lz4 python-snappy zstandard   # kafka-python's lz4, snappy, zstd codecs
    .venv/bin/python fuzz/capture.py [--fjord target/debug/fjord]
"""

import argparse
import collections
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "fuzz", "corpus")
PER_API_VERSION = 4  # distinct frames kept per (api key, version)
MAX_SEED = 64 << 10  # bytes per corpus file


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Forwards connections to the broker; records each request frame clients send."""

    def __init__(self, listen_port, target_port):
        self.target_port = target_port
        self.frames = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(64)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self.upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client), daemon=True).start()

    def upstream(self, client, server):
        buf = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while len(buf) >= 4:
                (size,) = struct.unpack(">i", buf[:4])
                if size < 0 or len(buf) < 4 + size:
                    break
                with self.lock:
                    self.frames.append(buf[: 4 + size])
                buf = buf[4 + size :]
            try:
                server.sendall(data)
            except OSError:
                break
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def pipe(src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def run(cmd, input_bytes=None, timeout=30):
    try:
        r = subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=timeout)
        if r.returncode != 0:
            print(f"  ({' '.join(cmd[:4])}... exited {r.returncode}: {r.stderr[-200:]!r})")
    except subprocess.TimeoutExpired:
        print(f"  ({' '.join(cmd[:4])}... timed out, fine for consumers)")


def kcat_clients(bootstrap):
    lines = b"".join(b"key-%d:value-%d {\"n\": %d}\n" % (i % 7, i, i) for i in range(200))
    kcat = ["kcat", "-b", bootstrap]
    run(kcat + ["-L"])
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = f"kcat-{codec}"
        run(kcat + ["-P", "-t", topic, "-K:", "-z", codec, "-H", "source=kcat", "-H", "codec=" + codec], lines)
        run(kcat + ["-C", "-t", topic, "-o", "beginning", "-e", "-q"])
    # A balanced consumer: JoinGroup, SyncGroup, Heartbeat, OffsetCommit, LeaveGroup.
    run(kcat + ["-G", "kcat-group", "kcat-gzip", "-o", "beginning", "-e", "-q",
                "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=200"], timeout=15)


def kafka_python_clients(bootstrap):
    """kafka-python: its own encoder for every codec whose module is installed (gzip always;
    snappy needs python-snappy, lz4 needs lz4, zstd needs zstandard). librdkafka before 2.10 does not
    compress with gzip, snappy or lz4 against a Kafka 4 broker (it takes the missing old
    Produce versions for missing codec support), so these are the third-party compressed batches."""
    from kafka import KafkaConsumer, KafkaProducer

    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        try:
            p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=5)
        except Exception as e:  # noqa: BLE001 - codec module missing
            print(f"  kafka-python {codec}: {e}")
            continue
        for i in range(100):
            p.send(f"kp-{codec}", key=b"k%d" % (i % 5), value=b"kafka-python %d %s" % (i, codec.encode()),
                   headers=[("client", b"kafka-python")])
        p.flush(10)
        p.close(5)
    c = KafkaConsumer("kp-gzip", bootstrap_servers=bootstrap, group_id="kp-group",
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    for _ in c:
        pass
    c.commit()
    c.close()


def fjord_cli_clients(fjord, bootstrap):
    """Fjord's own client (kafka-protocol's encoder), one topic per codec."""
    lines = b"".join(b"k%d:fjord cli line %d\n" % (i % 3, i) for i in range(100))
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        run([fjord, "topic", "create", f"cli-{codec}", "--bootstrap-server", bootstrap])
        run([fjord, "produce", f"cli-{codec}", "--bootstrap-server", bootstrap, "--key-separator", ":",
             "--header", "client=fjord", "--compression", codec], lines)


def confluent_clients(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic("ck-compact", 3, 1, config={"cleanup.policy": "compact"}),
              NewTopic("ck-plain", 2, 1, config={"retention.ms": "3600000"})]
    for f in admin.create_topics(topics).values():
        try:
            f.result(10)
        except Exception as e:  # noqa: BLE001 - report and go on, a seed is a seed
            print("  create_topics:", e)

    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "compression.type": codec, "linger.ms": 5})
        for i in range(100):
            p.produce("ck-compact", key=b"k%d" % (i % 10), value=b"v%d" % i,
                      headers=[("h", b"x")], partition=i % 3)
            p.produce("ck-plain", value=b"plain %d %s" % (i, codec.encode()))
        p.flush(10)

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ck-classic",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["ck-compact", "ck-plain"])
    deadline = time.time() + 10
    got = 0
    while time.time() < deadline and got < 300:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
            if got % 50 == 0:
                c.commit(m, asynchronous=False)
    parts = [TopicPartition("ck-plain", 0, int(time.time() * 1000) - 60_000)]
    try:
        c.offsets_for_times(parts, 5)
        c.committed([TopicPartition("ck-plain", 0)], 5)
        c.get_watermark_offsets(TopicPartition("ck-plain", 0), 5)
    except Exception as e:  # noqa: BLE001
        print("  consumer queries:", e)
    c.close()

    # KIP-848 consumer group (ConsumerGroupHeartbeat), where the client supports it.
    try:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ck-consumer",
                      "group.protocol": "consumer", "auto.offset.reset": "earliest"})
        c.subscribe(["ck-plain"])
        deadline = time.time() + 8
        while time.time() < deadline:
            c.poll(0.5)
        c.close()
    except Exception as e:  # noqa: BLE001
        print("  consumer protocol:", e)

    try:
        admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "ck-compact")])[
            ConfigResource(ConfigResource.Type.TOPIC, "ck-compact")].result(10)
        entry = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ConfigResource.Type.TOPIC, "ck-plain", incremental_configs=[entry])
        list(admin.incremental_alter_configs([resource]).values())[0].result(10)
        list(admin.create_partitions([NewPartitions("ck-plain", 4)]).values())[0].result(10)
        admin.list_consumer_groups().result(10)
        list(admin.describe_consumer_groups(["ck-classic"]).values())[0].result(10)
        admin.list_topics(timeout=10)
        admin.describe_cluster().result(10)
        list(admin.delete_records([TopicPartition("ck-plain", 0, 5)]).values())[0].result(10)
        list(admin.delete_consumer_groups(["ck-classic"]).values())[0].result(10)
        list(admin.delete_topics(["ck-plain"]).values())[0].result(10)
    except Exception as e:  # noqa: BLE001
        print("  admin:", e)


def write_seed(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(directory, f"{name}-{digest}"), "wb") as f:
        f.write(data)


def save_frames(frames):
    kept = collections.defaultdict(set)
    for frame in frames:
        if len(frame) < 12 or len(frame) > MAX_SEED:
            continue
        key, version = struct.unpack(">hh", frame[4:8])
        # The correlation id differs in every frame; zero it so duplicates collapse.
        body = frame[:8] + b"\0\0\0\0" + frame[12:]
        if len(kept[(key, version)]) >= PER_API_VERSION:
            continue
        kept[(key, version)].add(body)
    n = 0
    for (key, version), bodies in sorted(kept.items()):
        for body in bodies:
            write_seed(os.path.join(CORPUS, "request_decode"), f"api{key}-v{version}", b"\0" + body)
            n += 1
    print(f"request_decode: {n} frames over {len(kept)} api/version pairs")


def batches(data):
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">i", data[pos + 8 : pos + 12])
        end = pos + 12 + length
        if length < 0 or end > len(data):
            return
        yield data[pos:end]
        pos = end


def varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def records(batch):
    """Key and value of every record of an uncompressed v2 batch."""
    (attributes,) = struct.unpack(">h", batch[21:23])
    if attributes & 0x7 or attributes & 0x20:
        return
    (count,) = struct.unpack(">i", batch[57:61])
    pos = 61
    for _ in range(count):
        length, pos = varint(batch, pos)
        end = pos + length
        pos += 1  # attributes
        _, pos = varint(batch, pos)  # timestamp delta
        _, pos = varint(batch, pos)  # offset delta
        klen, pos = varint(batch, pos)
        key = batch[pos : pos + max(klen, 0)]
        pos += max(klen, 0)
        vlen, pos = varint(batch, pos)
        value = None if vlen < 0 else batch[pos : pos + vlen]
        yield key, value
        pos = end


def save_logs(log_dir):
    counts = collections.Counter()
    for part in sorted(os.listdir(log_dir)):
        pdir = os.path.join(log_dir, part)
        if not os.path.isdir(pdir) or part.startswith("__cluster_metadata"):
            continue
        for name in sorted(os.listdir(pdir)):
            if not name.endswith(".log"):
                continue
            with open(os.path.join(pdir, name), "rb") as f:
                data = f.read()
            if not data:
                continue
            if part.startswith("__consumer_offsets"):
                seq = b""
                for b in batches(data):
                    for key, value in records(b):
                        v = value or b""
                        seq += bytes([0 if value is None else 1])
                        seq += struct.pack(">H", len(key)) + key + struct.pack(">H", len(v)) + v
                if seq:
                    write_seed(os.path.join(CORPUS, "group_replay"), part, seq[:MAX_SEED])
                    counts["group_replay"] += 1
                continue
            seen_codecs = set()
            for b in batches(data):
                (attributes,) = struct.unpack(">h", b[21:23])
                codec = attributes & 0x7
                if codec in seen_codecs or len(b) > MAX_SEED:
                    continue
                seen_codecs.add(codec)
                write_seed(os.path.join(CORPUS, "batch_decode"), f"{part}-codec{codec}", b"\x01" + b)
                counts["batch_decode"] += 1
            if part.startswith(("kcat-", "ck-", "kp-", "cli-")):
                # Segment recovery: the first few batches, alone and with their index files.
                seg = b"".join(list(batches(data))[:4])[:MAX_SEED]
                write_seed(os.path.join(CORPUS, "segment_recovery"), part, b"\x00\x00" + seg)
                index_path = os.path.join(pdir, name[:-4] + ".index")
                tindex_path = os.path.join(pdir, name[:-4] + ".timeindex")
                if os.path.exists(index_path) and os.path.exists(tindex_path):
                    idx = open(index_path, "rb").read()[:4096]
                    tidx = open(tindex_path, "rb").read()[:4096]
                    seed = b"\x00\x03" + struct.pack(">H", len(idx)) + idx
                    seed += struct.pack(">H", len(tidx)) + tidx + seg
                    write_seed(os.path.join(CORPUS, "segment_recovery"), part + "-indexed", seed)
                counts["segment_recovery"] += 1
    print("from the logs:", dict(counts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.path.join(REPO, "target", "debug", "fjord"))
    args = ap.parse_args()

    broker_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="fjord-capture-")
    proxy = Proxy(proxy_port, broker_port)
    server = subprocess.Popen(
        [args.fjord, "server", "--listeners", f"PLAINTEXT://127.0.0.1:{broker_port}",
         "--advertised-listeners", f"PLAINTEXT://127.0.0.1:{proxy_port}",
         "--admin-listener", f"127.0.0.1:{admin_port}", "--log-dirs", data_dir,
         "--set", "group.initial.rebalance.delay.ms=0", "--set", "offsets.topic.num.partitions=3"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready = server.stdout.readline().decode()
        if "ready" not in ready:
            sys.exit(f"fjord did not start: {ready!r}")
        bootstrap = f"127.0.0.1:{proxy_port}"
        print("capturing through", bootstrap)
        kcat_clients(bootstrap)
        kafka_python_clients(bootstrap)
        fjord_cli_clients(args.fjord, bootstrap)
        confluent_clients(bootstrap)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    with proxy.lock:
        frames = list(proxy.frames)
    save_frames(frames)
    save_logs(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
