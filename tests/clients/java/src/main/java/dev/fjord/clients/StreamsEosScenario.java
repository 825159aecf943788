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
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;

/**
 * Kafka Streams with {@code processing.guarantee=exactly_once_v2} while the test kills brokers
 * (crates/fjord/tests/transactions_clients.rs): input → mapValues → output, and a count per key
 * (a state store with its changelog) → counts. An idempotent producer feeds the input until
 * {@code --stop-file} appears; {@code --progress-file} gets {@code produced=N output=M
 * coordinator=C} (output read with read_committed; C is the transaction coordinator of the
 * app's transactional ids, from DescribeTransactions). At the end: the output read_committed
 * holds every input record transformed exactly once, and the last count of each key equals
 * the number of inputs with that key.
 */
final class StreamsEosScenario {
    private StreamsEosScenario() {}

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String app = a.get("application-id", "java-streams-eos");
        String in = app + "-in";
        String out = app + "-out";
        String counts = app + "-counts";
        int partitions = a.getInt("partitions", 3);
        short rf = (short) a.getInt("replication-factor", 3);
        int keys = a.getInt("keys", 50);
        int intervalMs = a.getInt("interval-ms", 5);
        Path progress = Path.of(a.required("progress-file"));
        Path stopFile = Path.of(a.required("stop-file"));
        Path stateDir = Files.createTempDirectory("fjord-streams-");
        try (Admin admin = Clients.admin(bs)) {
            for (String t : List.of(in, out, counts)) {
                Clients.createTopic(admin, t, partitions, rf, Map.of("min.insync.replicas", rf > 1 ? "2" : "1"));
            }
        }

        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> src = b.stream(in, Consumed.with(Serdes.String(), Serdes.String()));
        src.mapValues(v -> v.replace("in-", "out-")).to(out, Produced.with(Serdes.String(), Serdes.String()));
        src.groupByKey().count().toStream().to(counts, Produced.with(Serdes.String(), Serdes.Long()));
        Properties sp = new Properties();
        sp.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        sp.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bs);
        sp.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        sp.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, (int) rf);
        sp.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        sp.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        sp.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        sp.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        sp.put(StreamsConfig.producerPrefix(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG), 120_000);
        sp.put(StreamsConfig.producerPrefix(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG), 10_000);
        sp.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), 30_000);
        sp.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10_000);
        sp.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1_000);
        List<String> streamErrors = new CopyOnWriteArrayList<>();
        List<String> states = new CopyOnWriteArrayList<>();
        KafkaStreams streams = new KafkaStreams(b.build(), sp);
        streams.setUncaughtExceptionHandler(e -> {
            streamErrors.add(Report.describe(e));
            // A killed broker can fence a task's producer (a coordinator failover, a timeout):
            // the thread is replaced, as an application would configure it.
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .REPLACE_THREAD;
        });
        streams.setStateListener((n, o) -> states.add(n.toString()));
        streams.start();

        // The output, read_committed, as it grows.
        Map<String, Integer> outSeen = new ConcurrentHashMap<>();
        AtomicInteger outTotal = new AtomicInteger();
        FailoverScenario.StopFlag stopReader = new FailoverScenario.StopFlag();
        Thread reader = new Thread(() -> {
            Properties cp = Clients.consumerProps(bs, "java-streams-reader");
            cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                List<TopicPartition> tps = new ArrayList<>();
                for (int i = 0; i < partitions; i++) {
                    tps.add(new TopicPartition(out, i));
                }
                c.assign(tps);
                c.seekToBeginning(tps);
                while (!stopReader.set) {
                    try {
                        for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(200))) {
                            outSeen.merge(rec.value(), 1, Integer::sum);
                            outTotal.incrementAndGet();
                        }
                    } catch (Exception e) {
                        // a broker is down: poll again
                    }
                }
            }
        }, "output-reader");
        reader.start();

        // The coordinator of the app's transactional ids, for the test to kill.
        AtomicInteger coordinator = new AtomicInteger(-1);
        FailoverScenario.StopFlag stopWatcher = new FailoverScenario.StopFlag();
        Thread watcher = new Thread(() -> {
            try (Admin admin = Clients.admin(bs)) {
                while (!stopWatcher.set) {
                    try {
                        for (TransactionListing l : admin.listTransactions().all().get(10, TimeUnit.SECONDS)) {
                            if (l.transactionalId().startsWith(app)) {
                                coordinator.set(admin.describeTransactions(List.of(l.transactionalId()))
                                        .description(l.transactionalId()).get(10, TimeUnit.SECONDS).coordinatorId());
                                break;
                            }
                        }
                        Thread.sleep(300);
                    } catch (InterruptedException e) {
                        return;
                    } catch (Exception e) {
                        // a broker is down: ask again
                    }
                }
            }
        }, "coordinator-watcher");
        watcher.setDaemon(true);
        watcher.start();

        Properties pp = Clients.producerProps(bs, "java-streams-input");
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 120_000);
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        Map<String, Integer> perKey = new HashMap<>();
        List<String> sendErrors = new CopyOnWriteArrayList<>();
        AtomicInteger acked = new AtomicInteger();
        int sent = 0;
        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> p = Clients.producer(pp)) {
            long lastProgress = 0;
            while (!Files.exists(stopFile)) {
                String key = "k" + (sent % keys);
                String v = "in-" + sent;
                p.send(new ProducerRecord<>(in, key, v), (m, e) -> {
                    if (e != null) {
                        sendErrors.add(v + ": " + Report.describe(e));
                    } else {
                        acked.incrementAndGet();
                    }
                });
                perKey.merge(key, 1, Integer::sum);
                sent++;
                long now = System.nanoTime();
                if (now - lastProgress > 200_000_000L) {
                    writeProgress(progress, acked.get(), outSeen.size(), coordinator.get(), streamErrors.size());
                    lastProgress = now;
                }
                Thread.sleep(intervalMs);
                if (now - t0 > Duration.ofSeconds(240).toNanos()) {
                    r.fail("the stop file %s did not appear within 240 s", stopFile);
                    break;
                }
            }
            p.flush();
        }
        final int total = sent;
        boolean drained = Clients.waitFor(Duration.ofSeconds(120), () -> {
            writeProgress(progress, acked.get(), outSeen.size(), coordinator.get(), streamErrors.size());
            return outSeen.size() >= total;
        });
        stopReader.set = true;
        reader.join(30_000);
        stopWatcher.set = true;
        streams.close(Duration.ofSeconds(30));

        r.put("sent", total);
        r.put("acked", acked.get());
        r.put("send_errors", sendErrors.size());
        r.check(sendErrors.isEmpty(), "%d input sends failed, first: %s", sendErrors.size(),
                sendErrors.isEmpty() ? "" : sendErrors.get(0));
        r.put("stream_thread_errors", streamErrors);
        r.put("states", new ArrayList<>(new TreeSet<>(states)));

        // The whole output, read_committed from the start.
        List<ConsumerRecord<String, String>> log = Clients.readAll(bs, out, Duration.ofSeconds(60), "read_committed");
        Map<String, Integer> seen = new HashMap<>();
        log.forEach(c -> seen.merge(c.value(), 1, Integer::sum));
        int missing = 0;
        for (int i = 0; i < total; i++) {
            if (!seen.containsKey("out-" + i)) {
                missing++;
            }
        }
        long dup = seen.values().stream().filter(n -> n > 1).count();
        r.put("drained", drained);
        r.put("output_read_committed", log.size());
        r.put("output_missing", missing);
        r.put("output_duplicates", dup);
        r.put("output_seen_while_running", outTotal.get());
        r.check(missing == 0, "%d input records missing from the output (read_committed)", missing);
        r.check(dup == 0 && log.size() == total, "output read_committed: %d records for %d inputs, %d duplicated",
                log.size(), total, dup);
        int ru = Clients.readAll(bs, out, Duration.ofSeconds(60), "read_uncommitted").size();
        r.put("output_read_uncommitted", ru);

        // The last count per key (read_committed) equals the inputs with that key.
        Properties cp = Clients.consumerProps(bs, "java-streams-counts");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
                org.apache.kafka.common.serialization.LongDeserializer.class.getName());
        Map<String, Long> lastCount = new HashMap<>();
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(counts, i));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<String, Long> rec : c.poll(Duration.ofMillis(200))) {
                    lastCount.put(rec.key(), rec.value());
                }
                boolean done = true;
                for (TopicPartition tp : tps) {
                    done &= c.position(tp) >= end.get(tp);
                }
                if (done) {
                    break;
                }
            }
        }
        int wrong = 0;
        List<String> examples = new ArrayList<>();
        for (Map.Entry<String, Integer> e : perKey.entrySet()) {
            Long got = lastCount.get(e.getKey());
            if (got == null || got.longValue() != e.getValue()) {
                wrong++;
                if (examples.size() < 5) {
                    examples.add(e.getKey() + "=" + got + " want " + e.getValue());
                }
            }
        }
        r.put("count_keys", lastCount.size());
        r.put("count_wrong", wrong);
        r.check(wrong == 0, "%d keys have a wrong final count: %s", wrong, examples);
    }

    static void writeProgress(Path file, int produced, int output, int coordinator, int errors) {
        try {
            Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
            Files.writeString(tmp, "produced=" + produced + " output=" + output + " coordinator=" + coordinator
                    + " errors=" + errors + "\n", StandardCharsets.UTF_8);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (java.io.IOException e) {
            // the test waits for the next write
        }
    }
}
