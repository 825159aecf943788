#!/usr/bin/env python3
"""Transactions with confluent-kafka (librdkafka), driven by crates/fjord/tests/transactions_clients.rs.

  ck_txn.py --bootstrap B basic [--replication-factor N]
      commit and abort over 3 partitions: a read_committed consumer sees exactly the committed
      records in order, a read_uncommitted one sees every record; then a consume-transform-
      produce loop with send_offsets_to_transaction whose first transaction is aborted (the
      group's committed offsets stay unchanged) and whose output holds every input exactly once.

  ck_txn.py --bootstrap B loop --progress-file F --stop-file S [--replication-factor N]
      an idempotent producer feeds the input while a consume-transform-produce loop copies it
      to the output in transactions, going on through broker kills (aborting and rewinding to
      the committed offsets when a transaction fails, a new producer when one is fenced or
      fatal); F gets "produced=N committed=M txns=T aborts=A" as it goes; after S appears it
      drains and checks the output (read_committed) holds every input exactly once.

Prints one JSON line; exits 1 (reason on stderr) if a check failed.
"""
import argparse
import json
import os
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3
failures = []


def check(ok, msg):
    if not ok:
        failures.append(msg)
    return ok


def create_topics(bootstrap, names, rf):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(n, PARTITIONS, rf) for n in names], operation_timeout=30)
    for n, f in fs.items():
        try:
            f.result(60)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Wait until every partition has a leader in this client's metadata.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(n in md.topics and len(md.topics[n].partitions) == PARTITIONS
               and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {names} without leaders")


def txn_producer(bootstrap, txn_id, extra=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        "transaction.timeout.ms": 60000,
        "message.timeout.ms": 60000,
    }
    conf.update(extra or {})
    return Producer(conf)


