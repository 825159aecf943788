package dev.fjord.clients;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;

/**
 * The producer as applications use it: the idempotent default (enable.idempotence=true,
 * acks=all) with every codec, acks=1 and acks=0, a LogAppendTime topic; keys (and null keys),
 * null values, headers (binary, empty, null, repeated keys), explicit and producer-assigned
 * timestamps, one large record; many small batches in flight. Every record is read back and
 * compared with what was sent and with the offsets the producer was given.
 */
final class ProducerScenario {
    private ProducerScenario() {}

    record Variant(String name, String acks, boolean idempotent, String codec, boolean logAppendTime) {}

    static final int PARTITIONS = 3;

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        int n = a.getInt("records", 300);
        List<Variant> variants = List.of(
                new Variant("idempotent-none", "all", true, "none", false),
                new Variant("idempotent-gzip", "all", true, "gzip", false),
                new Variant("idempotent-snappy", "all", true, "snappy", false),
                new Variant("idempotent-lz4", "all", true, "lz4", false),
                new Variant("idempotent-zstd", "all", true, "zstd", false),
                new Variant("acks1-lz4", "1", false, "lz4", false),
                new Variant("acks0-none", "0", false, "none", false),
                new Variant("idempotent-zstd-logappendtime", "all", true, "zstd", true));
        try (Admin admin = Clients.admin(bs)) {
            for (Variant v : variants) {
                Map<String, String> cfg = v.logAppendTime
                        ? Map.of("message.timestamp.type", "LogAppendTime")
                        : Map.of();
                Clients.createTopic(admin, topic(v), PARTITIONS, (short) 1, cfg);
            }
        }
        List<Object> results = new ArrayList<>();
        for (Variant v : variants) {
            Map<String, Object> res = new java.util.LinkedHashMap<>();
            res.put("name", v.name);
            r.step("variant " + v.name, () -> runVariant(bs, v, n, r, res));
            results.add(res);
        }
        r.put("records_per_variant", n);
        r.put("variants", results);

        // read_committed (what Kafka Streams and many EOS pipelines use) sees the same records:
        // without transactions the last stable offset is the high watermark.
        r.step("read_committed", () -> {
            String t = topic(variants.get(0));
            List<ConsumerRecord<String, String>> rc = Clients.readAll(bs, t, Duration.ofSeconds(60), "read_committed");
            r.put("read_committed_records", rc.size());
            r.check(rc.size() == n, "read_committed read %d records of %s, expected %d", rc.size(), t, n);
        });

        // A record over the topic's max.message.bytes fails alone (RecordTooLargeException);
        // the idempotent producer goes on with the next records.
        r.step("record too large", () -> {
            String t = "java-produce-small-max";
            try (Admin admin = Clients.admin(bs)) {
                Clients.createTopic(admin, t, 1, (short) 1, Map.of("max.message.bytes", "10000"));
            }
            Properties p = Clients.producerProps(bs, "java-producer-too-large");
            p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
            try (KafkaProducer<String, String> producer = Clients.producer(p)) {
                RecordMetadata before = producer.send(new ProducerRecord<>(t, "small-1")).get();
                Throwable big = null;
                try {
                    producer.send(new ProducerRecord<>(t, "x".repeat(50_000))).get();
                } catch (Exception e) {
                    big = Report.unwrap(e);
                }
                RecordMetadata after = producer.send(new ProducerRecord<>(t, "small-2")).get();
                r.put("record_too_large", Main.map("error", Report.describe(big), "offsets",
                        List.of(before.offset(), after.offset())));
                r.check(big instanceof org.apache.kafka.common.errors.RecordTooLargeException,
                        "a 50 kB record on a topic with max.message.bytes=10000: %s", Report.describe(big));
                r.check(before.offset() == 0 && after.offset() == 1,
                        "records around the refused one got offsets %d and %d", before.offset(), after.offset());
            }
        });

