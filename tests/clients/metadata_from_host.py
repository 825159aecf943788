#!/usr/bin/env python3
"""A Metadata v1 request for one topic from a chosen local address (the client host an ACL
names); prints the topic's error code. Raw protocol: no client library binds its source
address.

  metadata_from_host.py --bootstrap HOST:PORT --source 127.0.0.2 TOPIC
"""
import argparse
import socket
import struct


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("topic")
    a = ap.parse_args()
    host, port = a.bootstrap.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(10)
    s.bind((a.source, 0))
    s.connect((host, int(port)))
    body = struct.pack(">hhi", 3, 1, 7) + string("acl-host-probe")
    body += struct.pack(">i", 1) + string(a.topic)
    s.sendall(struct.pack(">i", len(body)) + body)
    n = struct.unpack(">i", recv(s, 4))[0]
    r = recv(s, n)
    pos = 4  # correlation id
    (brokers,) = struct.unpack_from(">i", r, pos)
    pos += 4
    for _ in range(brokers):
        pos += 4  # node id
        (hl,) = struct.unpack_from(">h", r, pos)
        pos += 2 + hl + 4  # host, port
        (rl,) = struct.unpack_from(">h", r, pos)
        pos += 2 + max(rl, 0)  # rack (nullable)
    pos += 4  # controller id
    (topics,) = struct.unpack_from(">i", r, pos)
    pos += 4
    assert topics == 1, topics
    (error,) = struct.unpack_from(">h", r, pos)
    print(error)


def recv(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out


if __name__ == "__main__":
    main()
