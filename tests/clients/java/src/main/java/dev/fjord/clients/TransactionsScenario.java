package dev.fjord.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;

/**
 * Transactions with the Java client (issue 15), on one broker or a cluster
 * ({@code --replication-factor}):
 *
 * <ul>
 *   <li>commit and abort: a transactional producer runs {@code --transactions} transactions over
 *       3 partitions, every third aborted (after a flush, so its records are in the log); a
 *       read_committed consumer sees exactly the committed records, in order per partition, and
 *       a read_uncommitted one sees every record; while a transaction is open its records are
 *       past the last stable offset (hidden from read_committed) and appear on commit;
 *   <li>fencing: a second producer with the same transactional.id fences the first, whose next
 *       send or commit fails with ProducerFencedException (or InvalidProducerEpochException),
 *       and whose open transaction is aborted;
 *   <li>consume-transform-produce with sendOffsetsToTransaction: the group's committed offsets
 *       stay unchanged through an aborted transaction and while one is open, and move on
 *       commit; the output (read_committed) holds every input record transformed exactly once.
 * </ul>
 */
final class TransactionsScenario {
    private TransactionsScenario() {}

    static final int PARTITIONS = 3;

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        short rf = (short) a.getInt("replication-factor", 1);
        int transactions = a.getInt("transactions", 12);
        int perTxn = a.getInt("records-per-transaction", 30);
        String prefix = a.get("prefix", "java-txn");
        try (Admin admin = Clients.admin(bs)) {
            for (String t : List.of(prefix, prefix + "-fence", prefix + "-in", prefix + "-out")) {
                Clients.createTopic(admin, t, PARTITIONS, rf, Map.of());
            }
            Map<String, Object> commitAbort = new LinkedHashMap<>();
            r.put("commit_abort", commitAbort);
            r.step("commit-abort", () -> commitAbort(bs, admin, prefix, transactions, perTxn, r, commitAbort));
            Map<String, Object> fencing = new LinkedHashMap<>();
            r.put("fencing", fencing);
            r.step("fencing", () -> fencing(bs, prefix + "-fence", prefix + "-fence-id", r, fencing));
            Map<String, Object> ctp = new LinkedHashMap<>();
            r.put("consume_transform_produce", ctp);
            r.step("consume-transform-produce", () -> consumeTransformProduce(bs, admin, prefix, r, ctp));
        }
    }

    static Properties txnProducerProps(String bs, String txnId) {
        Properties p = Clients.producerProps(bs, txnId);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 60_000);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 60_000);
        return p;
    }

    private static void commitAbort(String bs, Admin admin, String topic, int transactions, int perTxn, Report r,
            Map<String, Object> res) throws Exception {
        Map<Integer, List<String>> committed = new TreeMap<>();
        List<String> all = new ArrayList<>();
        int commits = 0;
        int aborts = 0;
        String txnId = topic + "-id";
        try (KafkaProducer<String, String> p = Clients.producer(txnProducerProps(bs, txnId))) {
            p.initTransactions();
            for (int t = 0; t < transactions; t++) {
                boolean abort = t % 3 == 1;
                p.beginTransaction();
                List<String[]> sent = new ArrayList<>();
                for (int i = 0; i < perTxn; i++) {
                    int part = i % PARTITIONS;
                    String v = "t" + t + "-r" + i;
                    p.send(new ProducerRecord<>(topic, part, "k" + i, v));
                    sent.add(new String[] {Integer.toString(part), v});
                    all.add(v);
                }
                if (abort) {
                    p.flush(); // the records are in the log before the abort marker
                    p.abortTransaction();
                    aborts++;
                } else {
                    p.commitTransaction();
                    commits++;
                    for (String[] s : sent) {
                        committed.computeIfAbsent(Integer.parseInt(s[0]), k -> new ArrayList<>()).add(s[1]);
                    }
                }
            }
            res.put("commits", commits);
            res.put("aborts", aborts);

            // An open transaction: its records are past the LSO until it commits.
            p.beginTransaction();
            List<String> open = new ArrayList<>();
            for (int i = 0; i < PARTITIONS; i++) {
                String v = "open-r" + i;
                p.send(new ProducerRecord<>(topic, i, "open", v)).get(30, TimeUnit.SECONDS);
                open.add(v);
                all.add(v);
            }
            List<ConsumerRecord<String, String>> during = Clients.readAll(bs, topic, Duration.ofSeconds(60),
                    "read_committed");
            long visibleOpen = during.stream().filter(c -> c.value().startsWith("open-")).count();
            res.put("open_visible_read_committed", visibleOpen);
            r.check(visibleOpen == 0, "read_committed saw %d records of an open transaction", visibleOpen);
            r.check(during.size() == commits * perTxn, "read_committed during an open transaction: %d records, want %d",
                    during.size(), commits * perTxn);
            Map<TopicPartition, Long> lso = endOffsets(bs, topic, "read_committed");
            Map<TopicPartition, Long> hw = endOffsets(bs, topic, "read_uncommitted");
            boolean behind = true;
            for (TopicPartition tp : hw.keySet()) {
                behind &= lso.get(tp) < hw.get(tp);
            }
            res.put("lso_during_open", lso.values());
            res.put("hw_during_open", hw.values());
            r.check(behind, "the last stable offset %s is not behind the high watermark %s with a transaction open",
                    lso, hw);
            describeOpen(admin, txnId, r, res);
            p.commitTransaction();
            commits++;
            for (int i = 0; i < PARTITIONS; i++) {
                committed.computeIfAbsent(i, k -> new ArrayList<>()).add(open.get(i));
            }
        }

        List<ConsumerRecord<String, String>> rc = Clients.readAll(bs, topic, Duration.ofSeconds(60), "read_committed");
        Map<Integer, List<String>> got = new TreeMap<>();
        for (ConsumerRecord<String, String> c : rc) {
            got.computeIfAbsent(c.partition(), k -> new ArrayList<>()).add(c.value());
        }
        int expected = committed.values().stream().mapToInt(List::size).sum();
        res.put("read_committed", rc.size());
        res.put("committed_sent", expected);
        r.check(got.equals(committed), "read_committed saw %s records (%s per partition), want exactly the %d "
                + "committed ones in order", rc.size(), counts(got), expected);
        long abortedSeen = rc.stream().filter(c -> aborted(c.value())).count();
        res.put("aborted_seen_read_committed", abortedSeen);
        r.check(abortedSeen == 0, "read_committed returned %d records of aborted transactions", abortedSeen);

        List<ConsumerRecord<String, String>> ru = Clients.readAll(bs, topic, Duration.ofSeconds(60),
                "read_uncommitted");
        List<String> ruValues = new ArrayList<>();
        ru.forEach(c -> ruValues.add(c.value()));
        res.put("read_uncommitted", ru.size());
        res.put("sent", all.size());
        r.check(ru.size() == all.size() && ruValues.containsAll(all),
                "read_uncommitted saw %d records, %d were sent", ru.size(), all.size());
        // Markers take offsets: one per partition per transaction.
        Map<TopicPartition, Long> end = endOffsets(bs, topic, "read_uncommitted");
        long endSum = end.values().stream().mapToLong(Long::longValue).sum();
        res.put("end_offsets_sum", endSum);
        r.check(endSum == all.size() + (long) (commits + aborts) * PARTITIONS,
                "end offsets %s: want %d records + %d markers", end, all.size(), (commits + aborts) * PARTITIONS);
    }

    /** Values of the aborted transactions ({@code t%3 == 1}). */
    static boolean aborted(String v) {
        if (!v.startsWith("t")) {
            return false;
        }
        int t = Integer.parseInt(v.substring(1, v.indexOf('-')));
        return t % 3 == 1;
    }

    private static void describeOpen(Admin admin, String txnId, Report r, Map<String, Object> res) {
        r.step("describeTransactions", () -> {
            TransactionDescription d = admin.describeTransactions(List.of(txnId)).description(txnId)
                    .get(30, TimeUnit.SECONDS);
            res.put("describe_state", d.state().toString());
            res.put("describe_partitions", d.topicPartitions().size());
            r.check(d.state().toString().equals("Ongoing"), "describeTransactions: state %s, want Ongoing", d.state());
            r.check(d.topicPartitions().size() == PARTITIONS, "describeTransactions: partitions %s",
                    d.topicPartitions());
        });
    }

    static Map<String, Integer> counts(Map<Integer, List<String>> m) {
        Map<String, Integer> out = new TreeMap<>();
        m.forEach((k, v) -> out.put(Integer.toString(k), v.size()));
        return out;
    }

    static Map<TopicPartition, Long> endOffsets(String bs, String topic, String isolation) {
        Properties p = Clients.consumerProps(bs, "java-end-offsets");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < PARTITIONS; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> ordered = new LinkedHashMap<>();
            tps.forEach(tp -> ordered.put(tp, end.get(tp)));
            return ordered;
        }
    }

    private static void fencing(String bs, String topic, String txnId, Report r, Map<String, Object> res)
            throws Exception {
        KafkaProducer<String, String> first = Clients.producer(txnProducerProps(bs, txnId));
        try {
            first.initTransactions();
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, 0, "k", "fenced-1")).get(30, TimeUnit.SECONDS);
            try (KafkaProducer<String, String> second = Clients.producer(txnProducerProps(bs, txnId))) {
                // Fences the first and aborts its open transaction.
                second.initTransactions();
                String err = "none";
                try {
                    first.send(new ProducerRecord<>(topic, 1, "k", "fenced-2")).get(30, TimeUnit.SECONDS);
                    first.commitTransaction();
                } catch (Exception e) {
                    err = Report.describe(e);
                    Throwable c = Report.unwrap(e);
                    boolean fenced = c instanceof ProducerFencedException || c instanceof InvalidProducerEpochException
                            || (c.getCause() != null && (c.getCause() instanceof ProducerFencedException
                                    || c.getCause() instanceof InvalidProducerEpochException));
                    r.check(fenced, "the fenced producer failed with %s, want ProducerFencedException or "
                            + "InvalidProducerEpochException", err);
                }
                res.put("fenced_error", err);
                r.check(!err.equals("none"), "the first producer committed after a second one with its "
                        + "transactional.id initialized");
                second.beginTransaction();
                second.send(new ProducerRecord<>(topic, 2, "k", "second-1"));
                second.commitTransaction();
            }
        } finally {
            first.close(Duration.ofSeconds(5));
        }
        List<String> values = new ArrayList<>();
        Clients.readAll(bs, topic, Duration.ofSeconds(60), "read_committed").forEach(c -> values.add(c.value()));
        res.put("read_committed", values);
        r.check(values.equals(List.of("second-1")), "read_committed after fencing: %s, want [second-1]", values);
    }

    private static void consumeTransformProduce(String bs, Admin admin, String prefix, Report r,
            Map<String, Object> res) throws Exception {
        String in = prefix + "-in";
        String out = prefix + "-out";
        String group = prefix + "-ctp";
        int inputs = 300;
        try (KafkaProducer<String, String> p = Clients.producer(Clients.producerProps(bs, "java-txn-input"))) {
            for (int i = 0; i < inputs; i++) {
                p.send(new ProducerRecord<>(in, i % PARTITIONS, "k" + i, "in-" + i));
            }
            p.flush();
        }
        Properties cp = Clients.consumerProps(bs, "java-txn-ctp-consumer");
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 40);
        int aborted = 0;
        int committedTxns = 0;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp);
                KafkaProducer<String, String> p = Clients.producer(txnProducerProps(bs, prefix + "-ctp-id"))) {
            p.initTransactions();
            c.subscribe(List.of(in));
            long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
            int processed = 0;
            while (processed < inputs && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(200));
                if (recs.isEmpty()) {
                    continue;
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                p.beginTransaction();
                for (ConsumerRecord<String, String> rec : recs) {
                    p.send(new ProducerRecord<>(out, rec.partition(), rec.key(), rec.value().replace("in-", "out-")));
                    offsets.put(new TopicPartition(rec.topic(), rec.partition()),
                            new OffsetAndMetadata(rec.offset() + 1));
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                p.flush();
                Map<TopicPartition, OffsetAndMetadata> before = groupOffsets(admin, group);
                if (aborted == 0) {
                    // The first batch is aborted: offsets unchanged, the consumer rewinds.
                    p.abortTransaction();
                    aborted++;
                    Map<TopicPartition, OffsetAndMetadata> after = groupOffsets(admin, group);
                    res.put("offsets_after_abort", describe(after));
                    r.check(after.isEmpty(), "the group's offsets after an aborted transaction: %s, want none",
                            describe(after));
                    for (TopicPartition tp : recs.partitions()) {
                        c.seek(tp, recs.records(tp).get(0).offset());
                    }
                    continue;
                }
                if (committedTxns == 0) {
                    res.put("offsets_while_open", describe(before));
                    r.check(before.isEmpty(), "the group's offsets while the first transaction is open: %s, want none",
                            describe(before));
                }
                p.commitTransaction();
                committedTxns++;
                processed += recs.count();
            }
            res.put("processed", processed);
            res.put("aborted_transactions", aborted);
            res.put("committed_transactions", committedTxns);
        }
        Map<TopicPartition, OffsetAndMetadata> fin = groupOffsets(admin, group);
        res.put("final_offsets", describe(fin));
        Map<TopicPartition, Long> inEnd = endOffsets(bs, in, "read_uncommitted");
        boolean atEnd = fin.size() == PARTITIONS;
        for (Map.Entry<TopicPartition, Long> e : inEnd.entrySet()) {
            OffsetAndMetadata o = fin.get(e.getKey());
            atEnd &= o != null && o.offset() == e.getValue();
        }
        r.check(atEnd, "the group's committed offsets %s, want the input's end offsets %s", describe(fin), inEnd);

        Map<String, Integer> seen = new HashMap<>();
        List<ConsumerRecord<String, String>> outRc = Clients.readAll(bs, out, Duration.ofSeconds(60),
                "read_committed");
        outRc.forEach(c -> seen.merge(c.value(), 1, Integer::sum));
        int missing = 0;
        for (int i = 0; i < inputs; i++) {
            if (!seen.containsKey("out-" + i)) {
                missing++;
            }
        }
        long dup = seen.values().stream().filter(n -> n > 1).count();
        res.put("output_read_committed", outRc.size());
        res.put("output_missing", missing);
        res.put("output_duplicates", dup);
        r.check(missing == 0 && dup == 0 && outRc.size() == inputs,
                "output read_committed: %d records, %d inputs missing, %d duplicated", outRc.size(), missing, dup);
        int outRu = Clients.readAll(bs, out, Duration.ofSeconds(60), "read_uncommitted").size();
        res.put("output_read_uncommitted", outRu);
        r.check(outRu > inputs, "output read_uncommitted: %d records, want the aborted batch's too (> %d)", outRu,
                inputs);
    }

    static Map<TopicPartition, OffsetAndMetadata> groupOffsets(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> m = admin
                .listConsumerGroupOffsets(group, new ListConsumerGroupOffsetsOptions())
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        m.forEach((k, v) -> {
            if (v != null) {
                out.put(k, v);
            }
        });
        return out;
    }

    static Map<String, Long> describe(Map<TopicPartition, OffsetAndMetadata> m) {
        Map<String, Long> out = new TreeMap<>();
        m.forEach((k, v) -> out.put(k.toString(), v.offset()));
        return out;
    }
}
