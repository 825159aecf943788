package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func strp(s string) *string { return &s }

// configOf returns a topic config's value and source from a kadm describe.
func configOf(rc kadm.ResourceConfigs, topic, key string) (string, string) {
	for _, r := range rc {
		if r.Name != topic {
			continue
		}
		check(r.Err, "describe configs of "+topic)
		for _, c := range r.Configs {
			if c.Key == key {
				v := "<null>"
				if c.Value != nil {
					v = *c.Value
				}
				return v, c.Source.String()
			}
		}
	}
	fail("describe configs of %s: no %s", topic, key)
	return "", ""
}

// waitConfigs waits until every key of `want` has that "value (SOURCE)" in DescribeConfigs
// ("" for the value: any value with that source). In a cluster a broker other than the one
// that took the change may answer before it has applied the change (as in Kafka).
func waitConfigs(ctx context.Context, adm *kadm.Client, topic string, want map[string][2]string) {
	got := map[string][2]string{}
	waitFor(ctx, "configs of "+topic, 10*time.Second, func() bool {
		cfgs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return false
		}
		ok := true
		for key, w := range want {
			v, src := configOf(cfgs, topic, key)
			got[key] = [2]string{v, src}
			if (w[0] != "" && v != w[0]) || src != w[1] {
				ok = false
			}
		}
		return ok
	}, func() string { return fmt.Sprintf("got %v, want %v", got, want) })
}

