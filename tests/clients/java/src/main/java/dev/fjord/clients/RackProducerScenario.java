package dev.fjord.clients;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.utils.Utils;

/**
 * AZ-local produce with the Java client's own rack-aware partitioner (KIP-1123: producer configs
 * {@code client.rack} and {@code partitioner.rack.aware=true}, in kafka-clients 4.4.0): against
 * a cluster whose brokers are in racks, unkeyed records go only to partitions whose leader is in
 * the producer's rack, keyed records still go by murmur2 of the key, and the same producer
 * without {@code partitioner.rack.aware} spreads over partitions led elsewhere too (so the
 * config, not chance, keeps records in the rack). Leaders and racks come from the Admin client,
 * that is from Fjord's Metadata and DescribeCluster answers.
 */
final class RackProducerScenario {
    private RackProducerScenario() {}

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String topic = a.get("topic", "java-rack-aware");
        String rack = a.required("rack");
        int partitions = a.getInt("partitions", 6);
        int n = a.getInt("records", 600);
        r.put("rack", rack);

        Map<Integer, String> leaderRack;
        try (Admin admin = Clients.admin(bs)) {
            Clients.createTopic(admin, topic, partitions, (short) 3, Map.of());
            leaderRack = leaderRacks(admin, topic, partitions);
        }
        TreeSet<Integer> inRack = new TreeSet<>();
        leaderRack.forEach((p, rk) -> {
            if (rack.equals(rk)) {
                inRack.add(p);
            }
        });
        r.put("leader_racks", new TreeMap<>(leaderRack));
        r.put("in_rack", new ArrayList<>(inRack));
        r.check(!inRack.isEmpty() && inRack.size() < partitions,
                "rack %s should lead some partitions, not all: %s", rack, leaderRack);

        // Small batches: the sticky partition switches after every batch.size bytes, so the
        // records visit many partitions.
        Properties p = Clients.producerProps(bs, "java-rack-producer,fjord_az=" + rack);
        p.put(ProducerConfig.CLIENT_RACK_CONFIG, rack);
        p.put(ProducerConfig.PARTITIONER_RACK_AWARE_CONFIG, true);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 512);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        Map<Integer, Integer> rackAware = r.step("rack-aware unkeyed", () -> send(p, topic, n));
        r.put("rack_aware_partitions", rackAware);
        if (rackAware != null) {
            r.check(inRack.containsAll(rackAware.keySet()),
                    "unkeyed records went to partitions %s, not only to %s (led in rack %s)",
                    rackAware.keySet(), inRack, rack);
            r.check(rackAware.values().stream().mapToInt(Integer::intValue).sum() == n,
                    "acknowledged %s, expected %d", rackAware, n);
        }

        // Keyed records: Kafka's key hash, whatever the rack.
        Integer keyedMismatches = r.step("rack-aware keyed", () -> {
            int bad = 0;
            try (KafkaProducer<String, String> producer = Clients.producer(p)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                List<String> keys = new ArrayList<>();
                for (int i = 0; i < 200; i++) {
                    String k = "key-" + i;
                    keys.add(k);
                    acks.add(producer.send(new ProducerRecord<>(topic, k, "v")));
                }
                for (int i = 0; i < keys.size(); i++) {
                    int want = Utils.toPositive(Utils.murmur2(keys.get(i).getBytes(StandardCharsets.UTF_8))) % partitions;
                    if (acks.get(i).get(60, TimeUnit.SECONDS).partition() != want) {
                        bad++;
                    }
                }
            }
            return bad;
        });
        r.put("keyed_mismatches", keyedMismatches);
        r.check(keyedMismatches != null && keyedMismatches == 0,
                "%s keyed records not on their murmur2 partition", keyedMismatches);

        // The control: the same producer without partitioner.rack.aware leaves the rack.
        Properties plain = (Properties) p.clone();
        plain.put(ProducerConfig.PARTITIONER_RACK_AWARE_CONFIG, false);
        plain.put(ProducerConfig.CLIENT_ID_CONFIG, "java-plain-producer");
        Map<Integer, Integer> spread = r.step("default unkeyed", () -> send(plain, topic, n));
        r.put("default_partitions", spread);
        if (spread != null) {
            r.check(!inRack.containsAll(spread.keySet()),
                    "without partitioner.rack.aware the records stayed in %s: %s", inRack, spread);
        }

        // Nothing moved meanwhile (else the checks above compared with stale leaders).
        try (Admin admin = Clients.admin(bs)) {
            Map<Integer, String> after = leaderRacks(admin, topic, partitions);
            r.check(after.equals(leaderRack), "leaders moved during the scenario: %s then %s", leaderRack, after);
        }
    }

    /** Send {@code n} unkeyed records; partition → records acknowledged there. */
    private static Map<Integer, Integer> send(Properties p, String topic, int n) throws Exception {
        Map<Integer, Integer> out = new TreeMap<>();
        try (KafkaProducer<String, String> producer = Clients.producer(p)) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            String value = "x".repeat(100);
            for (int i = 0; i < n; i++) {
                acks.add(producer.send(new ProducerRecord<String, String>(topic, null, value)));
            }
            for (Future<RecordMetadata> f : acks) {
                out.merge(f.get(60, TimeUnit.SECONDS).partition(), 1, Integer::sum);
            }
        }
        return out;
    }

    /** Partition → the rack of its leader, once every partition has a leader. */
    private static Map<Integer, String> leaderRacks(Admin admin, String topic, int partitions) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                    .get(30, TimeUnit.SECONDS).get(topic);
            Map<Integer, String> out = new TreeMap<>();
            for (TopicPartitionInfo p : d.partitions()) {
                if (p.leader() != null && !p.leader().isEmpty()) {
                    out.put(p.partition(), p.leader().hasRack() ? p.leader().rack() : "");
                }
            }
            if (out.size() == partitions) {
                return out;
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(topic + ": not every partition has a leader: " + d);
            }
            Thread.sleep(100);
        }
    }
}
