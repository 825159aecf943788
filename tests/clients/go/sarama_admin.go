package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfigValue(adm sarama.ClusterAdmin, topic, key string) (string, sarama.ConfigSource) {
	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	check(err, "describe config of "+topic)
	for _, e := range entries {
		if e.Name == key {
			return e.Value, e.Source
		}
	}
	fail("describe config of %s: no %s", topic, key)
	return "", 0
}

// Kafka's names of the errors the scenario expects (sarama's KError prints a sentence).
var kerrNames = map[sarama.KError]string{
	sarama.ErrNoError:                 "NONE",
	sarama.ErrTopicAlreadyExists:      "TOPIC_ALREADY_EXISTS",
	sarama.ErrUnknownTopicOrPartition: "UNKNOWN_TOPIC_OR_PARTITION",
	sarama.ErrInvalidConfig:           "INVALID_CONFIG",
	sarama.ErrInvalidPartitions:       "INVALID_PARTITIONS",
	sarama.ErrNonEmptyGroup:           "NON_EMPTY_GROUP",
	sarama.ErrElectionNotNeeded:       "ELECTION_NOT_NEEDED",
}

func kerrName(e sarama.KError) string {
	if n, ok := kerrNames[e]; ok {
		return n
	}
	return fmt.Sprintf("%d (%v)", int16(e), e)
}

type saramaWant struct {
	value  string
	source sarama.ConfigSource
}

// saramaWaitConfigs waits until DescribeConfig shows every key of `want` with that value and
// source.
func saramaWaitConfigs(adm sarama.ClusterAdmin, topic string, want map[string]saramaWant) {
	got := map[string]saramaWant{}
	waitFor(context.Background(), "configs of "+topic, 10*time.Second, func() bool {
		ok := true
		for key, w := range want {
			v, src := saramaConfigValue(adm, topic, key)
			got[key] = saramaWant{v, src}
			if v != w.value || src != w.source {
				ok = false
			}
		}
		return ok
	}, func() string { return fmt.Sprintf("got %v, want %v", got, want) })
}

func expectKError(err error, want sarama.KError, what string) string {
	if !errors.Is(err, want) {
		fail("%s: got %v, want %v", what, err, want)
	}
	return kerrName(want)
}