def read_all(bootstrap, topic, isolation, timeout=60):
    """Every record of topic (partition -> [values]) up to the end, with isolation.level."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "ck-txn-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    at_end = set()
    deadline = time.monotonic() + timeout
    while len(at_end) < PARTITIONS and time.monotonic() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            got[m.partition()].append(m.value().decode())
    c.close()
    check(len(at_end) == PARTITIONS, f"read-back of {topic} ({isolation}) did not reach the end")
    return got


def committed_offsets(consumer, topic, timeout=30):
    tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=timeout)
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def basic(a, res):
    topic, tin, tout = a.prefix, a.prefix + "-in", a.prefix + "-out"
    create_topics(a.bootstrap, [topic, tin, tout], a.replication_factor)

    # Commit and abort.
    p = txn_producer(a.bootstrap, a.prefix + "-id")
    p.init_transactions(60)
    committed = {q: [] for q in range(PARTITIONS)}
    sent = []
    commits = aborts = 0
    for t in range(9):
        p.begin_transaction()
        batch = []
        for i in range(30):
            v = f"t{t}-r{i}"
            p.produce(topic, value=v, key=f"k{i}", partition=i % PARTITIONS)
            batch.append((i % PARTITIONS, v))
            sent.append(v)
        if t % 3 == 1:
            p.flush(30)  # the records are in the log before the abort marker
            p.abort_transaction(60)
            aborts += 1
        else:
            p.commit_transaction(60)
            commits += 1
            for q, v in batch:
                committed[q].append(v)
    res.update(commits=commits, aborts=aborts, sent=len(sent))
    rc = read_all(a.bootstrap, topic, "read_committed")
    res["read_committed"] = sum(len(v) for v in rc.values())
    check(rc == committed, f"read_committed saw {res['read_committed']} records "
          f"({ {q: len(v) for q, v in rc.items()} }), want exactly the "
          f"{sum(len(v) for v in committed.values())} committed ones in order")
    ru = read_all(a.bootstrap, topic, "read_uncommitted")
    ru_values = sorted(v for vs in ru.values() for v in vs)
    res["read_uncommitted"] = len(ru_values)
    check(ru_values == sorted(sent), f"read_uncommitted saw {len(ru_values)} records, {len(sent)} were sent")

    # Consume-transform-produce with send_offsets_to_transaction.
    inputs = 300
    feed = Producer({"bootstrap.servers": a.bootstrap})
    for i in range(inputs):
        feed.produce(tin, value=f"in-{i}", key=f"k{i}", partition=i % PARTITIONS)
    feed.flush(30)
    group = a.prefix + "-ctp"
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    c.subscribe([tin])
    processed, ctp_commits, ctp_aborts = 0, 0, 0
    deadline = time.monotonic() + 90
    while processed < inputs and time.monotonic() < deadline:
        msgs = [m for m in c.consume(num_messages=40, timeout=0.5) if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(tout, value=m.value().decode().replace("in-", "out-"), key=m.key(),
                      partition=m.partition())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        p.flush(30)
        if ctp_aborts == 0:
            p.abort_transaction(60)
            ctp_aborts += 1
            after = committed_offsets(c, tin)
            res["offsets_after_abort"] = after
            check(after == {}, f"the group's offsets after an aborted transaction: {after}, want none")
            firsts = {}
            for m in msgs:
                firsts.setdefault(m.partition(), m.offset())
            for q, o in firsts.items():
                c.seek(TopicPartition(tin, q, o))
            continue
        if ctp_commits == 0:
            # A read_committed consumer asks with require_stable: the broker answers
            # UNSTABLE_OFFSET_COMMIT while the offsets are pending (retried until the timeout).
            try:
                before = committed_offsets(c, tin, timeout=3)
            except KafkaException as e:
                before = f"unstable ({e.args[0].name()})"
            res["offsets_while_open"] = before
            check(before in ({}, "unstable (_TIMED_OUT)"),
                  f"the group's offsets while a transaction is open: {before}, want none")
        p.commit_transaction(60)
        ctp_commits += 1
        processed += len(msgs)
    final = committed_offsets(c, tin)
    c.close()
    res.update(processed=processed, ctp_commits=ctp_commits, ctp_aborts=ctp_aborts, final_offsets=final)
    check(final == {q: inputs // PARTITIONS for q in range(PARTITIONS)},
          f"the group's committed offsets {final}, want {inputs // PARTITIONS} on each partition")
    out = read_all(a.bootstrap, tout, "read_committed")
    values = sorted(v for vs in out.values() for v in vs)
    res["output_read_committed"] = len(values)
    check(values == sorted(f"out-{i}" for i in range(inputs)),
          f"output read_committed: {len(values)} records ({len(set(values))} distinct), want each of "
          f"{inputs} once")
    ru_out = sum(len(v) for v in read_all(a.bootstrap, tout, "read_uncommitted").values())
    res["output_read_uncommitted"] = ru_out
    check(ru_out > inputs, f"output read_uncommitted: {ru_out}, want the aborted batch's records too")


def write_progress(path, **kv):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(f"{k}={v}" for k, v in kv.items()) + "\n")
    os.replace(tmp, path)


def loop(a, res):
    tin, tout = a.prefix + "-in", a.prefix + "-out"
    create_topics(a.bootstrap, [tin, tout], a.replication_factor)
    txn_id = a.prefix + "-loop-id"
    feed = Producer({
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
    })
    acked = set()
    feed_errors = []

    def delivered(err, m):
        if err:
            feed_errors.append(str(err))
        else:
            acked.add(m.value().decode())

    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.prefix + "-loop",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    })
    c.subscribe([tin])
    p = txn_producer(a.bootstrap, txn_id)
    p.init_transactions(120)
    produced = 0
    txns = aborts = new_producers = 0
    errors = []
    next_feed = time.monotonic()
    t0 = time.monotonic()
    stopping_since = None

    def rewind():
        tps = c.assignment()
        if not tps:
            return
        for tp in c.committed(tps, timeout=30):
            c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))

    while True:
        now = time.monotonic()
        stop = os.path.exists(a.stop_file)
        if stop and stopping_since is None:
            stopping_since = now
            feed.flush(120)
        if not stop:
            while next_feed <= now:
                feed.produce(tin, value=f"in-{produced}", key=f"k{produced % 50}", on_delivery=delivered)
                produced += 1
                next_feed += a.interval_ms / 1000.0
        feed.poll(0)
        if stop:
            try:
                pos = {tp.partition: tp.offset for tp in c.committed(
                    [TopicPartition(tin, q) for q in range(PARTITIONS)], timeout=10)}
            except KafkaException:
                pos = {}
            done = len(acked) == produced and sum(max(o, 0) for o in pos.values()) >= produced
            if done or now - stopping_since > 120:
                break
        if now - t0 > 280:
            failures.append("the stop file did not appear within 280 s")
            break
        write_progress(a.progress_file, produced=len(acked), committed=txns_records[0], txns=txns,
                       aborts=aborts, errors=len(errors))
        msgs = [m for m in c.consume(num_messages=200, timeout=0.1) if not m.error()]
        if not msgs:
            continue
        try:
            p.begin_transaction()
            for m in msgs:
                p.produce(tout, value=m.value().decode().replace("in-", "out-"), key=m.key())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 60)
            p.commit_transaction(60)
            txns += 1
            txns_records[0] += len(msgs)
        except KafkaException as e:
            err = e.args[0]
            errors.append(str(err))
            if err.txn_requires_abort():
                try:
                    p.abort_transaction(60)
                except KafkaException as e2:
                    errors.append("abort: " + str(e2.args[0]))
                    p = None
                aborts += 1
            elif err.retriable():
                # Commit again is what librdkafka asks; simpler here: abort and redo the batch.
                try:
                    p.abort_transaction(60)
                    aborts += 1
                except KafkaException as e2:
                    errors.append("abort: " + str(e2.args[0]))
                    p = None
            else:
                p = None
            if p is None:
                # Fatal (fenced, epoch exhausted, ...): a new producer with the same id.
                p = txn_producer(a.bootstrap, txn_id)
                p.init_transactions(120)
                new_producers += 1
            rewind()
    c.close()
    feed.flush(30)
    res.update(produced=produced, acked=len(acked), feed_errors=len(feed_errors), txns=txns, aborts=aborts,
               new_producers=new_producers, txn_errors=errors[:20], txn_error_count=len(errors))
    check(not feed_errors, f"{len(feed_errors)} input sends failed: {feed_errors[:3]}")
    out = read_all(a.bootstrap, tout, "read_committed", timeout=120)
    values = [v for vs in out.values() for v in vs]
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    want = {v.replace("in-", "out-") for v in acked}
    missing = len(want - counts.keys())
    dup = sum(1 for n in counts.values() if n > 1)
    extra = len(counts.keys() - want)
    res.update(output_read_committed=len(values), output_missing=missing, output_duplicates=dup,
               output_unexpected=extra)
    check(missing == 0, f"{missing} input records missing from the output (read_committed)")
    check(dup == 0, f"{dup} input records more than once in the output (read_committed)")
    check(extra == 0, f"{extra} output records that are no acknowledged input")


txns_records = [0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("mode", choices=["basic", "loop"])
    ap.add_argument("--prefix", default="ck-txn")
    ap.add_argument("--replication-factor", type=int, default=1)
    ap.add_argument("--progress-file")
    ap.add_argument("--stop-file")
    ap.add_argument("--interval-ms", type=float, default=4)
    a = ap.parse_args()
    res = {"mode": a.mode}
    try:
        basic(a, res) if a.mode == "basic" else loop(a, res)
    except Exception as e:  # noqa: BLE001 - every failure goes into the report
        failures.append(f"aborted: {type(e).__name__}: {e}")
    res["failures"] = failures
    res["ok"] = not failures
    print(json.dumps(res))
    if failures:
        print(f"FAILED ck_txn {a.mode}: {failures[0]}" + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
