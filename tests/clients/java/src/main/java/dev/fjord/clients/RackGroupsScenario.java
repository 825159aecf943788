package dev.fjord.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.CloseOptions.GroupMembershipOperation;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

/**
 * Rack-aware consumer groups (KIP-881 for classic groups, the broker's assignor for KIP-848
 * groups) against a cluster with a broker in each of racks a, b, c: an RF-1 topic of six
 * partitions, placed by the brokers ({@code --placement broker}) or on the brokers of racks a,
 * b, c, a, b, c ({@code --placement explicit}, a manual assignment), and, per round
 * ({@code --rounds}, each {@code classic/ASSIGNOR} or {@code consumer[/ASSIGNOR]}, without an
 * assignor the broker's default), three consumers in one new group with {@code client.rack} a,
 * b and c. A round waits until every partition is owned once, each consumer owns two, as many
 * as any balanced assignment can have are owned in a rack holding a replica (all six when each
 * rack holds two), and the broker describes the group as stable with that assignment. Replica
 * racks come from the Admin client (describeTopics, describeCluster) and are checked against
 * what a consumer's own metadata shows ({@code partitionsFor}), which is what a classic group's
 * leader assigns from.
 */
final class RackGroupsScenario {
    private RackGroupsScenario() {}

    static final String[] RACKS = {"a", "b", "c"};
    static final Duration ROUND_TIMEOUT = Duration.ofSeconds(45);
    static final String RUN = Long.toHexString(System.currentTimeMillis() & 0xffffff);

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String topic = a.get("topic", "java-rack-groups");
        int partitions = a.getInt("partitions", 6);
        String placement = a.get("placement", "broker");
        String rounds = a.get("rounds", "classic/range,classic/cooperative-sticky,consumer");
        if (partitions % RACKS.length != 0) {
            throw new IllegalArgumentException("--partitions must be a multiple of " + RACKS.length);
        }
        try (Admin admin = Clients.admin(bs)) {
            Map<String, Integer> rackNode = new TreeMap<>();
            for (Node n : admin.describeCluster().nodes().get(30, TimeUnit.SECONDS)) {
                rackNode.put(n.hasRack() ? n.rack() : "", n.id());
            }
            r.put("broker_racks", rackNode);
            r.check(rackNode.keySet().containsAll(List.of(RACKS)), "brokers in racks %s, expected one in each of %s",
                    rackNode, List.of(RACKS));
            r.put("placement", placement);
            if (placement.equals("explicit")) {
                // Partition p on the broker of rack a, b, c, a, ...: never one rack per range.
                Map<Integer, List<Integer>> assignment = new TreeMap<>();
                for (int p = 0; p < partitions; p++) {
                    assignment.put(p, List.of(rackNode.get(RACKS[p % RACKS.length])));
                }
                admin.createTopics(List.of(new NewTopic(topic, assignment))).all().get(60, TimeUnit.SECONDS);
            } else {
                Clients.createTopic(admin, topic, partitions, (short) 1, Map.of());
            }
            Map<Integer, Set<String>> replicaRacks = replicaRacks(admin, topic, partitions);
            r.put("replica_racks", replicaRacks);
            Map<String, Integer> perRack = new TreeMap<>();
            replicaRacks.values().forEach(rs -> rs.forEach(rk -> perRack.merge(rk, 1, Integer::sum)));
            r.put("partitions_per_rack", perRack);
            // The most a balanced assignment can have local (all six when each rack holds two).
            int maxLocal = maxLocal(replicaRacks, partitions);
            r.put("max_local", maxLocal);
            // Would a rack-unaware range assignor look rack-local by chance on this layout?
            r.put("contiguous_ranges_rack_local", contiguousRangesLocal(replicaRacks, partitions));
            // What the consumer's own metadata shows (a classic group's leader assigns from it).
            Map<Integer, Set<String>> seen = consumerReplicaRacks(bs, topic, replicaRacks);
            r.check(seen.equals(replicaRacks), "the consumer's metadata shows replica racks %s, the admin client %s",
                    seen, replicaRacks);

            List<Object> results = new ArrayList<>();
            for (String round : rounds.split(",")) {
                if (round.isEmpty()) {
                    continue;
                }
                Map<String, Object> res = new LinkedHashMap<>();
                res.put("round", round);
                r.step(round, () -> {
                    round(bs, admin, topic, partitions, round, replicaRacks, maxLocal, r, res);
                    return null;
                });
                results.add(res);
            }
            r.put("rounds", results);
        }
    }

    static void round(String bs, Admin admin, String topic, int partitions, String round,
            Map<Integer, Set<String>> replicaRacks, int maxLocal, Report r, Map<String, Object> res)
            throws Exception {
        String[] pa = round.split("/", 2);
        String protocol = pa[0];
        String assignor = pa.length > 1 ? pa[1] : null;
        // New groups on every run: the members of an earlier run stay until their sessions
        // expire (they close without leaving).
        String group = "java-rack-" + round.replace('/', '-') + "-" + RUN;
        List<Member> members = new ArrayList<>();
        for (String rack : RACKS) {
            String name = group + "-" + rack;
            members.add(new Member(name, topic,
                    GroupsScenario.memberProps(bs, protocol, assignor, group, name, rack, null)));
        }
        long t0 = System.nanoTime();
        members.forEach(Member::start);
        String[] last = {null};
        try {
            boolean ok = Clients.waitFor(ROUND_TIMEOUT,
                    () -> (last[0] = notRackLocal(members, partitions, replicaRacks, maxLocal, admin, group)) == null);
            res.put("ms", (System.nanoTime() - t0) / 1_000_000);
            Map<String, Object> owned = new LinkedHashMap<>();
            int local = 0;
            for (int i = 0; i < RACKS.length; i++) {
                List<Integer> ps = Clients.partitionList(members.get(i).assignment);
                owned.put(RACKS[i], ps);
                for (int p : ps) {
                    if (replicaRacks.getOrDefault(p, Set.of()).contains(RACKS[i])) {
                        local++;
                    }
                }
            }
            res.put("owned", owned);
            res.put("local", local);
            r.check(ok, "%s: within %s the group did not settle on a balanced assignment with every partition it "
                    + "can owned in a rack holding a replica: %s; owned by rack %s, replica racks %s", round,
                    ROUND_TIMEOUT, last[0], owned, replicaRacks);
        } finally {
            for (Member m : members) {
                m.stop = true;
            }
            for (Member m : members) {
                m.join();
            }
        }
        for (Member m : members) {
            r.check(m.error == null, "%s: %s failed: %s", round, m.name, Report.describe(m.error));
        }
    }

    /**
     * One consumer on its own thread: subscribe, poll, note its assignment. It closes without
     * leaving the group ({@code REMAIN_IN_GROUP}; the group is dropped with the round): were the
     * three to leave one after the other, the broker would hand a leaver's partitions to a
     * consumer that is closing, and kafka-clients 4.4.0's KIP-848 consumer fails its close
     * ("PartitionsAssignedEvent could not be completed before the consumer closed"), which is
     * not what the scenario is about.
     */
    static final class Member {
        final String name;
        final String topic;
        final Properties props;
        volatile Set<TopicPartition> assignment = Set.of();
        volatile boolean stop;
        volatile Throwable error;
        private final Thread thread;

        Member(String name, String topic, Properties props) {
            this.name = name;
            this.topic = topic;
            this.props = props;
            this.thread = new Thread(this::loop, name);
        }

        void start() {
            thread.start();
        }

        private void loop() {
            KafkaConsumer<String, String> c = null;
            try {
                c = new KafkaConsumer<>(props);
                c.subscribe(List.of(topic));
                while (!stop) {
                    c.poll(Duration.ofMillis(100));
                    assignment = Set.copyOf(c.assignment());
                }
            } catch (Throwable t) {
                error = t;
            } finally {
                if (c != null) {
                    try {
                        c.close(CloseOptions.groupMembershipOperation(GroupMembershipOperation.REMAIN_IN_GROUP)
                                .withTimeout(Duration.ofSeconds(30)));
                    } catch (Throwable t) {
                        if (error == null) {
                            error = t;
                        }
                    }
                }
            }
        }

        void join() throws InterruptedException {
            stop = true;
            thread.join(60_000);
            if (thread.isAlive()) {
                throw new IllegalStateException(name + " did not close within 60 s");
            }
        }
    }

    /**
     * Null once every partition is owned once, each consumer owns its share, as many partitions
     * as possible (under that balance) are owned in a rack holding a replica, and the broker
     * describes the group as stable with the same assignment; else what is still missing.
     */
    static String notRackLocal(List<Member> members, int partitions,
            Map<Integer, Set<String>> replicaRacks, int maxLocal, Admin admin, String group) {
        Set<Integer> seen = new TreeSet<>();
        Map<String, List<Integer>> byClient = new HashMap<>();
        int local = 0;
        for (int i = 0; i < members.size(); i++) {
            Member m = members.get(i);
            if (m.error != null) {
                return m.name + " failed: " + Report.describe(m.error);
            }
            List<Integer> ps = Clients.partitionList(m.assignment);
            byClient.put(m.name, ps);
            for (int p : ps) {
                if (!seen.add(p)) {
                    return "partition " + p + " is owned twice";
                }
                if (replicaRacks.getOrDefault(p, Set.of()).contains(RACKS[i])) {
                    local++;
                }
            }
            if (ps.size() != partitions / members.size()) {
                return m.name + " owns " + ps;
            }
        }
        if (seen.size() != partitions) {
            return "only partitions " + seen + " are owned";
        }
        if (local != maxLocal) {
            return local + " partitions owned in a rack holding a replica, " + maxLocal + " possible";
        }
        // The broker's view: stable, and the assignment the consumers hold.
        try {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
                    .get(10, TimeUnit.SECONDS).get(group);
            if (d.groupState() != GroupState.STABLE) {
                return "group state " + d.groupState();
            }
            Map<String, List<Integer>> described = new HashMap<>();
            for (MemberDescription md : d.members()) {
                described.put(md.clientId(), Clients.partitionList(md.assignment().topicPartitions()));
            }
            if (!described.equals(byClient)) {
                return "the broker describes assignment " + described + ", the consumers hold " + byClient;
            }
        } catch (Exception e) {
            return "describeConsumerGroups: " + Report.describe(e);
        }
        return null;
    }

    /**
     * The most partitions that can be owned in a rack holding one of their replicas when each of
     * the consumers (one per rack in {@link #RACKS}) owns {@code partitions / RACKS.length}: a
     * maximum matching of partitions to consumer slots (Kuhn's augmenting paths).
     */
    static int maxLocal(Map<Integer, Set<String>> replicaRacks, int partitions) {
        int quota = partitions / RACKS.length;
        String[] slotRack = new String[quota * RACKS.length];
        for (int i = 0; i < slotRack.length; i++) {
            slotRack[i] = RACKS[i / quota];
        }
        int[] slotOwner = new int[slotRack.length];
        java.util.Arrays.fill(slotOwner, -1);
        int matched = 0;
        for (int p = 0; p < partitions; p++) {
            if (augment(p, replicaRacks, slotRack, slotOwner, new boolean[slotRack.length])) {
                matched++;
            }
        }
        return matched;
    }

    private static boolean augment(int p, Map<Integer, Set<String>> replicaRacks, String[] slotRack,
            int[] slotOwner, boolean[] visited) {
        for (int s = 0; s < slotRack.length; s++) {
            if (visited[s] || !replicaRacks.getOrDefault(p, Set.of()).contains(slotRack[s])) {
                continue;
            }
            visited[s] = true;
            if (slotOwner[s] < 0 || augment(slotOwner[s], replicaRacks, slotRack, slotOwner, visited)) {
                slotOwner[s] = p;
                return true;
            }
        }
        return false;
    }

    /** Partition → the racks of its replicas, once every partition has a leader. */
    static Map<Integer, Set<String>> replicaRacks(Admin admin, String topic, int partitions) throws Exception {
        Map<Integer, String> nodeRack = new HashMap<>();
        for (Node n : admin.describeCluster().nodes().get(30, TimeUnit.SECONDS)) {
            nodeRack.put(n.id(), n.hasRack() ? n.rack() : "");
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            TopicDescription d;
            try {
                d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            } catch (ExecutionException e) {
                // The broker asked may not know the new topic yet.
                if (!(e.getCause() instanceof UnknownTopicOrPartitionException) || System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(100);
                continue;
            }
            Map<Integer, Set<String>> out = new TreeMap<>();
            for (TopicPartitionInfo p : d.partitions()) {
                if (p.leader() != null && !p.leader().isEmpty()) {
                    Set<String> rs = new TreeSet<>();
                    for (Node n : p.replicas()) {
                        rs.add(nodeRack.getOrDefault(n.id(), "?"));
                    }
                    out.put(p.partition(), rs);
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

    /** Partition → the racks of its replicas, as a consumer's partitionsFor shows them. */
    static Map<Integer, Set<String>> consumerReplicaRacks(String bs, String topic, Map<Integer, Set<String>> want)
            throws InterruptedException {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Clients.consumerProps(bs, "java-rack-metadata"))) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (true) {
                Map<Integer, Set<String>> seen = new TreeMap<>();
                for (PartitionInfo p : c.partitionsFor(topic, Duration.ofSeconds(30))) {
                    Set<String> rs = new TreeSet<>();
                    for (Node n : p.replicas()) {
                        rs.add(n.hasRack() ? n.rack() : "");
                    }
                    seen.put(p.partition(), rs);
                }
                // Its metadata may come from a broker that learns of the topic a little later.
                if (seen.equals(want) || System.nanoTime() > deadline) {
                    return seen;
                }
                Thread.sleep(100);
            }
        }
    }

    /**
     * Whether each of the contiguous ranges (0-1, 2-3, 4-5) has a rack holding a replica of all
     * its partitions: then a rack-unaware range assignor could look rack-local by chance.
     */
    static boolean contiguousRangesLocal(Map<Integer, Set<String>> replicaRacks, int partitions) {
        int per = partitions / RACKS.length;
        for (int start = 0; start < partitions; start += per) {
            Set<String> common = null;
            for (int p = start; p < start + per; p++) {
                Set<String> rs = new TreeSet<>(replicaRacks.getOrDefault(p, Set.of()));
                if (common == null) {
                    common = rs;
                } else {
                    common.retainAll(rs);
                }
            }
            if (common == null || common.isEmpty()) {
                return false;
            }
        }
        return true;
    }
}
