#!/usr/bin/env python3
"""TLS with Python clients (issue 16): over an SSL or SASL_SSL listener, produce --count records
and read them back with confluent-kafka (librdkafka), kafka-python or aiokafka, with PEM files
for the CA, and for mutual TLS the client's certificate and key; SASL credentials for SASL_SSL.

Modes besides the round trip:
  --expect-failure  the client must not get through (a TLS or authentication error);
  --expect-denied   the connection works but producing fails with TOPIC_AUTHORIZATION_FAILED;
  --client peer-cert  print the common name of the certificate the server presents.

Prints one JSON line; exits 1 on any other outcome.
"""
import argparse
import json
import socket
import ssl
import sys
import time


def fail(msg):
    print(f"tls_clients: {msg}", file=sys.stderr)
    sys.exit(1)


def confluent(a):
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

    conf = {
        "bootstrap.servers": a.bootstrap,
        "security.protocol": a.protocol,
        "ssl.ca.location": a.ca,
    }
    if a.cert:
        conf["ssl.certificate.location"] = a.cert
        conf["ssl.key.location"] = a.key
    if a.mechanism:
        conf.update({"sasl.mechanism": a.mechanism, "sasl.username": a.user,
                     "sasl.password": a.password})
    errors = []
    p = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": 20000})
    if a.expect_failure:
        bad = {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError._TRANSPORT,
               KafkaError._ALL_BROKERS_DOWN}
        acked = []
        p.produce(a.topic, value=b"x", on_delivery=lambda err, m: acked.append(err))
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            p.poll(0.2)
            seen = [e for e in errors if e.code() in bad]
            if seen:
                if any(e is None for e in acked):
                    fail(f"a record was delivered: {acked}")
                return {"error": seen[0].str()}
        fail(f"no TLS or authentication error within {a.timeout}s; errors: {[e.str() for e in errors]}")
    acked = []
    if a.expect_denied:
        p.produce(a.topic, value=b"x", on_delivery=lambda err, m: acked.append(err))
        p.flush(a.timeout)
        if len(acked) != 1 or acked[0] is None:
            fail(f"expected a denied produce, got {acked}")
        if acked[0].code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
            fail(f"expected TOPIC_AUTHORIZATION_FAILED, got {acked[0]}")
        return {"denied": acked[0].str()}
    for i in range(a.count):
        p.produce(a.topic, key=f"k{i}", value=f"v{i}" * a.repeat,
                  on_delivery=lambda err, m: acked.append((err, m)))
        p.poll(0)
    p.flush(a.timeout)
    bad = [str(e) for e, _ in acked if e is not None]
    if len(acked) != a.count or bad:
        fail(f"acked {len(acked)}/{a.count}, errors {bad[:3]}, client errors {[e.str() for e in errors]}")
    c = Consumer({**conf, "group.id": f"tls-{a.topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([a.topic])
    got = set()
    deadline = time.monotonic() + a.timeout
    while len(got) < a.count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        if m.value() != f"v{m.key().decode()[1:]}".encode() * a.repeat:
            fail(f"record {m.key()} has a wrong value")
        got.add(m.key().decode())
    c.close()
    return {"produced": len(acked), "consumed": len(got)}


def kafka_python(a):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    conf = {
        "bootstrap_servers": a.bootstrap,
        "security_protocol": a.protocol,
        "ssl_cafile": a.ca,
        "request_timeout_ms": 20000,
    }
    if a.cert:
        conf.update({"ssl_certfile": a.cert, "ssl_keyfile": a.key})
    if a.mechanism:
        conf.update({"sasl_mechanism": a.mechanism, "sasl_plain_username": a.user,
                     "sasl_plain_password": a.password})
    if a.expect_failure:
        try:
            p = KafkaProducer(**conf, max_block_ms=int(a.timeout * 1000))
            p.send(a.topic, b"x").get(timeout=a.timeout)
        except Exception as e:  # noqa: BLE001 - any failure to get through is the expectation
            return {"error": f"{type(e).__name__}: {e}"}
        fail("a record was delivered")
    p = KafkaProducer(**conf)
    futures = [p.send(a.topic, key=f"k{i}".encode(), value=f"v{i}".encode()) for i in range(a.count)]
    p.flush(a.timeout)
    metas = [f.get(timeout=a.timeout) for f in futures]
    p.close()
    c = KafkaConsumer(**conf, enable_auto_commit=False, consumer_timeout_ms=int(a.timeout * 1000))
    tps = [TopicPartition(a.topic, q) for q in {m.partition for m in metas}]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = set()
    for m in c:
        got.add(m.value.decode())
        if len(got) >= a.count:
            break
    c.close()
    return {"produced": len(metas), "consumed": len(got)}


def aiokafka_client(a):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.helpers import create_ssl_context

    ctx = create_ssl_context(cafile=a.ca, certfile=a.cert or None, keyfile=a.key or None)
    conf = {"bootstrap_servers": a.bootstrap, "security_protocol": a.protocol,
            "ssl_context": ctx}
    if a.mechanism:
        conf.update({"sasl_mechanism": a.mechanism, "sasl_plain_username": a.user,
                     "sasl_plain_password": a.password})

    async def run():
        p = AIOKafkaProducer(**conf)
        await p.start()
        try:
            metas = [await p.send_and_wait(a.topic, key=f"k{i}".encode(), value=f"v{i}".encode())
                     for i in range(a.count)]
        finally:
            await p.stop()
        c = AIOKafkaConsumer(**conf, enable_auto_commit=False)
        await c.start()
        got = set()
        try:
            tps = [TopicPartition(a.topic, q) for q in {m.partition for m in metas}]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            deadline = time.monotonic() + a.timeout
            while len(got) < a.count and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for records in batch.values():
                    got.update(r.value.decode() for r in records)
        finally:
            await c.stop()
        return {"produced": len(metas), "consumed": len(got)}

    return asyncio.run(run())


def peer_cert(a):
    host, port = a.bootstrap.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=a.ca)
    with socket.create_connection((host, int(port)), timeout=a.timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            cert = s.getpeercert()
    cn = [v for rdn in cert["subject"] for (k, v) in rdn if k == "commonName"]
    return {"cn": cn[0] if cn else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["confluent", "kafka-python", "aiokafka", "peer-cert"],
                    required=True)
    ap.add_argument("--protocol", default="SSL")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", default="")
    ap.add_argument("--key", default="")
    ap.add_argument("--mechanism", default="")
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--topic", default="tls")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="value = v<i> repeated (bigger records)")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--expect-failure", action="store_true")
    ap.add_argument("--expect-denied", action="store_true")
    a = ap.parse_args()
    run = {"confluent": confluent, "kafka-python": kafka_python, "aiokafka": aiokafka_client,
           "peer-cert": peer_cert}[a.client]
    out = run(a)
    out.update({"client": a.client})
    if "consumed" in out and out["consumed"] != a.count:
        fail(f"consumed {out['consumed']} of {a.count}: {out}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