func expectErr(err error, want error, what string) string {
	if !errors.Is(err, want) {
		fail("%s: got %v, want %v", what, err, want)
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return err.Error()
}

// franz admin: kadm over every admin API Fjord implements, with the error paths.
func franzAdmin(o *opts) result {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	prefix := or(o.topic, "kadm")
	topicA, topicB := prefix+"-a", prefix+"-b"
	group := or(o.group, prefix+"-group")
	cl := franzClient(o)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	res := result{}

	// Cluster: brokers and controller, from Metadata and from DescribeCluster.
	meta, err := adm.BrokerMetadata(ctx)
	check(err, "broker metadata")
	if len(meta.Brokers) == 0 || meta.Controller < 0 || meta.Cluster == "" {
		fail("metadata: brokers %v controller %d cluster %q", meta.Brokers, meta.Controller, meta.Cluster)
	}
	dc := kmsg.NewPtrDescribeClusterRequest()
	dcr, err := dc.RequestWith(ctx, cl)
	check(err, "describe cluster")
	check(kerr.ErrorForCode(dcr.ErrorCode), "describe cluster")
	if dcr.ClusterID != meta.Cluster || dcr.ControllerID != meta.Controller || len(dcr.Brokers) != len(meta.Brokers) {
		fail("DescribeCluster (cluster %s controller %d, %d brokers) disagrees with Metadata (cluster %s controller %d, %d brokers)",
			dcr.ClusterID, dcr.ControllerID, len(dcr.Brokers), meta.Cluster, meta.Controller, len(meta.Brokers))
	}
	var brokerIDs []int32
	for _, b := range meta.Brokers {
		brokerIDs = append(brokerIDs, b.NodeID)
	}
	sort.Slice(brokerIDs, func(i, j int) bool { return brokerIDs[i] < brokerIDs[j] })
	res["brokers"] = brokerIDs
	res["controller"] = meta.Controller
	res["cluster_id"] = meta.Cluster
	rf := int16(len(brokerIDs))
	if rf > 3 {
		rf = 3
	}

	// Create topics, and the same again.
	created, err := adm.CreateTopics(ctx, 3, rf, map[string]*string{"retention.ms": strp("3600000")}, topicA, topicB)
	check(err, "create topics")
	check(created.Error(), "create topics")
	if c := created[topicA]; c.NumPartitions != 3 || c.ReplicationFactor != rf {
		fail("create topics answered %d partitions rf %d", c.NumPartitions, c.ReplicationFactor)
	}
	again, err := adm.CreateTopics(ctx, 3, rf, nil, topicA)
	check(err, "create existing topic")
	res["create_existing"] = expectErr(again[topicA].Err, kerr.TopicAlreadyExists, "create an existing topic")

	// List and describe.
	// Every broker learns of the topics shortly after the controller created them.
	var listed kadm.TopicDetails
	complete := func(t string) error {
		d, ok := listed[t]
		if !ok || len(d.Partitions) != 3 || d.IsInternal {
			return fmt.Errorf("%s missing or wrong: %+v", t, d)
		}
		for _, p := range d.Partitions {
			if p.Leader < 0 || len(p.Replicas) != int(rf) || len(p.ISR) != int(rf) || p.Err != nil {
				return fmt.Errorf("%s/%d leader %d replicas %v isr %v err %v", t, p.Partition, p.Leader, p.Replicas, p.ISR, p.Err)
			}
		}
		return nil
	}
	waitTopicLed(ctx, cl, topicA, 3)
	waitTopicLed(ctx, cl, topicB, 3)
	var listErr error
	waitFor(ctx, "the created topics in the listing", 10*time.Second, func() bool {
		listed, listErr = adm.ListTopics(ctx, topicA, topicB)
		if listErr == nil {
			listErr = complete(topicA)
		}
		if listErr == nil {
			listErr = complete(topicB)
		}
		return listErr == nil
	}, func() string { return fmt.Sprint(listErr) })
	// All topics: internal ones only when asked for.
	all, err := adm.ListTopics(ctx)
	check(err, "list topics")
	for t := range all {
		if strings.HasPrefix(t, "__") {
			fail("list topics (without internal) lists %s", t)
		}
	}
	withInternal, err := adm.ListTopicsWithInternal(ctx)
	check(err, "list topics with internal")
	res["topics_listed"] = len(all)
	res["topics_listed_with_internal"] = len(withInternal)

	unknown, err := adm.ListTopics(ctx, prefix+"-missing")
	check(err, "describe unknown topic")
	res["describe_unknown"] = expectErr(unknown[prefix+"-missing"].Err, kerr.UnknownTopicOrPartition, "describe an unknown topic")

	// Configs: describe, alter incrementally, alter the whole set, refuse an unknown key.
	waitConfigs(ctx, adm, topicA, map[string][2]string{
		"retention.ms":   {"3600000", "DYNAMIC_TOPIC_CONFIG"},
		"cleanup.policy": {"delete", "DEFAULT_CONFIG"},
	})
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("7200000")},
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: strp("2000000")},
	}, topicA)
	check(err, "incremental alter configs")
	for _, a := range altered {
		check(a.Err, "incremental alter configs "+a.Name)
	}
	altered, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.DeleteConfig, Name: "max.message.bytes"},
	}, topicA)
	check(err, "incremental alter configs (delete)")
	for _, a := range altered {
		check(a.Err, "incremental alter configs (delete) "+a.Name)
	}
	waitConfigs(ctx, adm, topicA, map[string][2]string{
		"retention.ms":      {"7200000", "DYNAMIC_TOPIC_CONFIG"},
		"max.message.bytes": {"", "DEFAULT_CONFIG"},
	})
	bad, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "no.such.config", Value: strp("1")}}, topicA)
	check(err, "alter unknown config")
	if len(bad) != 1 {
		fail("alter unknown config: %d responses", len(bad))
	}
	res["alter_unknown_config"] = expectErr(bad[0].Err, kerr.InvalidConfig, "alter an unknown config key")
	// AlterConfigs (non-incremental): the given set replaces the topic's dynamic configs. A
	// broker that does not implement the API is reported (a known gap), not failed here.
	state, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{
		{Name: "cleanup.policy", Value: strp("compact")},
	}, topicB)
	if errors.Is(err, kerr.UnsupportedVersion) || (err != nil && strings.Contains(err.Error(), "broker is too old")) {
		res["alter_configs_whole_set"] = "unsupported"
	} else {
		check(err, "alter configs (whole set)")
		for _, a := range state {
			check(a.Err, "alter configs (whole set) "+a.Name)
		}
		// The given set replaces the dynamic configs: retention.ms is back to its default.
		waitConfigs(ctx, adm, topicB, map[string][2]string{
			"cleanup.policy": {"compact", "DYNAMIC_TOPIC_CONFIG"},
			"retention.ms":   {"", "DEFAULT_CONFIG"},
		})
		res["alter_configs_whole_set"] = "ok"
	}

	// Partitions: add, and refuse to shrink.
	cp, err := adm.CreatePartitions(ctx, 2, topicA)
	check(err, "create partitions")
	check(cp.Error(), "create partitions")
	shrink, err := adm.UpdatePartitions(ctx, 2, topicA)
	check(err, "shrink partitions")
	res["shrink_partitions"] = expectErr(shrink[topicA].Err, kerr.InvalidPartitions, "reduce the partition count")
	// The new partitions are usable once metadata shows their leaders.
	waitTopicLed(ctx, cl, topicA, 5)

	// Records with known timestamps, then offsets: start, end, by time; delete records.
	producer := franzClient(o, kgo.DefaultProduceTopic(topicA), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer producer.Close()
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i := 0; i < 10; i++ {
		r := &kgo.Record{Partition: 0, Value: []byte(fmt.Sprintf("t%d", i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
		check(producer.ProduceSync(ctx, r).FirstErr(), "produce timed records")
	}
	starts, err := adm.ListStartOffsets(ctx, topicA)
	check(err, "list start offsets")
	ends, err := adm.ListEndOffsets(ctx, topicA)
	check(err, "list end offsets")
	byTime, err := adm.ListOffsetsAfterMilli(ctx, base.Add(5*time.Second).UnixMilli(), topicA)
	check(err, "list offsets by time")
	s0, _ := starts.Lookup(topicA, 0)
	e0, _ := ends.Lookup(topicA, 0)
	t0, _ := byTime.Lookup(topicA, 0)
	if s0.Offset != 0 || e0.Offset != 10 || t0.Offset != 5 {
		fail("offsets of %s/0: start %d end %d after +5s %d, want 0 10 5", topicA, s0.Offset, e0.Offset, t0.Offset)
	}
	res["offsets"] = map[string]int64{"start": s0.Offset, "end": e0.Offset, "by_time": t0.Offset}
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: topicA, Partition: 0, At: 4})
	deleted, err := adm.DeleteRecords(ctx, del)
	check(err, "delete records")
	check(deleted.Error(), "delete records")
	d0, _ := deleted.Lookup(topicA, 0)
	starts, err = adm.ListStartOffsets(ctx, topicA)
	check(err, "list start offsets")
	s0, _ = starts.Lookup(topicA, 0)
	if d0.LowWatermark != 4 || s0.Offset != 4 {
		fail("delete records before 4: low watermark %d, start offset %d", d0.LowWatermark, s0.Offset)
	}
	res["low_watermark"] = d0.LowWatermark

	// Groups: commit and fetch offsets of a group with no members, a live member, list,
	// describe, delete.
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: topicA, Partition: 0, At: 7, LeaderEpoch: -1, Metadata: "kadm"})
	commit.Add(kadm.Offset{Topic: topicA, Partition: 1, At: 0, LeaderEpoch: -1})
	committed, err := adm.CommitOffsets(ctx, group, commit)
	check(err, "commit offsets")
	check(committed.Error(), "commit offsets")
	fetched, err := adm.FetchOffsets(ctx, group)
	check(err, "fetch offsets")
	f0, ok := fetched.Lookup(topicA, 0)
	if !ok || f0.At != 7 || f0.Metadata != "kadm" || f0.Err != nil {
		fail("fetched offset %+v (found %v), want 7 with metadata kadm", f0, ok)
	}
	// OffsetDelete: one partition's offset goes, the other stays.
	od, err := adm.DeleteOffsets(ctx, group, kadm.TopicsSet{topicA: {1: {}}})
	check(err, "delete offsets")
	check(od.Error(), "delete offsets")
	fetched, err = adm.FetchOffsets(ctx, group)
	check(err, "fetch offsets")
	if _, ok := fetched.Lookup(topicA, 1); ok {
		fail("offset of %s/1 still there after OffsetDelete: %+v", topicA, fetched)
	}
	if f0, ok := fetched.Lookup(topicA, 0); !ok || f0.At != 7 {
		fail("offset of %s/0 after deleting the one of partition 1: %+v", topicA, fetched)
	}
	res["offset_delete"] = "ok"
	member := franzClient(o, kgo.ConsumerGroup(group+"-live"), kgo.ConsumeTopics(topicA),
		kgo.HeartbeatInterval(300*time.Millisecond))
	defer member.Close()
	var live kadm.DescribedGroup
	waitFor(ctx, "a live member in a Stable group", 20*time.Second, func() bool {
		member.PollFetches(shortCtx(ctx, 200*time.Millisecond))
		d, err := adm.DescribeGroups(ctx, group+"-live")
		if err != nil {
			return false
		}
		live = d[group+"-live"]
		if live.State != "Stable" || len(live.Members) != 1 {
			return false
		}
		// The member's assignment, decoded from the group's "consumer" protocol.
		ca, ok := live.Members[0].Assigned.AsConsumer()
		return ok && live.ProtocolType == "consumer" && len(ca.Topics) == 1 && len(ca.Topics[0].Partitions) == 5
	}, func() string { return fmt.Sprintf("%+v", live) })
	groups, err := adm.ListGroups(ctx)
	check(err, "list groups")
	lg, ok1 := groups[group]
	ll, ok2 := groups[group+"-live"]
	if !ok1 || !ok2 || lg.State != "Empty" || ll.State != "Stable" || ll.ProtocolType != "consumer" {
		fail("list groups: %+v", groups)
	}
	described, err := adm.DescribeGroups(ctx, group)
	check(err, "describe groups")
	if d := described[group]; d.State != "Empty" || len(d.Members) != 0 || d.Err != nil {
		fail("describe offsets-only group: %+v", d)
	}
	res["groups_listed"] = len(groups)
	res["live_group"] = map[string]any{"state": live.State, "protocol": live.Protocol, "members": len(live.Members)}
	dg, err := adm.DeleteGroup(ctx, group)
	check(err, "delete group")
	check(dg.Err, "delete group")
	fetched, err = adm.FetchOffsets(ctx, group)
	check(err, "fetch offsets of a deleted group")
	if _, ok := fetched.Lookup(topicA, 0); ok {
		fail("offsets of a deleted group still there: %+v", fetched)
	}
	liveDel, err := adm.DeleteGroup(ctx, group+"-live")
	if err == nil {
		err = liveDel.Err
	}
	res["delete_live_group"] = expectErr(err, kerr.NonEmptyGroup, "delete a group with a member")

	// Elect the preferred leaders (already leading: ELECTION_NOT_NEEDED per partition).
	elected, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{topicA: {0: {}, 1: {}}})
	check(err, "elect leaders")
	electErrs := map[string]string{}
	for _, ps := range elected {
		for p, r := range ps {
			e := "NONE"
			if r.Err != nil {
				e = expectErr(r.Err, kerr.ElectionNotNeeded, fmt.Sprintf("elect preferred leader of %s/%d", r.Topic, p))
			}
			electErrs[fmt.Sprintf("%s/%d", r.Topic, p)] = e
		}
	}
	if len(electErrs) != 2 {
		fail("elect leaders answered %d partitions, want 2", len(electErrs))
	}
	res["elect_leaders"] = electErrs

	// Produce to a topic that does not exist (auto creation off): the client gives up.
	strict := franzClient(o, kgo.UnknownTopicRetries(2), kgo.RecordDeliveryTimeout(10*time.Second))
	perr := strict.ProduceSync(ctx, &kgo.Record{Topic: prefix + "-missing", Value: []byte("x")}).FirstErr()
	strict.Close()
	res["produce_unknown"] = expectErr(perr, kerr.UnknownTopicOrPartition, "produce to an unknown topic")

	// Delete topics, and an unknown one.
	member.Close()
	dt, err := adm.DeleteTopics(ctx, topicA, topicB)
	check(err, "delete topics")
	check(dt.Error(), "delete topics")
	waitFor(ctx, "deleted topics to leave metadata", 10*time.Second, func() bool {
		return freshTopic(ctx, cl, topicA) == nil && freshTopic(ctx, cl, topicB) == nil
	}, func() string { return "" })
	du, err := adm.DeleteTopics(ctx, prefix+"-missing")
	check(err, "delete unknown topic")
	res["delete_unknown"] = expectErr(du[prefix+"-missing"].Err, kerr.UnknownTopicOrPartition, "delete an unknown topic")
	return res
}

func shortCtx(parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(parent, d)
	go func() { <-ctx.Done(); cancel() }()
	return ctx
}
