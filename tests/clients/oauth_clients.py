#!/usr/bin/env python3
"""SASL/OAUTHBEARER with confluent-kafka (librdkafka): the token comes from --token (made and
signed by the Rust test) through oauth_cb, as an application's identity provider would give it.

Modes (one JSON line on stdout; exit 1 on any other outcome):
  --create-topic T [--grant PRINCIPAL]  create T (and allow PRINCIPAL everything on T and on
                                        consumer group oauth-T) -> {"created": T}
  (default)                             produce --count records to --topic and read them back
                                        -> {"produced": n, "consumed": n}
  --expect-auth-failure                 -> {"auth_error": "..."}
  --expect-denied                       produce is refused with TOPIC_AUTHORIZATION_FAILED
                                        -> {"denied": "..."}
"""
import argparse
import json
import sys
import time


def fail(msg):
    print(f"oauth_clients: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--topic", default="oauth")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--create-topic")
    ap.add_argument("--grant")
    ap.add_argument("--expect-auth-failure", action="store_true")
    ap.add_argument("--expect-denied", action="store_true")
    a = ap.parse_args()

    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       AdminClient, NewTopic, ResourcePatternType,
                                       ResourceType)

    def oauth_cb(_config):
        # librdkafka only needs a lifetime to schedule its refresh; the broker reads the
        # token's own exp (a test may hand over an expired token on purpose).
        return a.token, time.time() + 3600, "test-principal"

    errors = []
    conf = {
        "bootstrap.servers": a.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": oauth_cb,
        "error_cb": errors.append,
    }

    if a.create_topic:
        admin = AdminClient(conf)
        admin.poll(1)
        fs = admin.create_topics([NewTopic(a.create_topic, num_partitions=2, replication_factor=1)])
        for f in fs.values():
            f.result(a.timeout)
        if a.grant:
            acls = [
                AclBinding(ResourceType.TOPIC, a.create_topic, ResourcePatternType.LITERAL,
                           a.grant, "*", AclOperation.ALL, AclPermissionType.ALLOW),
                AclBinding(ResourceType.GROUP, f"oauth-{a.create_topic}",
                           ResourcePatternType.LITERAL, a.grant, "*", AclOperation.ALL,
                           AclPermissionType.ALLOW),
            ]
            for f in admin.create_acls(acls).values():
                f.result(a.timeout)
        print(json.dumps({"created": a.create_topic}))
        return

    p = Producer({**conf, "message.timeout.ms": int(a.timeout * 1000)})
    if a.expect_auth_failure:
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            p.poll(0.2)
            auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
            if auth:
                print(json.dumps({"auth_error": auth[0].str()}))
                return
        fail(f"no authentication error within {a.timeout}s; errors: {[e.str() for e in errors]}")

    acked = []
    for i in range(a.count):
        p.produce(a.topic, key=f"k{i}", value=f"v{i}",
                  on_delivery=lambda err, m: acked.append((err, m)))
        p.poll(0)
    p.flush(a.timeout)
    bad = [e for e, _ in acked if e is not None]
    if a.expect_denied:
        denied = [e for e in bad if e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED]
        if len(acked) == a.count and len(denied) == a.count:
            print(json.dumps({"denied": denied[0].str()}))
            return
        fail(f"expected every record denied; acked {len(acked)}, errors {[str(e) for e in bad[:3]]}")
    if len(acked) != a.count or bad:
        fail(f"acked {len(acked)}/{a.count}, errors {[str(e) for e in bad[:3]]}, "
             f"client errors {[e.str() for e in errors]}")
    c = Consumer({**conf, "group.id": f"oauth-{a.topic}", "auto.offset.reset": "earliest",
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
        got.add(m.value().decode())
    c.close()
    if len(got) != a.count:
        fail(f"consumed {len(got)} of {a.count}")
    print(json.dumps({"produced": len(acked), "consumed": len(got)}))


if __name__ == "__main__":
    main()
