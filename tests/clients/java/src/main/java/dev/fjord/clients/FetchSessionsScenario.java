package dev.fjord.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * One consumer assigned 64 partitions, kept busy across many incremental fetches (KIP-227):
 * waves of records to changing subsets of partitions, small per-partition fetch sizes (so a
 * partition stays in the session over several fetches), pausing and resuming half the
 * partitions (partitions leave and rejoin the session), an idle stretch, a seek. Every record
 * must arrive exactly once and in order; the client's own fetch-session log shows how many
 * full and incremental fetches it built and whether the broker ever refused a session.
 */
final class FetchSessionsScenario {
    private FetchSessionsScenario() {}

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        int partitions = a.getInt("partitions", 64);
        int waves = a.getInt("waves", 12);
        int perPartition = a.getInt("per-partition", 4);
        String topic = a.get("topic", "java-fetch-sessions");
        try (Admin admin = Clients.admin(bs)) {
            Clients.createTopic(admin, topic, partitions, (short) 1, Map.of());
        }
        List<TopicPartition> all = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            all.add(new TopicPartition(topic, p));
        }
        Properties cp = Clients.consumerProps(bs, "java-fetch-sessions");
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
        cp.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 512);
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
        Properties pp = Clients.producerProps(bs, "java-fetch-sessions-producer");
        // Expected (partition -> offset -> value) from the producer's acknowledgements.
        Map<Integer, TreeMap<Long, String>> expected = new HashMap<>();
        Map<Integer, List<ConsumerRecord<String, String>>> consumed = new HashMap<>();
        int[] total = {0};
        int[] polls = {0};
        try (KafkaProducer<String, String> producer = Clients.producer(pp);
                KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(all);
            consumer.seekToBeginning(all);
            consumer.poll(Duration.ofMillis(200));
            // Waves to changing subsets of the partitions.
            for (int w = 0; w < waves; w++) {
                Set<Integer> chosen = new HashSet<>();
                for (int p = 0; p < partitions; p++) {
                    if (p % waves == w || (p * 7 + w) % 5 == 0) {
                        chosen.add(p);
                    }
                }
                produce(producer, topic, chosen, perPartition, "w" + w, expected);
                if (!pollUntil(consumer, consumed, total, polls, expected, all, Duration.ofSeconds(30), null)) {
                    r.fail("wave %d: consumed %d of %d records within 30 s", w, total[0], count(expected));
                    break;
                }
            }
            // Pause the even partitions: they leave the fetch session; the odd ones go on.
            List<TopicPartition> even = new ArrayList<>();
            List<TopicPartition> odd = new ArrayList<>();
            for (TopicPartition tp : all) {
                (tp.partition() % 2 == 0 ? even : odd).add(tp);
            }
            consumer.pause(even);
            Set<Integer> everyPartition = new HashSet<>();
            for (int p = 0; p < partitions; p++) {
                everyPartition.add(p);
            }
            produce(producer, topic, everyPartition, 2, "paused", expected);
            Set<Integer> fromPaused = new HashSet<>();
            boolean oddDone = pollUntil(consumer, consumed, total, polls, expected, odd, Duration.ofSeconds(30),
                    fromPaused);
            r.check(oddDone, "with the even partitions paused, the odd ones did not catch up within 30 s");
            long idleUntil = System.currentTimeMillis() + 1000;
            while (System.currentTimeMillis() < idleUntil) {
                record(consumer.poll(Duration.ofMillis(100)), consumed, total, polls, fromPaused);
            }
            r.check(fromPaused.isEmpty(), "records from paused partitions %s were returned", fromPaused);
            consumer.resume(even);
            r.check(pollUntil(consumer, consumed, total, polls, expected, all, Duration.ofSeconds(30), null),
                    "after resuming, consumed %d of %d within 30 s", total[0], count(expected));
            // Idle: nothing new, the session stays up through empty incremental fetches.
            int before = total[0];
            long idleEnd = System.currentTimeMillis() + 1500;
            while (System.currentTimeMillis() < idleEnd) {
                record(consumer.poll(Duration.ofMillis(100)), consumed, total, polls, null);
            }
            r.check(total[0] == before, "%d records appeared while nothing was produced", total[0] - before);
            // One record after the idle stretch arrives promptly.
            long t0 = System.nanoTime();
            produce(producer, topic, Set.of(partitions - 1), 1, "late", expected);
            boolean late = pollUntil(consumer, consumed, total, polls, expected, all, Duration.ofSeconds(10), null);
            long lateMs = (System.nanoTime() - t0) / 1_000_000;
            r.check(late, "a record produced after the idle stretch did not arrive within 10 s");
            r.put("late_record_ms", lateMs);

            // Exactly once, in order, with the acknowledged values.
            int dup = 0;
            int wrong = 0;
            for (Map.Entry<Integer, TreeMap<Long, String>> e : expected.entrySet()) {
                List<ConsumerRecord<String, String>> got = consumed.getOrDefault(e.getKey(), List.of());
                Set<Long> offs = new HashSet<>();
                long prev = -1;
                for (ConsumerRecord<String, String> c : got) {
                    if (!offs.add(c.offset())) {
                        dup++;
                    }
                    if (c.offset() <= prev || !c.value().equals(e.getValue().get(c.offset()))) {
                        wrong++;
                    }
                    prev = c.offset();
                }
                r.check(offs.equals(e.getValue().keySet()), "partition %d: consumed offsets %s, acknowledged %s",
                        e.getKey(), summarize(offs), summarize(e.getValue().keySet()));
            }
            r.put("partitions", partitions);
            r.put("produced", count(expected));
            r.put("consumed", total[0]);
            r.put("duplicates", dup);
            r.put("out_of_order_or_wrong", wrong);
            r.put("polls", polls[0]);
            r.check(dup == 0, "%d records consumed twice", dup);
            r.check(wrong == 0, "%d records out of order or with another value than acknowledged", wrong);
            r.check(total[0] == count(expected), "consumed %d records, produced %d", total[0], count(expected));

            // Seek back within one partition: it is read again from there, the rest is not.
            TopicPartition p5 = all.get(5 % partitions);
            long end5 = expected.get(p5.partition()).lastKey() + 1;
            consumer.seek(p5, 2);
            List<Long> reread = new ArrayList<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while (consumer.position(p5) < end5 && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> c : consumer.poll(Duration.ofMillis(100))) {
                    if (c.partition() == p5.partition()) {
                        reread.add(c.offset());
                    } else {
                        r.fail("after seeking partition %d, a record of partition %d arrived", p5.partition(),
                                c.partition());
                    }
                }
            }
            List<Long> want = new ArrayList<>();
            for (long o = 2; o < end5; o++) {
                want.add(o);
            }
            r.check(reread.equals(want), "after seek(%s, 2): read offsets %s, expected %s", p5, reread, want);

            // A position past the end: the broker answers OFFSET_OUT_OF_RANGE within the session
            // and the consumer resets (auto.offset.reset=earliest) and reads the partition again.
            TopicPartition p7 = all.get(7 % partitions);
            long end7 = expected.get(p7.partition()).lastKey() + 1;
            consumer.seek(p7, end7 + 1000);
            List<Long> afterReset = new ArrayList<>();
            deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
            while (afterReset.size() < end7 && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> c : consumer.poll(Duration.ofMillis(100))) {
                    if (c.partition() == p7.partition()) {
                        afterReset.add(c.offset());
                    }
                }
            }
            want = new ArrayList<>();
            for (long o = 0; o < end7; o++) {
                want.add(o);
            }
            r.put("out_of_range_reread", afterReset.size());
            r.check(afterReset.equals(want), "after seek(%s, %d) past the end: read %s, expected a reset to 0 and %s",
                    p7, end7 + 1000, afterReset, want);

            Map<String, Object> metrics = new TreeMap<>();
            consumer.metrics().forEach((name, metric) -> {
                if (name.group().equals("consumer-fetch-manager-metrics") && name.tags().size() == 1
                        && List.of("fetch-total", "records-consumed-total").contains(name.name())) {
                    metrics.put(name.name(), metric.metricValue());
                }
            });
            r.put("consumer_metrics", metrics);
        }
        sessionLog(r);
    }

    /** Counts what the client's FetchSessionHandler logged. */
    static void sessionLog(Report r) {
        int full = 0;
        int closes = 0;
        int incremental = 0;
        int incrementalResponses = 0;
        int sessionErrors = 0;
        int invalid = 0;
        List<String> errorLines = new ArrayList<>();
        for (String line : Main.logLines()) {
            if (line.contains("Built full fetch") && line.contains("epoch=FINAL")) {
                // The close of the session when the consumer closes.
                closes++;
            } else if (line.contains("Built full fetch")) {
                full++;
            } else if (line.contains("Built incremental fetch")) {
                incremental++;
            } else if (line.contains("sent an incremental fetch response")) {
                incrementalResponses++;
            } else if (line.contains("was unable to process the fetch request")) {
                sessionErrors++;
                errorLines.add(line);
            } else if (line.contains("sent an invalid")) {
                invalid++;
                errorLines.add(line);
            }
        }
        r.put("full_fetch_requests", full);
        r.put("incremental_fetch_requests", incremental);
        r.put("session_close_requests", closes);
        r.put("incremental_fetch_responses", incrementalResponses);
        r.put("fetch_session_errors", sessionErrors);
        r.put("invalid_fetch_responses", invalid);
        if (!errorLines.isEmpty()) {
            r.put("fetch_session_error_lines", errorLines.subList(0, Math.min(5, errorLines.size())));
        }
        r.check(sessionErrors == 0, "the broker refused the fetch session %d times: %s", sessionErrors, errorLines);
        r.check(invalid == 0, "the client found %d fetch responses invalid: %s", invalid, errorLines);
        r.check(incremental >= 20, "only %d incremental fetches were built (full: %d)", incremental, full);
        r.check(full <= 2, "%d full fetches were built (a session should last the whole run)", full);
    }

    static void produce(KafkaProducer<String, String> producer, String topic, Set<Integer> partitions, int per,
            String tag, Map<Integer, TreeMap<Long, String>> expected) throws Exception {
        List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
        List<String> values = new ArrayList<>();
        for (int p : partitions) {
            for (int j = 0; j < per; j++) {
                String v = tag + "-p" + p + "-" + j + "-" + "x".repeat(100);
                values.add(v);
                fs.add(producer.send(new ProducerRecord<>(topic, p, "k" + j, v)));
            }
        }
        producer.flush();
        for (int i = 0; i < fs.size(); i++) {
            RecordMetadata m = fs.get(i).get();
            expected.computeIfAbsent(m.partition(), k -> new TreeMap<>()).put(m.offset(), values.get(i));
        }
    }

    /** Polls until every partition in {@code of} has been consumed up to what was acknowledged. */
    static boolean pollUntil(KafkaConsumer<String, String> consumer,
            Map<Integer, List<ConsumerRecord<String, String>>> consumed, int[] total, int[] polls,
            Map<Integer, TreeMap<Long, String>> expected, List<TopicPartition> of, Duration timeout,
            Set<Integer> notFrom) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline) {
            boolean done = true;
            for (TopicPartition tp : of) {
                TreeMap<Long, String> e = expected.get(tp.partition());
                int have = consumed.getOrDefault(tp.partition(), List.of()).size();
                if (e != null && have < e.size()) {
                    done = false;
                    break;
                }
            }
            if (done) {
                return true;
            }
            record(consumer.poll(Duration.ofMillis(100)), consumed, total, polls, notFrom);
        }
        return false;
    }

    /** Adds polled records; with {@code paused} set, records from even partitions are noted. */
    static void record(ConsumerRecords<String, String> records,
            Map<Integer, List<ConsumerRecord<String, String>>> consumed, int[] total, int[] polls,
            Set<Integer> paused) {
        polls[0]++;
        for (ConsumerRecord<String, String> c : records) {
            consumed.computeIfAbsent(c.partition(), k -> new ArrayList<>()).add(c);
            total[0]++;
            if (paused != null && c.partition() % 2 == 0) {
                paused.add(c.partition());
            }
        }
    }

    static int count(Map<Integer, TreeMap<Long, String>> expected) {
        return expected.values().stream().mapToInt(TreeMap::size).sum();
    }

    static String summarize(Set<Long> offsets) {
        if (offsets.isEmpty()) {
            return "[]";
        }
        long min = offsets.stream().min(Long::compare).get();
        long max = offsets.stream().max(Long::compare).get();
        return offsets.size() + " in [" + min + ", " + max + "]";
    }
}
