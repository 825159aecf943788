package dev.fjord.clients;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.protocol.Errors;

/**
 * A producer (idempotent, acks=all) and a group consumer running against a cluster while the
 * test kills or stops brokers (crates/fjord/tests/java_client.rs decides which and when). Writes
 * {@code acked=N consumed=M errors=E} to {@code --progress-file} as it goes; stops producing
 * when {@code --stop-file} appears, then drains and checks: every acknowledged record is in the
 * log exactly once at its acknowledged offset, the consumer saw all of them, no send or poll
 * failed, and the only errors the clients logged are retriable ones.
 */
final class FailoverScenario {
    private FailoverScenario() {}

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String topic = a.get("topic", "java-failover");
        int partitions = a.getInt("partitions", 3);
        Path progress = Path.of(a.required("progress-file"));
        Path stopFile = Path.of(a.required("stop-file"));
        int intervalMs = a.getInt("interval-ms", 4);
        try (Admin admin = Clients.admin(bs)) {
            Clients.createTopic(admin, topic, partitions, (short) 3, Map.of("min.insync.replicas", "2"));
        }

        // The producer: paced sends, each acknowledgement noted with its offset.
        Properties pp = Clients.producerProps(bs, "java-failover-producer");
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 120_000);
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        Map<String, String> ackedAt = new ConcurrentHashMap<>(); // "p@offset" -> value
        List<String> sendErrors = new CopyOnWriteArrayList<>();
        AtomicInteger sent = new AtomicInteger();
        AtomicInteger acked = new AtomicInteger();
        java.util.concurrent.atomic.AtomicIntegerArray ackedByPartition =
                new java.util.concurrent.atomic.AtomicIntegerArray(partitions);

        // The consumer: a classic group, commits after each poll.
        Properties cp = Clients.consumerProps(bs, "java-failover-consumer");
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, "java-failover");
        cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500);
        Map<String, String> consumedAt = new ConcurrentHashMap<>();
        AtomicInteger consumedTotal = new AtomicInteger();
        List<String> pollErrors = new CopyOnWriteArrayList<>();
        AtomicLong lastConsumed = new AtomicLong(System.nanoTime());
        StopFlag stopConsumer = new StopFlag();
        Thread consumerThread = new Thread(() -> {
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                c.subscribe(List.of(topic));
                while (!stopConsumer.set) {
                    try {
                        var records = c.poll(Duration.ofMillis(100));
                        for (ConsumerRecord<String, String> rec : records) {
                            consumedAt.put(rec.partition() + "@" + rec.offset(), rec.value());
                            consumedTotal.incrementAndGet();
                            lastConsumed.set(System.nanoTime());
                        }
                        if (!records.isEmpty()) {
                            c.commitSync(Duration.ofSeconds(30));
                        }
                    } catch (Exception e) {
                        // A Kafka user's loop would log and go on; we note it (it must not happen).
                        pollErrors.add(Report.describe(e));
                    }
                }
            }
        }, "consumer");
        consumerThread.start();

        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> producer = Clients.producer(pp)) {
            int i = 0;
            long lastProgress = 0;
            while (!Files.exists(stopFile)) {
                String value = "r-" + i;
                producer.send(new ProducerRecord<>(topic, "k" + (i % 97), value), (m, e) -> {
                    if (e != null) {
                        sendErrors.add(value + ": " + Report.describe(e));
                    } else {
                        ackedAt.put(m.partition() + "@" + m.offset(), value);
                        acked.incrementAndGet();
                        ackedByPartition.incrementAndGet(m.partition());
                    }
                });
                sent.incrementAndGet();
                i++;
                long now = System.nanoTime();
                if (now - lastProgress > 100_000_000L) {
                    writeProgress(progress, acked.get(), consumedAt.size(), sendErrors.size() + pollErrors.size(),
                            ackedByPartition);
                    lastProgress = now;
                }
                Thread.sleep(intervalMs);
                if (System.nanoTime() - t0 > Duration.ofSeconds(150).toNanos()) {
                    r.fail("the stop file %s did not appear within 150 s", stopFile);
                    break;
                }
            }
            producer.flush();
            Map<String, Object> metrics = new TreeMap<>();
            producer.metrics().forEach((name, metric) -> {
                if (name.group().equals("producer-metrics")
                        && List.of("record-retry-total", "record-error-total").contains(name.name())) {
                    metrics.put(name.name(), metric.metricValue());
                }
            });
            r.put("producer_metrics", metrics);
        }
        // Drain: the consumer catches up with everything acknowledged.
        boolean caughtUp = Clients.waitFor(Duration.ofSeconds(60),
                () -> consumedAt.keySet().containsAll(ackedAt.keySet()));
        writeProgress(progress, acked.get(), consumedAt.size(), sendErrors.size() + pollErrors.size(),
                            ackedByPartition);
        stopConsumer.set = true;
        consumerThread.join(60_000);

        r.put("sent", sent.get());
        r.put("acked", acked.get());
        r.put("send_errors", sendErrors.size());
        r.put("consumed_distinct", consumedAt.size());
        r.put("consumed_total", consumedTotal.get());
        r.put("poll_errors", pollErrors.size());
        r.check(sendErrors.isEmpty(), "%d sends failed, first: %s", sendErrors.size(),
                sendErrors.isEmpty() ? "" : sendErrors.get(0));
        r.check(pollErrors.isEmpty(), "%d polls or commits failed, first: %s", pollErrors.size(),
                pollErrors.isEmpty() ? "" : pollErrors.get(0));
        r.check(acked.get() == sent.get(), "%d of %d records acknowledged", acked.get(), sent.get());
        int notConsumed = 0;
        for (String k : ackedAt.keySet()) {
            if (!ackedAt.get(k).equals(consumedAt.get(k))) {
                notConsumed++;
            }
        }
        r.put("acked_not_consumed", notConsumed);
        r.check(caughtUp && notConsumed == 0, "the group consumer did not see %d acknowledged records", notConsumed);

        // The log itself: every acknowledged record at its offset, each value once.
        List<ConsumerRecord<String, String>> log = Clients.readAll(bs, topic, Duration.ofSeconds(60));
        Map<String, String> logAt = new HashMap<>();
        Map<String, Integer> valueCount = new HashMap<>();
        for (ConsumerRecord<String, String> c : log) {
            logAt.put(c.partition() + "@" + c.offset(), c.value());
            valueCount.merge(c.value(), 1, Integer::sum);
        }
        int lost = 0;
        for (Map.Entry<String, String> e : ackedAt.entrySet()) {
            if (!e.getValue().equals(logAt.get(e.getKey()))) {
                lost++;
            }
        }
        long duplicated = valueCount.values().stream().filter(n -> n > 1).count();
        r.put("log_records", log.size());
        r.put("lost", lost);
        r.put("duplicated_in_log", duplicated);
        r.check(lost == 0, "%d acknowledged records are not in the log at their offsets", lost);
        r.check(duplicated == 0, "%d values are in the log more than once (idempotence)", duplicated);
        r.check(log.size() == acked.get(), "the log has %d records, %d were acknowledged", log.size(), acked.get());

        // What the clients logged: every error code must be a retriable one.
        Pattern code = Pattern.compile("\\b(?:error|Error|error code|errorCode)[ =:]+([A-Z][A-Z_]{3,})\\b");
        Set<String> codes = new TreeSet<>();
        Set<String> nonRetriable = new TreeSet<>();
        for (String line : Main.logLines()) {
            Matcher m = code.matcher(line);
            while (m.find()) {
                String name = m.group(1);
                Errors err;
                try {
                    err = Errors.valueOf(name);
                } catch (IllegalArgumentException e) {
                    continue;
                }
                if (err == Errors.NONE) {
                    continue;
                }
                codes.add(name);
                if (!(err.exception() instanceof RetriableException)) {
                    nonRetriable.add(name);
                }
            }
        }
        r.put("logged_error_codes", new ArrayList<>(codes));
        r.put("non_retriable_error_codes", new ArrayList<>(nonRetriable));
        r.check(nonRetriable.isEmpty(), "the clients logged non-retriable errors %s", nonRetriable);
        r.put("partitions", partitions);
        Map<Integer, Integer> perPartition = new TreeMap<>();
        for (String k : ackedAt.keySet()) {
            perPartition.merge(Integer.parseInt(k.substring(0, k.indexOf('@'))), 1, Integer::sum);
        }
        r.put("acked_per_partition", perPartition);
    }

    static final class StopFlag {
        volatile boolean set;
    }

    /** {@code acked=N consumed=M errors=E p0=A0 p1=A1 ...} (acknowledged per partition). */
    static void writeProgress(Path file, int acked, int consumed, int errors,
            java.util.concurrent.atomic.AtomicIntegerArray byPartition) {
        try {
            Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
            StringBuilder sb = new StringBuilder("acked=" + acked + " consumed=" + consumed + " errors=" + errors);
            for (int p = 0; p < byPartition.length(); p++) {
                sb.append(" p").append(p).append('=').append(byPartition.get(p));
            }
            Files.writeString(tmp, sb.append('\n').toString(), StandardCharsets.UTF_8);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (java.io.IOException e) {
            // the test waits for the next write
        }
    }
}