// sarama admin: ClusterAdmin over topics, configs, partitions, records and groups.
func saramaAdmin(o *opts) result {
	prefix := or(o.topic, "sarama-admin")
	topic, group := prefix+"-t", or(o.group, prefix+"-group")
	adm := saramaAdminClient(o)
	defer adm.Close()
	res := result{"version": saramaConfig(o).Version.String()}

	brokers, controller, err := adm.DescribeCluster()
	check(err, "describe cluster")
	if len(brokers) == 0 || controller < 0 {
		fail("describe cluster: %d brokers, controller %d", len(brokers), controller)
	}
	var ids []int32
	for _, b := range brokers {
		ids = append(ids, b.ID())
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	res["brokers"] = ids
	res["controller"] = controller

	ret := "3600000"
	check(adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &ret}}, false), "create topic")
	saramaWaitTopicLed(o, adm, topic, 3)
	res["create_existing"] = expectKError(adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false),
		sarama.ErrTopicAlreadyExists, "create an existing topic")

	topics, err := adm.ListTopics()
	check(err, "list topics")
	d, ok := topics[topic]
	if !ok || d.NumPartitions != 3 || d.ReplicationFactor != 1 {
		fail("list topics: %s is %+v (listed %v)", topic, d, ok)
	}
	if r := d.ConfigEntries["retention.ms"]; r == nil || *r != "3600000" {
		fail("list topics: retention.ms of %s is %v", topic, r)
	}
	res["topics_listed"] = len(topics)
	described, err := adm.DescribeTopics([]string{topic, prefix + "-missing"})
	check(err, "describe topics")
	for _, m := range described {
		switch m.Name {
		case topic:
			if m.Err != sarama.ErrNoError || len(m.Partitions) != 3 {
				fail("describe topics: %s err %v partitions %d", topic, m.Err, len(m.Partitions))
			}
		case prefix + "-missing":
			res["describe_unknown"] = expectKError(m.Err, sarama.ErrUnknownTopicOrPartition, "describe an unknown topic")
		}
	}
	if res["describe_unknown"] == nil {
		fail("describe topics did not answer for the unknown topic")
	}

	// Configs. A broker other than the one that took a change may answer before it applied
	// it (as in Kafka), so each check waits for the value.
	saramaWaitConfigs(adm, topic, map[string]saramaWant{"retention.ms": {"3600000", sarama.SourceTopic}})
	check(adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms":   {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: strp("7200000")},
		"cleanup.policy": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: strp("compact,delete")},
	}, false), "incremental alter config")
	saramaWaitConfigs(adm, topic, map[string]saramaWant{
		"retention.ms":   {"7200000", sarama.SourceTopic},
		"cleanup.policy": {"compact,delete", sarama.SourceTopic},
	})
	// AlterConfig (AlterConfigs): the whole set; what is not given goes back to the default.
	// A broker without the API is reported (a known gap), not failed here.
	if err := adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": strp("5400000")}, false); errors.Is(err, sarama.ErrUnsupportedVersion) {
		res["alter_config"] = "unsupported"
	} else {
		check(err, "alter config")
		saramaWaitConfigs(adm, topic, map[string]saramaWant{
			"retention.ms":   {"5400000", sarama.SourceTopic},
			"cleanup.policy": {"delete", sarama.SourceDefault},
		})
		res["alter_config"] = "ok"
	}
	res["alter_unknown_config"] = expectKError(adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"no.such.config": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: strp("1")},
	}, false), sarama.ErrInvalidConfig, "alter an unknown config key")

	// Partitions.
	check(adm.CreatePartitions(topic, 5, nil, false), "create partitions")
	saramaWaitTopicLed(o, adm, topic, 5)
	res["shrink_partitions"] = expectKError(adm.CreatePartitions(topic, 2, nil, false), sarama.ErrInvalidPartitions, "reduce the partition count")

	// Records: produce, delete the first ones.
	cfg := saramaConfig(o)
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient(o.bootstrap, cfg)
	check(err, "client")
	defer client.Close()
	prod, err := sarama.NewSyncProducerFromClient(client)
	check(err, "sync producer")
	for i := 0; i < 10; i++ {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: 0, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)), Value: sarama.StringEncoder(fmt.Sprintf("r%d", i))})
		check(err, "produce")
	}
	check(prod.Close(), "close producer")
	check(adm.DeleteRecords(topic, map[int32]int64{0: 4}), "delete records")
	check(client.RefreshMetadata(topic), "refresh metadata")
	oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	check(err, "oldest offset")
	newest, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	check(err, "newest offset")
	if oldest != 4 || newest != 10 {
		fail("after deleting records before 4: oldest %d newest %d", oldest, newest)
	}
	res["offsets"] = map[string]int64{"oldest": oldest, "newest": newest}
	res["delete_records_unknown"] = expectKError(adm.DeleteRecords(prefix+"-missing", map[int32]int64{0: 1}),
		sarama.ErrUnknownTopicOrPartition, "delete records of an unknown topic")

	// Groups: offsets committed by an offset manager (no members), then a live member.
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	check(err, "offset manager")
	pom, err := om.ManagePartition(topic, 0)
	check(err, "manage partition")
	pom.MarkOffset(7, "sarama")
	pom1, err := om.ManagePartition(topic, 1)
	check(err, "manage partition")
	pom1.MarkOffset(3, "")
	om.Commit()
	check(pom.Close(), "close partition offset manager")
	check(pom1.Close(), "close partition offset manager")
	check(om.Close(), "close offset manager")
	// OffsetDelete of partition 1: partition 0 keeps its offset.
	check(adm.DeleteConsumerGroupOffset(group, topic, 1), "delete consumer group offset")
	offs, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
	check(err, "list consumer group offsets")
	b0, b1 := offs.GetBlock(topic, 0), offs.GetBlock(topic, 1)
	if b0 == nil || b0.Offset != 7 || b0.Metadata != "sarama" || b0.Err != sarama.ErrNoError {
		fail("committed offset of %s/0: %+v", topic, b0)
	}
	if b1 == nil || b1.Offset != -1 {
		fail("offset of %s/1 (deleted): %+v", topic, b1)
	}
	res["committed"] = b0.Offset
	res["offset_delete"] = "ok"

	lcfg := saramaConfig(o)
	lcfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	live, err := sarama.NewConsumerGroup(o.bootstrap, group+"-live", lcfg)
	check(err, "live consumer group")
	h := &saramaMember{name: "live", assigned: map[int32]bool{}, readFrom: map[int32]bool{}, v: newVerifier()}
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		for {
			if err := live.Consume(ctxBackground(), []string{topic}, h); errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
		}
	}()
	var desc []*sarama.GroupDescription
	waitFor(ctxBackground(), "a Stable group with one member", 20*time.Second, func() bool {
		desc, err = adm.DescribeConsumerGroups([]string{group + "-live", group})
		if err != nil || len(desc) != 2 {
			return false
		}
		if desc[0].GroupId != group+"-live" { // the answer's order is the broker's
			desc[0], desc[1] = desc[1], desc[0]
		}
		return desc[0].State == "Stable" && len(desc[0].Members) == 1
	}, func() string { return fmt.Sprintf("%v %+v", err, desc) })
	if desc[1].GroupId != group {
		fail("describe consumer groups answered %s and %s", desc[0].GroupId, desc[1].GroupId)
	}
	for _, m := range desc[0].Members {
		a, err := m.GetMemberAssignment()
		check(err, "member assignment")
		if len(a.Topics[topic]) != 5 {
			fail("live member assignment: %v", a.Topics)
		}
	}
	if desc[1].State != "Empty" || len(desc[1].Members) != 0 {
		fail("offsets-only group: %+v", desc[1])
	}
	listed, err := adm.ListConsumerGroups()
	check(err, "list consumer groups")
	if listed[group] != "" && listed[group] != "consumer" || listed[group+"-live"] != "consumer" {
		fail("list consumer groups: %v", listed)
	}
	if _, ok := listed[group]; !ok {
		fail("list consumer groups misses %s: %v", group, listed)
	}
	res["groups_listed"] = len(listed)
	res["live_group"] = map[string]any{"state": desc[0].State, "protocol": desc[0].Protocol, "members": len(desc[0].Members)}
	res["delete_live_group"] = expectKError(adm.DeleteConsumerGroup(group+"-live"), sarama.ErrNonEmptyGroup, "delete a group with a member")
	check(live.Close(), "close live group")
	<-liveDone
	check(adm.DeleteConsumerGroup(group), "delete consumer group")

	// Preferred leaders are leading already.
	elected, err := adm.ElectLeaders(sarama.PreferredElection, map[string][]int32{topic: {0, 1}})
	check(err, "elect leaders")
	electErrs := map[string]string{}
	for t, ps := range elected {
		for p, r := range ps {
			if r.ErrorCode != sarama.ErrNoError && r.ErrorCode != sarama.ErrElectionNotNeeded {
				fail("elect leader of %s/%d: %v", t, p, r.ErrorCode)
			}
			electErrs[fmt.Sprintf("%s/%d", t, p)] = kerrName(r.ErrorCode)
		}
	}
	if len(electErrs) != 2 {
		fail("elect leaders answered %v", electErrs)
	}
	res["elect_leaders"] = electErrs

	check(adm.DeleteTopic(topic), "delete topic")
	res["delete_unknown"] = expectKError(adm.DeleteTopic(prefix+"-missing"), sarama.ErrUnknownTopicOrPartition, "delete an unknown topic")
	waitFor(ctxBackground(), "the deleted topic to leave the listing", 10*time.Second, func() bool {
		t, err := adm.ListTopics()
		_, still := t[topic]
		return err == nil && !still
	}, func() string { return "" })
	return res
}

func ctxBackground() context.Context { return context.Background() }
