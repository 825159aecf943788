package dev.fjord.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

/**
 * The Admin client's everyday calls on one broker, with the answers a Kafka user relies on, and
 * its error paths (each must raise the exception Kafka raises).
 */
final class AdminScenario {
    private AdminScenario() {}

    static final long T = 30;

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String ta = "java-admin-a";
        String tb = "java-admin-b";
        try (Admin admin = Clients.admin(bs)) {
            // describeCluster
            int[] nodeId = {-1};
            r.step("describeCluster", () -> {
                DescribeClusterResult d = admin.describeCluster();
                String id = d.clusterId().get(T, TimeUnit.SECONDS);
                Collection<Node> nodes = d.nodes().get(T, TimeUnit.SECONDS);
                Node controller = d.controller().get(T, TimeUnit.SECONDS);
                r.put("cluster", Main.map("cluster_id", id, "nodes", nodes.size(), "controller",
                        controller == null ? null : controller.id()));
                r.check(id != null && !id.isEmpty(), "describeCluster: no cluster id");
                r.check(nodes.size() == 1, "describeCluster: %d nodes, expected 1", nodes.size());
                r.check(controller != null && !controller.isEmpty(), "describeCluster: no controller");
                nodeId[0] = nodes.iterator().next().id();
            });

            // createTopics: partitions, replication factor, configs; validateOnly; explicit assignment.
            Uuid[] idA = {null};
            r.step("createTopics", () -> {
                CreateTopicsResult res = admin.createTopics(List.of(
                        new NewTopic(ta, 3, (short) 1).configs(Map.of("retention.ms", "86400000",
                                "cleanup.policy", "delete", "max.message.bytes", "2000000")),
                        new NewTopic(tb, descending(3, nodeId[0]))));
                res.all().get(T, TimeUnit.SECONDS);
                idA[0] = res.topicId(ta).get();
                r.check(res.numPartitions(ta).get() == 3, "createTopics: numPartitions %d", res.numPartitions(ta).get());
                r.check(res.replicationFactor(ta).get() == 1, "createTopics: replicationFactor %d",
                        res.replicationFactor(ta).get());
                r.check(idA[0] != null && !idA[0].equals(Uuid.ZERO_UUID), "createTopics: topic id %s", idA[0]);
                Config cfg = res.config(ta).get();
                ConfigEntry ret = cfg.get("retention.ms");
                r.check(ret != null && "86400000".equals(ret.value()),
                        "createTopics: the returned configs have retention.ms=%s", ret == null ? null : ret.value());
                r.check(res.numPartitions(tb).get() == 3, "createTopics with an assignment: %d partitions",
                        res.numPartitions(tb).get());
            });
            r.step("createTopics validateOnly", () -> {
                admin.createTopics(List.of(new NewTopic("java-admin-validate", 2, (short) 1)),
                        new CreateTopicsOptions().validateOnly(true)).all().get(T, TimeUnit.SECONDS);
                Set<String> names = admin.listTopics().names().get(T, TimeUnit.SECONDS);
                r.check(!names.contains("java-admin-validate"), "createTopics validateOnly created the topic");
            });

            // listTopics / describeTopics
            r.step("listTopics", () -> {
                Set<String> names = admin.listTopics().names().get(T, TimeUnit.SECONDS);
                r.check(names.containsAll(List.of(ta, tb)), "listTopics: %s lacks %s and %s", names, ta, tb);
            });
            r.step("describeTopics", () -> {
                Map<String, TopicDescription> d = admin.describeTopics(List.of(ta, tb)).allTopicNames()
                        .get(T, TimeUnit.SECONDS);
                TopicDescription da = d.get(ta);
                r.check(da.partitions().size() == 3, "describeTopics: %s has %d partitions", ta, da.partitions().size());
                r.check(!da.isInternal(), "describeTopics: %s is internal", ta);
                r.check(da.topicId().equals(idA[0]), "describeTopics: topic id %s, created as %s", da.topicId(), idA[0]);
                for (TopicPartitionInfo p : da.partitions()) {
                    r.check(p.leader() != null && p.leader().id() == nodeId[0], "describeTopics: %s-%d leader %s", ta,
                            p.partition(), p.leader());
                    r.check(p.replicas().size() == 1 && p.isr().size() == 1, "describeTopics: %s-%d replicas %s isr %s",
                            ta, p.partition(), p.replicas(), p.isr());
                }
                r.check(d.get(tb).partitions().size() == 3, "describeTopics: %s has %d partitions", tb,
                        d.get(tb).partitions().size());
                Map<Uuid, TopicDescription> byId = admin.describeTopics(TopicCollection.ofTopicIds(List.of(idA[0])))
                        .allTopicIds().get(T, TimeUnit.SECONDS);
                r.check(byId.containsKey(idA[0]) && byId.get(idA[0]).name().equals(ta),
                        "describeTopics by id: %s", byId.keySet());
            });

            // describeConfigs / incrementalAlterConfigs
            ConfigResource ra = new ConfigResource(ConfigResource.Type.TOPIC, ta);
            r.step("describeConfigs", () -> {
                Config c = admin.describeConfigs(List.of(ra)).all().get(T, TimeUnit.SECONDS).get(ra);
                ConfigEntry ret = c.get("retention.ms");
                r.check(ret != null && ret.value().equals("86400000")
                        && ret.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                        "describeConfigs: retention.ms %s", ret);
                ConfigEntry seg = c.get("segment.bytes");
                r.check(seg != null && seg.value() != null && seg.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                        && seg.isDefault(), "describeConfigs: segment.bytes %s", seg);
                r.put("topic_config_entries", c.entries().size());
                ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER, Integer.toString(nodeId[0]));
                Config bc = admin.describeConfigs(List.of(broker)).all().get(T, TimeUnit.SECONDS).get(broker);
                r.put("broker_config_entries", bc.entries().size());
                r.check(bc.get("log.segment.bytes") != null, "describeConfigs(BROKER): no log.segment.bytes among %d",
                        bc.entries().size());
            });
            r.step("incrementalAlterConfigs", () -> {
                admin.incrementalAlterConfigs(Map.of(ra, List.of(
                        new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("max.message.bytes", null), AlterConfigOp.OpType.DELETE),
                        new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND))))
                        .all().get(T, TimeUnit.SECONDS);
                Config c = admin.describeConfigs(List.of(ra)).all().get(T, TimeUnit.SECONDS).get(ra);
                r.check("3600000".equals(c.get("retention.ms").value()), "after SET: retention.ms=%s",
                        c.get("retention.ms").value());
                ConfigEntry mmb = c.get("max.message.bytes");
                r.check(mmb.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG && !"2000000".equals(mmb.value()),
                        "after DELETE: max.message.bytes %s", mmb);
                r.check(List.of(c.get("cleanup.policy").value().split(",")).containsAll(List.of("delete", "compact")),
                        "after APPEND: cleanup.policy=%s", c.get("cleanup.policy").value());
                admin.incrementalAlterConfigs(Map.of(ra, List.of(
                        new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.SUBTRACT))))
                        .all().get(T, TimeUnit.SECONDS);
                c = admin.describeConfigs(List.of(ra)).all().get(T, TimeUnit.SECONDS).get(ra);
                r.check("delete".equals(c.get("cleanup.policy").value()), "after SUBTRACT: cleanup.policy=%s",
                        c.get("cleanup.policy").value());
            });
            r.step("invalid config value", () -> {
                Throwable e = failure(admin.incrementalAlterConfigs(Map.of(ra, List.of(new AlterConfigOp(
                        new ConfigEntry("retention.ms", "not-a-number"), AlterConfigOp.OpType.SET)))).all());
                expect(r, "incrementalAlterConfigs retention.ms=not-a-number", e, InvalidConfigurationException.class);
                e = failure(admin.createTopics(List.of(new NewTopic("java-admin-badcfg", 1, (short) 1)
                        .configs(Map.of("cleanup.policy", "sometimes")))).all());
                expect(r, "createTopics cleanup.policy=sometimes", e, InvalidConfigurationException.class);
                e = failure(admin.createTopics(List.of(new NewTopic("java-admin-badcfg", 1, (short) 1)
                        .configs(Map.of("no.such.config", "1")))).all());
                expect(r, "createTopics no.such.config=1", e, InvalidConfigurationException.class);
                Config c = admin.describeConfigs(List.of(ra)).all().get(T, TimeUnit.SECONDS).get(ra);
                r.check("3600000".equals(c.get("retention.ms").value()),
                        "a refused alter changed retention.ms to %s", c.get("retention.ms").value());
            });

            // createPartitions
            r.step("createPartitions", () -> {
                admin.createPartitions(Map.of(ta, NewPartitions.increaseTo(6))).all().get(T, TimeUnit.SECONDS);
                TopicDescription d = admin.describeTopics(List.of(ta)).allTopicNames().get(T, TimeUnit.SECONDS).get(ta);
                r.check(d.partitions().size() == 6, "createPartitions: %d partitions, expected 6", d.partitions().size());
                Throwable e = failure(admin.createPartitions(Map.of(ta, NewPartitions.increaseTo(4))).all());
                expect(r, "createPartitions to fewer partitions", e, InvalidPartitionsException.class);
            });

            // Records for the offset calls: 100 to partition 0, timestamps base + 1000 * i.
            long base = System.currentTimeMillis() - 200_000;
            r.step("produce", () -> {
                try (KafkaProducer<String, String> p = Clients.producer(Clients.producerProps(bs, "java-admin-producer"))) {
                    for (int i = 0; i < 100; i++) {
                        p.send(new ProducerRecord<>(ta, 0, base + 1000L * i, "k" + i, "v" + i));
                    }
                    p.flush();
                }
            });
            TopicPartition a0 = new TopicPartition(ta, 0);
            TopicPartition a1 = new TopicPartition(ta, 1);
            r.step("listOffsets", () -> {
                Map<String, Object> out = new LinkedHashMap<>();
                out.put("earliest", offset(admin, a0, OffsetSpec.earliest()));
                out.put("latest", offset(admin, a0, OffsetSpec.latest()));
                ListOffsetsResult.ListOffsetsResultInfo at = admin.listOffsets(Map.of(a0,
                        OffsetSpec.forTimestamp(base + 50_000 - 500))).partitionResult(a0).get(T, TimeUnit.SECONDS);
                out.put("for_timestamp", Main.map("offset", at.offset(), "timestamp", at.timestamp()));
                ListOffsetsResult.ListOffsetsResultInfo max = admin.listOffsets(Map.of(a0, OffsetSpec.maxTimestamp()))
                        .partitionResult(a0).get(T, TimeUnit.SECONDS);
                out.put("max_timestamp", Main.map("offset", max.offset(), "timestamp", max.timestamp()));
                long after = offset(admin, a0, OffsetSpec.forTimestamp(base + 1_000_000));
                out.put("after_last_timestamp", after);
                out.put("latest_empty_partition", offset(admin, a1, OffsetSpec.latest()));
                r.put("list_offsets", out);
                r.check(out.get("earliest").equals(0L), "listOffsets earliest %s", out.get("earliest"));
                r.check(out.get("latest").equals(100L), "listOffsets latest %s", out.get("latest"));
                r.check(at.offset() == 50 && at.timestamp() == base + 50_000,
                        "listOffsets forTimestamp: offset %d timestamp %d, expected 50 / %d", at.offset(), at.timestamp(),
                        base + 50_000);
                r.check(max.offset() == 99 && max.timestamp() == base + 99_000,
                        "listOffsets maxTimestamp: offset %d timestamp %d", max.offset(), max.timestamp());
                r.check(after == -1, "listOffsets forTimestamp after the last record: %d, expected -1", after);
                r.check(out.get("latest_empty_partition").equals(0L), "listOffsets latest of an empty partition %s",
                        out.get("latest_empty_partition"));
            });

            // deleteRecords
            r.step("deleteRecords", () -> {
                long low = admin.deleteRecords(Map.of(a0, RecordsToDelete.beforeOffset(30))).lowWatermarks().get(a0)
                        .get(T, TimeUnit.SECONDS).lowWatermark();
                long earliest = offset(admin, a0, OffsetSpec.earliest());
                r.put("delete_records", Main.map("low_watermark", low, "earliest_after", earliest));
                r.check(low == 30, "deleteRecords: low watermark %d, expected 30", low);
                r.check(earliest == 30, "listOffsets earliest after deleteRecords: %d", earliest);
                Properties cp = Clients.consumerProps(bs, "java-admin-reader");
                try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                    c.assign(List.of(a0));
                    c.seekToBeginning(List.of(a0));
                    long first = -1;
                    long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
                    while (first < 0 && System.nanoTime() < deadline) {
                        for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(100))) {
                            first = first < 0 ? rec.offset() : first;
                        }
                    }
                    r.check(first == 30, "a consumer from the beginning read offset %d first, expected 30", first);
                }
            });

            // A consumer that assigns its partitions itself commits to a group it never joins,
            // in both group protocols (KIP-848: epoch -1, which Kafka takes while the group has
            // no members).
            r.step("assignCommit", () -> {
                Map<String, Object> out = new TreeMap<>();
                for (String protocol : List.of("classic", "consumer")) {
                    Properties cp = Clients.consumerProps(bs, "java-assign-" + protocol);
                    cp.put(ConsumerConfig.GROUP_ID_CONFIG, "java-assign-commit-" + protocol);
                    cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
                    try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                        c.assign(List.of(a0));
                        c.commitSync(Map.of(a0, new OffsetAndMetadata(31)), Duration.ofSeconds(30));
                        OffsetAndMetadata got = c.committed(Set.of(a0), Duration.ofSeconds(30)).get(a0);
                        long committed = got == null ? -1 : got.offset();
                        out.put(protocol, committed);
                        r.check(committed == 31, "assign() consumer (%s) committed %d, expected 31",
                                protocol, committed);
                    }
                }
                r.put("assign_commit", out);
            });

            // electLeaders: on one node every leader is already the preferred one.
            r.step("electLeaders", () -> {
                Set<TopicPartition> parts = Set.of(a0, a1, new TopicPartition(ta, 2));
                Map<TopicPartition, Optional<Throwable>> res = admin.electLeaders(ElectionType.PREFERRED, parts)
                        .partitions().get(T, TimeUnit.SECONDS);
                Map<String, Object> out = new TreeMap<>();
                res.forEach((tp, err) -> out.put(tp.toString(), err.map(Report::describe).orElse("elected")));
                r.put("elect_leaders", out);
                for (TopicPartition tp : parts) {
                    Optional<Throwable> err = res.get(tp);
                    r.check(err != null && err.isPresent() && err.get() instanceof ElectionNotNeededException,
                            "electLeaders PREFERRED %s: %s, expected ElectionNotNeededException", tp,
                            err == null ? "missing" : err.map(Report::describe).orElse("elected"));
                }
                Map<TopicPartition, Optional<Throwable>> unknown = admin.electLeaders(ElectionType.PREFERRED,
                        Set.of(new TopicPartition("java-admin-nope", 0))).partitions().get(T, TimeUnit.SECONDS);
                Optional<Throwable> ue = unknown.get(new TopicPartition("java-admin-nope", 0));
                r.check(ue != null && ue.isPresent() && ue.get() instanceof UnknownTopicOrPartitionException,
                        "electLeaders of an unknown partition: %s", ue);
            });

            // Consumer groups: a classic group that committed and left, a KIP-848 group with a live member.
            String classic = "java-admin-classic";
            String modern = "java-admin-consumer";
            KafkaConsumer<String, String> live = null;
            try {
                r.step("consumer groups", () -> {
                    consumeAndCommit(bs, classic, "classic", ta, 70);
                });
                KafkaConsumer<String, String>[] holder = newHolder();
                r.step("live KIP-848 member", () -> {
                    Properties p = Clients.consumerProps(bs, "java-admin-848");
                    p.put(ConsumerConfig.GROUP_ID_CONFIG, modern);
                    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
                    holder[0] = new KafkaConsumer<>(p);
                    holder[0].subscribe(List.of(ta));
                    long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
                    while (holder[0].assignment().size() < 6 && System.nanoTime() < deadline) {
                        holder[0].poll(Duration.ofMillis(100));
                    }
                    r.check(holder[0].assignment().size() == 6, "the KIP-848 member got %s",
                            holder[0].assignment());
                    holder[0].commitSync();
                });
                live = holder[0];
                r.step("listGroups", () -> {
                    Collection<GroupListing> gs = admin.listGroups().all().get(T, TimeUnit.SECONDS);
                    Map<String, Object> out = new TreeMap<>();
                    for (GroupListing g : gs) {
                        out.put(g.groupId(), Main.map("type", String.valueOf(g.type().orElse(null)), "protocol",
                                g.protocol(), "state", String.valueOf(g.groupState().orElse(null))));
                    }
                    r.put("groups", out);
                    r.check(out.containsKey(classic) && out.containsKey(modern), "listGroups: %s", out.keySet());
                    Collection<?> cg = admin.listConsumerGroups().all().get(T, TimeUnit.SECONDS);
                    r.check(cg.size() >= 2, "listConsumerGroups: %s", cg);
                });
                r.step("describeConsumerGroups", () -> {
                    Map<String, ConsumerGroupDescription> d = admin.describeConsumerGroups(List.of(classic, modern))
                            .all().get(T, TimeUnit.SECONDS);
                    ConsumerGroupDescription c = d.get(classic);
                    ConsumerGroupDescription m = d.get(modern);
                    r.put("describe_groups", Main.map(
                            classic, Main.map("state", String.valueOf(c.groupState()), "type", String.valueOf(c.type()),
                                    "members", c.members().size()),
                            modern, Main.map("state", String.valueOf(m.groupState()), "type", String.valueOf(m.type()),
                                    "members", m.members().size(), "assignor", m.partitionAssignor())));
                    r.check(c.groupState() == GroupState.EMPTY && c.members().isEmpty(),
                            "describeConsumerGroups %s: state %s with %d members", classic, c.groupState(),
                            c.members().size());
                    r.check(c.type() == GroupType.CLASSIC, "describeConsumerGroups %s: type %s", classic,
                            c.type());
                    r.check(m.groupState() == GroupState.STABLE && m.members().size() == 1
                            && m.members().iterator().next().assignment().topicPartitions().size() == 6,
                            "describeConsumerGroups %s: state %s members %s", modern, m.groupState(), m.members());
                    r.check(m.type() == GroupType.CONSUMER, "describeConsumerGroups %s: type %s", modern,
                            m.type());
                });
                r.step("listConsumerGroupOffsets / alterConsumerGroupOffsets", () -> {
                    Map<TopicPartition, OffsetAndMetadata> o = admin.listConsumerGroupOffsets(classic)
                            .partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
                    r.check(o.get(a0) != null && o.get(a0).offset() == 100, "listConsumerGroupOffsets %s: %s", classic, o);
                    admin.alterConsumerGroupOffsets(classic, Map.of(a0, new OffsetAndMetadata(40, "reset by admin"),
                            a1, new OffsetAndMetadata(0))).all().get(T, TimeUnit.SECONDS);
                    o = admin.listConsumerGroupOffsets(classic).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
                    r.check(o.get(a0) != null && o.get(a0).offset() == 40 && "reset by admin".equals(o.get(a0).metadata()),
                            "after alterConsumerGroupOffsets: %s", o.get(a0));
                    admin.deleteConsumerGroupOffsets(classic, Set.of(a1)).all().get(T, TimeUnit.SECONDS);
                    o = admin.listConsumerGroupOffsets(classic).partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
                    r.check(!o.containsKey(a1), "after deleteConsumerGroupOffsets: %s", o.keySet());
                    Throwable e = failure(admin.alterConsumerGroupOffsets(modern,
                            Map.of(a0, new OffsetAndMetadata(1))).all());
                    r.put("alter_offsets_of_active_group", Report.describe(e));
                    r.check(e != null, "alterConsumerGroupOffsets of a group with a live member succeeded");
                });
                r.step("deleteConsumerGroups", () -> {
                    Throwable e = failure(admin.deleteConsumerGroups(List.of(modern)).all());
                    expect(r, "deleteConsumerGroups of a group with a live member", e, GroupNotEmptyException.class);
                    admin.deleteConsumerGroups(List.of(classic)).all().get(T, TimeUnit.SECONDS);
                    Collection<GroupListing> gs = admin.listGroups().all().get(T, TimeUnit.SECONDS);
                    r.check(gs.stream().noneMatch(g -> g.groupId().equals(classic)),
                            "listGroups after deleteConsumerGroups still has %s", classic);
                    Map<TopicPartition, OffsetAndMetadata> o = admin.listConsumerGroupOffsets(classic)
                            .partitionsToOffsetAndMetadata().get(T, TimeUnit.SECONDS);
                    r.check(o.isEmpty(), "offsets of a deleted group: %s", o);
                });
            } finally {
                if (live != null) {
                    live.close();
                }
            }

            r.step("listTopics internal", () -> {
                Set<String> visible = admin.listTopics().names().get(T, TimeUnit.SECONDS);
                Set<String> all = admin.listTopics(new ListTopicsOptions().listInternal(true)).names()
                        .get(T, TimeUnit.SECONDS);
                r.check(!visible.contains("__consumer_offsets"), "listTopics shows __consumer_offsets");
                r.check(all.contains("__consumer_offsets"), "listTopics(listInternal) lacks __consumer_offsets: %s", all);
            });

            // Error paths.
            r.step("error paths", () -> {
                expect(r, "describeTopics of an unknown topic",
                        failure(admin.describeTopics(List.of("java-admin-nope")).allTopicNames()),
                        UnknownTopicOrPartitionException.class);
                expect(r, "createTopics of an existing topic",
                        failure(admin.createTopics(List.of(new NewTopic(ta, 1, (short) 1))).all()),
                        TopicExistsException.class);
                expect(r, "deleteTopics of an unknown topic",
                        failure(admin.deleteTopics(List.of("java-admin-nope")).all()),
                        UnknownTopicOrPartitionException.class);
                expect(r, "createTopics with replication factor 3 on one broker",
                        failure(admin.createTopics(List.of(new NewTopic("java-admin-rf3", 1, (short) 3))).all()),
                        InvalidReplicationFactorException.class);
                expect(r, "createTopics with an invalid name",
                        failure(admin.createTopics(List.of(new NewTopic("bad name!", 1, (short) 1))).all()),
                        InvalidTopicException.class);
                Map<Integer, List<Integer>> gap = new LinkedHashMap<>();
                gap.put(0, List.of(nodeId[0]));
                gap.put(2, List.of(nodeId[0]));
                expect(r, "createTopics with an assignment of partitions 0 and 2",
                        failure(admin.createTopics(List.of(new NewTopic("java-admin-gap", gap))).all()),
                        InvalidReplicaAssignmentException.class);
                expect(r, "createTopics with an assignment to an unknown broker",
                        failure(admin.createTopics(List.of(new NewTopic("java-admin-nobroker",
                                Map.of(0, List.of(nodeId[0] + 99))))).all()),
                        InvalidReplicaAssignmentException.class);
                expect(r, "createTopics with 0 partitions",
                        failure(admin.createTopics(List.of(new NewTopic("java-admin-zero", 0, (short) 1))).all()),
                        InvalidPartitionsException.class);
                expect(r, "describeConfigs of an unknown topic",
                        failure(admin.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.TOPIC,
                                "java-admin-nope"))).all()),
                        UnknownTopicOrPartitionException.class);
                expect(r, "createPartitions of an unknown topic",
                        failure(admin.createPartitions(Map.of("java-admin-nope", NewPartitions.increaseTo(3))).all()),
                        UnknownTopicOrPartitionException.class);
                expect(r, "listOffsets of an unknown partition",
                        failure(admin.listOffsets(Map.of(new TopicPartition("java-admin-nope", 0),
                                OffsetSpec.latest())).all()),
                        UnknownTopicOrPartitionException.class);
            });

            // Calls Fjord does not serve (yet): what a user gets. Reported, not asserted; see
            // docs/compatibility.md.
            Map<String, Object> other = new TreeMap<>();
            Map<String, KafkaFuture<?>> calls = new LinkedHashMap<>();
            calls.put("describeFeatures", admin.describeFeatures().featureMetadata());
            calls.put("describeLogDirs", admin.describeLogDirs(List.of(Math.max(nodeId[0], 0))).allDescriptions());
            calls.put("describeMetadataQuorum", admin.describeMetadataQuorum().quorumInfo());
            calls.put("describeProducers", admin.describeProducers(List.of(a0)).all());
            calls.put("listTransactions", admin.listTransactions().all());
            calls.put("describeAcls", admin.describeAcls(org.apache.kafka.common.acl.AclBindingFilter.ANY).values());
            calls.put("describeClientQuotas", admin.describeClientQuotas(
                    org.apache.kafka.common.quota.ClientQuotaFilter.all()).entities());
            calls.put("listPartitionReassignments", admin.listPartitionReassignments().reassignments());
            calls.put("describeUserScramCredentials", admin.describeUserScramCredentials().all());
            calls.forEach((name, f) -> {
                Throwable e = failure(f);
                other.put(name, e == null ? "ok" : Report.describe(e));
            });
            r.put("other_admin_calls", other);

            // deleteTopics
            r.step("deleteTopics", () -> {
                admin.deleteTopics(List.of(tb)).all().get(T, TimeUnit.SECONDS);
                Set<String> names = admin.listTopics().names().get(T, TimeUnit.SECONDS);
                r.check(!names.contains(tb), "listTopics after deleteTopics still has %s", tb);
                expect(r, "describeTopics of a deleted topic", failure(admin.describeTopics(List.of(tb)).allTopicNames()),
                        UnknownTopicOrPartitionException.class);
                admin.deleteTopics(TopicCollection.ofTopicIds(List.of(idA[0]))).all().get(T, TimeUnit.SECONDS);
                names = admin.listTopics().names().get(T, TimeUnit.SECONDS);
                r.check(!names.contains(ta), "listTopics after deleteTopics by id still has %s", ta);
            });
        }
    }

    /**
     * A manual assignment of {@code n} partitions to {@code node}, listed from the last
     * partition to the first (a client sends its map in whatever order; Kafka takes any order).
     */
    static Map<Integer, List<Integer>> descending(int n, int node) {
        Map<Integer, List<Integer>> m = new LinkedHashMap<>();
        for (int p = n - 1; p >= 0; p--) {
            m.put(p, List.of(node));
        }
        return m;
    }

    @SuppressWarnings("unchecked")
    static KafkaConsumer<String, String>[] newHolder() {
        return (KafkaConsumer<String, String>[]) new KafkaConsumer<?, ?>[1];
    }

    static long offset(Admin admin, TopicPartition tp, OffsetSpec spec) throws Exception {
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get(T, TimeUnit.SECONDS).offset();
    }

    /** Consumes {@code topic} with a group until {@code min} records arrived, commits, closes. */
    static void consumeAndCommit(String bs, String group, String protocol, String topic, int min) {
        Properties p = Clients.consumerProps(bs, "java-admin-" + protocol);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(topic));
            int n = 0;
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (n < min && System.nanoTime() < deadline) {
                n += c.poll(Duration.ofMillis(100)).count();
            }
            if (n < min) {
                throw new IllegalStateException("group " + group + " consumed " + n + " of " + min + " records");
            }
            c.commitSync();
        }
    }

    /** The exception a future completes with, or null if it succeeds. */
    static Throwable failure(KafkaFuture<?> f) {
        try {
            f.get(T, TimeUnit.SECONDS);
            return null;
        } catch (Throwable t) {
            return Report.unwrap(t);
        }
    }

    static void expect(Report r, String what, Throwable got, Class<? extends Throwable> want) {
        r.check(want.isInstance(got), "%s: expected %s, got %s", what, want.getSimpleName(), Report.describe(got));
    }
}