        // A transactional producer's one-record transaction (the transactions scenario has the
        // thorough checks): its result, asserted by java_client.rs.
        r.put("transactions", transactionalProducer(bs, topic(variants.get(0))));
    }

    static Map<String, Object> transactionalProducer(String bs, String topic) {
        Properties p = Clients.producerProps(bs, "java-transactional");
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "java-txn");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10000);
        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> producer = Clients.producer(p)) {
            producer.initTransactions();
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, "txn", "txn"));
            producer.commitTransaction();
            return Main.map("result", "ok", "ms", (System.nanoTime() - t0) / 1_000_000);
        } catch (Exception e) {
            return Main.map("result", Report.describe(e), "ms", (System.nanoTime() - t0) / 1_000_000);
        }
    }

    static String topic(Variant v) {
        return "java-produce-" + v.name;
    }

    /** What record {@code i} of a variant carries. */
    static String key(int i) {
        return i % 25 == 7 ? null : "key-" + (i % 40);
    }

    static String value(int i, int n) {
        if (i % 50 == 13) {
            return null;
        }
        if (i == n / 2) {
            // A large record (256 KiB, compressible) in a batch of its own.
            return "large-" + i + "-" + "0123456789abcdef".repeat(16 * 1024);
        }
        return "value-" + i + "-" + "abcdefghij".repeat(i % 30);
    }

    static Long timestamp(int i, long base) {
        return i % 10 == 3 ? null : base + i;
    }

    static List<Header> headers(int i, String variant) {
        List<Header> h = new ArrayList<>();
        h.add(new RecordHeader("index", Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
        h.add(new RecordHeader("variant", variant.getBytes(StandardCharsets.UTF_8)));
        if (i % 3 == 0) {
            h.add(new RecordHeader("bin", new byte[] {0, 1, (byte) 0x80, (byte) 0xff}));
        }
        if (i % 7 == 0) {
            h.add(new RecordHeader("empty", new byte[0]));
        }
        if (i % 11 == 0) {
            h.add(new RecordHeader("null-value", (byte[]) null));
        }
        if (i % 5 == 0) {
            h.add(new RecordHeader("dup", "first".getBytes(StandardCharsets.UTF_8)));
            h.add(new RecordHeader("dup", "second".getBytes(StandardCharsets.UTF_8)));
        }
        return h;
    }

    static Object runVariant(String bs, Variant v, int n, Report r, Map<String, Object> res) throws Exception {
        Properties p = Clients.producerProps(bs, "java-producer-" + v.name);
        p.put(ProducerConfig.ACKS_CONFIG, v.acks);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, v.idempotent);
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, v.codec);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 2);
        // Small batches: many produce requests, several in flight per partition.
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 2048);
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5);
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 1024 * 1024);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        String topic = topic(v);
        long base = System.currentTimeMillis() - 60_000;
        RecordMetadata[] meta = new RecordMetadata[n];
        String[] errors = new String[n];
        AtomicInteger acked = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        long sendStart = System.currentTimeMillis();
        try (KafkaProducer<String, String> producer = Clients.producer(p)) {
            for (int i = 0; i < n; i++) {
                final int idx = i;
                ProducerRecord<String, String> rec = new ProducerRecord<>(topic, null, timestamp(i, base), key(i),
                        value(i, n), new RecordHeaders(headers(i, v.name)));
                producer.send(rec, (m, e) -> {
                    if (e != null) {
                        errors[idx] = Report.describe(e);
                        failed.incrementAndGet();
                    } else {
                        meta[idx] = m;
                        acked.incrementAndGet();
                    }
                });
            }
            producer.flush();
            if (v.acks.equals("0")) {
                // With acks=0, flush() returns once the requests are written to the socket;
                // closing the connection right away can make a broker drop the requests it has
                // not read yet (Kafka does), which is acks=0's contract, not what is tested here.
                Thread.sleep(1000);
            }
            Map<String, Object> metrics = new TreeMap<>();
            producer.metrics().forEach((name, metric) -> {
                if (name.group().equals("producer-metrics")
                        && List.of("record-retry-total", "record-error-total", "request-total",
                                "batch-split-total").contains(name.name())) {
                    metrics.put(name.name(), metric.metricValue());
                }
            });
            res.put("producer_metrics", metrics);
        }
        long sendEnd = System.currentTimeMillis();
        res.put("sent", n);
        res.put("acked", acked.get());
        res.put("send_errors", failed.get());
        for (int i = 0; i < n; i++) {
            if (errors[i] != null) {
                r.fail("%s: record %d not acknowledged: %s", v.name, i, errors[i]);
                break;
            }
        }
        boolean acksOffsets = !v.acks.equals("0");
        // Offsets given to the producer: 0, 1, 2, ... per partition in send order.
        Map<Integer, List<Long>> offsetsByPartition = new TreeMap<>();
        for (int i = 0; i < n; i++) {
            if (meta[i] != null) {
                offsetsByPartition.computeIfAbsent(meta[i].partition(), k -> new ArrayList<>()).add(meta[i].offset());
            }
        }
        Map<String, Object> offsets = new TreeMap<>();
        offsetsByPartition.forEach((part, offs) -> {
            offsets.put(part.toString(), Main.map("count", offs.size(), "first", offs.get(0),
                    "last", offs.get(offs.size() - 1)));
            if (acksOffsets) {
                for (int j = 0; j < offs.size(); j++) {
                    if (offs.get(j) != j) {
                        r.fail("%s: partition %d: record %d of the partition got offset %d (expected %d)", v.name,
                                part, j, offs.get(j), j);
                        break;
                    }
                }
            }
        });
        res.put("offsets", offsets);

        List<ConsumerRecord<String, String>> got = Clients.readAll(bs, topic, Duration.ofSeconds(60));
        res.put("consumed", got.size());
        int mismatched = 0;
        int duplicates = 0;
        int outOfOrder = 0;
        boolean[] seen = new boolean[n];
        Map<Integer, Integer> lastIndexByPartition = new HashMap<>();
        for (ConsumerRecord<String, String> c : got) {
            Header ih = c.headers().lastHeader("index");
            if (ih == null) {
                mismatched++;
                r.fail("%s: record at %d/%d has no index header", v.name, c.partition(), c.offset());
                continue;
            }
            int i = Integer.parseInt(new String(ih.value(), StandardCharsets.UTF_8));
            if (seen[i]) {
                duplicates++;
                continue;
            }
            seen[i] = true;
            Integer last = lastIndexByPartition.put(c.partition(), i);
            if (last != null && last > i) {
                outOfOrder++;
            }
            String bad = compare(v, c, i, n, base, meta[i], acksOffsets, sendStart, sendEnd);
            if (bad != null) {
                if (mismatched < 5) {
                    r.fail("%s: record %d at %d/%d: %s", v.name, i, c.partition(), c.offset(), bad);
                }
                mismatched++;
            }
        }
        int missing = 0;
        List<Integer> missingIndexes = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            if (!seen[i]) {
                missing++;
                if (missingIndexes.size() < 20) {
                    missingIndexes.add(i);
                }
            }
        }
        res.put("missing", missing);
        if (missing > 0) {
            res.put("missing_indexes", missingIndexes);
        }
        res.put("duplicates", duplicates);
        res.put("mismatched", mismatched);
        res.put("out_of_order", outOfOrder);
        r.check(got.size() == n, "%s: read back %d records, sent %d", v.name, got.size(), n);
        r.check(missing == 0 && duplicates == 0, "%s: %d missing, %d duplicated", v.name, missing, duplicates);
        r.check(outOfOrder == 0, "%s: %d records out of send order within their partition", v.name, outOfOrder);
        r.check(offsetsByPartition.size() == PARTITIONS || !acksOffsets,
                "%s: records landed in partitions %s, expected all %d", v.name, offsetsByPartition.keySet(),
                PARTITIONS);
        return null;
    }

    /** Null if record {@code c} is record {@code i} as sent; otherwise what differs. */
    static String compare(Variant v, ConsumerRecord<String, String> c, int i, int n, long base, RecordMetadata m,
            boolean acksOffsets, long sendStart, long sendEnd) {
        if (!java.util.Objects.equals(c.key(), key(i))) {
            return "key " + c.key() + " != " + key(i);
        }
        if (!java.util.Objects.equals(c.value(), value(i, n))) {
            return "value differs (" + (c.value() == null ? "null" : c.value().length() + " chars") + ")";
        }
        List<Header> want = headers(i, v.name);
        Header[] have = c.headers().toArray();
        if (have.length != want.size()) {
            return "headers " + Arrays.toString(have) + " != " + want;
        }
        for (int j = 0; j < have.length; j++) {
            if (!have[j].key().equals(want.get(j).key()) || !Arrays.equals(have[j].value(), want.get(j).value())) {
                return "header " + j + " " + have[j] + " != " + want.get(j);
            }
        }
        if (m != null) {
            if (c.partition() != m.partition()) {
                return "partition " + c.partition() + " != acknowledged " + m.partition();
            }
            if (acksOffsets && c.offset() != m.offset()) {
                return "offset " + c.offset() + " != acknowledged " + m.offset();
            }
        }
        if (v.logAppendTime) {
            if (c.timestampType() != TimestampType.LOG_APPEND_TIME) {
                return "timestamp type " + c.timestampType() + " on a LogAppendTime topic";
            }
            if (c.timestamp() < sendStart - 1000 || c.timestamp() > sendEnd + 1000) {
                return "log append time " + c.timestamp() + " outside the send window [" + sendStart + ", "
                        + sendEnd + "]";
            }
            if (m != null && m.timestamp() != c.timestamp()) {
                return "log append time " + c.timestamp() + " != acknowledged timestamp " + m.timestamp();
            }
        } else {
            if (c.timestampType() != TimestampType.CREATE_TIME) {
                return "timestamp type " + c.timestampType();
            }
            Long ts = timestamp(i, base);
            if (ts != null && c.timestamp() != ts) {
                return "timestamp " + c.timestamp() + " != " + ts;
            }
            if (ts == null && (c.timestamp() < sendStart || c.timestamp() > sendEnd)) {
                return "producer-assigned timestamp " + c.timestamp() + " outside the send window";
            }
            if (ts == null && m != null && m.timestamp() != c.timestamp()) {
                return "timestamp " + c.timestamp() + " != acknowledged " + m.timestamp();
            }
        }
        return null;
    }
}
