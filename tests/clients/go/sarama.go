package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// saramaConfig: Config.Version from --version ("default" leaves sarama's default, which users
// often keep; "newest" is the newest version this sarama knows; else a version like 4.0.0).
func saramaConfig(o *opts) *sarama.Config {
	if o.verbose {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	}
	c := sarama.NewConfig()
	c.ClientID = "fjord-go-sarama"
	switch o.version {
	case "default":
	case "newest":
		c.Version = sarama.MaxVersion
	default:
		v, err := sarama.ParseKafkaVersion(o.version)
		check(err, "--version")
		c.Version = v
	}
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	return c
}

func saramaIdempotent(c *sarama.Config, codec sarama.CompressionCodec) {
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 5
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Compression = codec
	c.Producer.Flush.Messages = 50
	c.Producer.Flush.Frequency = 5 * time.Millisecond
}

var saramaCodecs = []struct {
	name  string
	codec sarama.CompressionCodec
}{
	{"none", sarama.CompressionNone},
	{"gzip", sarama.CompressionGZIP},
	{"snappy", sarama.CompressionSnappy},
	{"lz4", sarama.CompressionLZ4},
	{"zstd", sarama.CompressionZSTD},
}

func saramaMessage(topic string, r genRecord) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(r.key), Value: sarama.StringEncoder(r.value)}
	for _, h := range r.headers {
		m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h.k), Value: []byte(h.v)})
	}
	return m
}

func saramaHeaders(m *sarama.ConsumerMessage) []hdr {
	out := make([]hdr, 0, len(m.Headers))
	for _, h := range m.Headers {
		out = append(out, hdr{string(h.Key), string(h.Value)})
	}
	return out
}

func saramaAdminClient(o *opts) sarama.ClusterAdmin {
	cfg := saramaConfig(o)
	// Metadata requests of sarama's client create missing topics by default (as Kafka's
	// auto.create.topics.enable allows); the admin's error paths need them to stay missing.
	cfg.Metadata.AllowAutoTopicCreation = false
	adm, err := sarama.NewClusterAdmin(o.bootstrap, cfg)
	check(err, "sarama cluster admin")
	return adm
}

// saramaCreateTopic creates a topic and waits until Metadata shows a leader for each
// partition (a broker learns of a new topic shortly after the controller created it).
func saramaCreateTopic(o *opts, adm sarama.ClusterAdmin, topic string, partitions int32) {
	check(adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false), "create topic "+topic)
	saramaWaitTopicLed(o, adm, topic, int(partitions))
}

func saramaWaitTopicLed(o *opts, adm sarama.ClusterAdmin, topic string, partitions int) {
	var last []*sarama.TopicMetadata
	var err error
	waitFor(context.Background(), fmt.Sprintf("%d partitions of %s with leaders in metadata", partitions, topic), 15*time.Second, func() bool {
		last, err = adm.DescribeTopics([]string{topic})
		if err != nil || len(last) != 1 || last[0].Err != sarama.ErrNoError || len(last[0].Partitions) != partitions {
			return false
		}
		for _, p := range last[0].Partitions {
			if p.Leader < 0 || p.Err != sarama.ErrNoError {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%v %+v", err, last) })
}

// saramaSync produces records `from..to` of `tag` with a SyncProducer in batches of 50.
func saramaSync(o *opts, codec sarama.CompressionCodec, topic, tag string, from, to int, v *verifier) {
	cfg := saramaConfig(o)
	saramaIdempotent(cfg, codec)
	p, err := sarama.NewSyncProducer(o.bootstrap, cfg)
	check(err, "sync producer "+tag)
	defer p.Close()
	for i := from; i < to; i += 50 {
		var msgs []*sarama.ProducerMessage
		for j := i; j < to && j < i+50; j++ {
			r := makeRecord(tag, j)
			v.expect(r)
			msgs = append(msgs, saramaMessage(topic, r))
		}
		check(p.SendMessages(msgs), "send messages "+tag)
		for _, m := range msgs {
			val, _ := m.Value.Encode()
			v.ack(string(val), m.Partition, m.Offset)
		}
	}
}

// saramaAsync produces records `0..count` of `tag` with an AsyncProducer.
func saramaAsync(o *opts, codec sarama.CompressionCodec, topic, tag string, count int, v *verifier) {
	cfg := saramaConfig(o)
	saramaIdempotent(cfg, codec)
	p, err := sarama.NewAsyncProducer(o.bootstrap, cfg)
	check(err, "async producer "+tag)
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range p.Successes() {
			val, _ := m.Value.Encode()
			v.ack(string(val), m.Partition, m.Offset)
		}
	}()
	go func() {
		defer wg.Done()
		for e := range p.Errors() {
			if firstErr == nil {
				firstErr = e
			}
		}
	}()
	for i := 0; i < count; i++ {
		r := makeRecord(tag, i)
		v.expect(r)
		p.Input() <- saramaMessage(topic, r)
	}
	p.AsyncClose() // flushes what is buffered, then closes Successes and Errors
	wg.Wait()
	check(firstErr, "async produce "+tag)
}

// saramaConsumeAll reads every partition of `topic` from the oldest offset to its end with
// partition consumers.
func saramaConsumeAll(ctx context.Context, o *opts, topic string, v *verifier) {
	cfg := saramaConfig(o)
	client, err := sarama.NewClient(o.bootstrap, cfg)
	check(err, "sarama client")
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	check(err, "consumer")
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	check(err, "partitions of "+topic)
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		check(err, "end offset")
		if end == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		check(err, fmt.Sprintf("consume partition %d", p))
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				v.add(m.Topic, m.Partition, m.Offset, m.Key, m.Value, saramaHeaders(m))
				done = m.Offset+1 >= end
			case e := <-pc.Errors():
				fail("partition consumer %s/%d: %v", topic, p, e)
			case <-ctx.Done():
				fail("partition consumer %s/%d: deadline before offset %d", topic, p, end)
			}
		}
		check(pc.Close(), "close partition consumer")
	}
}

// sarama produce: SyncProducer and AsyncProducer, idempotent, every codec; read back with
// partition consumers.
func saramaProduce(o *opts) result {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	topic := or(o.topic, "sarama-produce")
	count := orInt(o.count, 300)
	adm := saramaAdminClient(o)
	defer adm.Close()
	saramaCreateTopic(o, adm, topic, 4)
	v := newVerifier()
	var tags []string
	for _, c := range saramaCodecs {
		saramaSync(o, c.codec, topic, "sync-"+c.name, 0, count, v)
		saramaAsync(o, c.codec, topic, "async-"+c.name, count, v)
		tags = append(tags, "sync-"+c.name, "async-"+c.name)
	}
	saramaConsumeAll(ctx, o, topic, v)
	res := v.verdict("sarama produce")
	if acked := res["acked"].(int); acked != len(tags)*count {
		fail("%d records acknowledged with an offset, produced %d", acked, len(tags)*count)
	}
	res["configs"] = tags
	res["records_per_config"] = count
	res["version"] = saramaConfig(o).Version.String()
	return res
}

// saramaMember is one sarama ConsumerGroup member; its assignment is the set of claims whose
// ConsumeClaim is running.
type saramaMember struct {
	name     string
	cg       sarama.ConsumerGroup
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	assigned map[int32]bool
	consumed int
	readFrom map[int32]bool
	errs     []string
	v        *verifier
}

func (m *saramaMember) Setup(sarama.ConsumerGroupSession) error { return nil }

func (m *saramaMember) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	m.mu.Lock()
	m.assigned[c.Partition()] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.assigned, c.Partition())
		m.mu.Unlock()
	}()
	for msg := range c.Messages() {
		m.v.add(msg.Topic, msg.Partition, msg.Offset, msg.Key, msg.Value, saramaHeaders(msg))
		s.MarkMessage(msg, "")
		m.mu.Lock()
		m.consumed++
		m.readFrom[msg.Partition] = true
		m.mu.Unlock()
	}
	return nil
}

func saramaStrategy(name string) sarama.BalanceStrategy {
	switch name {
	case "range":
		return sarama.NewBalanceStrategyRange()
	case "sticky":
		return sarama.NewBalanceStrategySticky()
	case "roundrobin":
		return sarama.NewBalanceStrategyRoundRobin()
	case "cooperative-sticky":
		return sarama.NewBalanceStrategyCooperativeSticky()
	}
	fail("unknown strategy %q", name)
	return nil
}

func startSaramaMember(o *opts, name, topic, group string, v *verifier) *saramaMember {
	cfg := saramaConfig(o)
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{saramaStrategy(o.strategy)}
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.MaxWaitTime = 300 * time.Millisecond
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup(o.bootstrap, group, cfg)
	check(err, "consumer group "+name)
	m := &saramaMember{name: name, cg: cg, done: make(chan struct{}), assigned: map[int32]bool{}, readFrom: map[int32]bool{}, v: v}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		for err := range cg.Errors() {
			m.mu.Lock()
			m.errs = append(m.errs, err.Error())
			m.mu.Unlock()
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, m); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				m.mu.Lock()
				m.errs = append(m.errs, "consume: "+err.Error())
				m.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return m
}

func (m *saramaMember) assignment() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.assigned)
}

func (m *saramaMember) stop() {
	m.cancel()
	<-m.done
	check(m.cg.Close(), "close consumer group "+m.name)
}

func saramaDescribeMembers(ms ...*saramaMember) func() string {
	return func() string {
		s := ""
		for _, m := range ms {
			m.mu.Lock()
			s += fmt.Sprintf("%s assigned %v consumed %d errors %v; ", m.name, sortedKeys(m.assigned), m.consumed, m.errs)
			m.mu.Unlock()
		}
		return s
	}
}

func saramaDisjointCover(n int32, ms ...*saramaMember) bool {
	seen := map[int32]bool{}
	for _, m := range ms {
		a := m.assignment()
		if len(a) == 0 {
			return false
		}
		for _, p := range a {
			if seen[p] {
				return false
			}
			seen[p] = true
		}
	}
	return equalInt32(sortedKeys(seen), partitionsRange(n))
}

// sarama group: two members divide the partitions, one leaves and the other takes over, a
// new member resumes from the committed offsets.
func saramaGroup(o *opts) result {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	const parts = 6
	topic := or(o.topic, "sarama-group-"+o.strategy)
	group := or(o.group, "sarama-group-"+o.strategy)
	count := orInt(o.count, 300)
	adm := saramaAdminClient(o)
	defer adm.Close()
	saramaCreateTopic(o, adm, topic, parts)
	v := newVerifier()
	produced := 0
	produce := func(tag string) {
		saramaSync(o, sarama.CompressionNone, topic, tag, 0, count, v)
		produced += count
	}
	allRead := func() bool { return v.uniqueSeen() == produced }

	produce("before")
	a := startSaramaMember(o, "a", topic, group, v)
	waitFor(ctx, "member a to own all partitions and read the first records", 30*time.Second, func() bool {
		return equalInt32(a.assignment(), partitionsRange(parts)) && allRead()
	}, saramaDescribeMembers(a))

	b := startSaramaMember(o, "b", topic, group, v)
	stableFor(ctx, "members a and b to divide the partitions", 30*time.Second, time.Second, func() bool {
		return saramaDisjointCover(parts, a, b)
	}, saramaDescribeMembers(a, b))
	aShare, bShare := a.assignment(), b.assignment()
	for _, m := range []*saramaMember{a, b} {
		m.mu.Lock()
		m.readFrom = map[int32]bool{}
		m.mu.Unlock()
	}
	produce("both")
	waitFor(ctx, "both members to read the new records", 30*time.Second, allRead, saramaDescribeMembers(a, b))
	for _, m := range []*saramaMember{a, b} {
		m.mu.Lock()
		for p := range m.readFrom {
			if !m.assigned[p] {
				m.mu.Unlock()
				fail("member %s read partition %d outside its assignment", m.name, p)
			}
		}
		m.mu.Unlock()
	}

	b.stop()
	waitFor(ctx, "member a to take over every partition", 30*time.Second, func() bool {
		return equalInt32(a.assignment(), partitionsRange(parts))
	}, saramaDescribeMembers(a))
	produce("after-leave")
	waitFor(ctx, "member a to read the records produced after b left", 30*time.Second, allRead, saramaDescribeMembers(a))
	a.stop()

	committedOK := func() (bool, string) {
		resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: partitionsRange(parts)})
		check(err, "list consumer group offsets")
		client, err := sarama.NewClient(o.bootstrap, saramaConfig(o))
		check(err, "client")
		defer client.Close()
		ok, detail := true, ""
		for _, p := range partitionsRange(parts) {
			end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			check(err, "end offset")
			blk := resp.GetBlock(topic, p)
			if blk == nil || blk.Err != sarama.ErrNoError || blk.Offset != end {
				ok = false
				detail += fmt.Sprintf("p%d committed %+v end %d; ", p, blk, end)
			}
		}
		return ok, detail
	}
	if ok, detail := committedOK(); !ok {
		fail("committed offsets after both members left are not the end offsets: %s", detail)
	}
	groups, err := adm.DescribeConsumerGroups([]string{group})
	check(err, "describe consumer groups")
	if len(groups) != 1 || groups[0].State != "Empty" {
		fail("group after every member left: %+v", groups)
	}
	before := v.uniqueSeen()
	produce("resumed")
	c := startSaramaMember(o, "c", topic, group, v)
	waitFor(ctx, "a new member to read the records produced while the group was empty", 30*time.Second, allRead, saramaDescribeMembers(c))
	time.Sleep(500 * time.Millisecond)
	c.stop()
	if ok, detail := committedOK(); !ok {
		fail("committed offsets after the new member left are not the end offsets: %s", detail)
	}
	res := v.verdict("sarama group")
	if v.duplicates != 0 {
		fail("records read twice across rebalances: %d", v.duplicates)
	}
	var errs []string
	for _, m := range []*saramaMember{a, b, c} {
		for _, e := range m.errs {
			errs = append(errs, m.name+": "+e)
		}
	}
	res["strategy"] = o.strategy
	res["version"] = saramaConfig(o).Version.String()
	res["assignment_a"] = aShare
	res["assignment_b"] = bShare
	res["resumed_records"] = v.uniqueSeen() - before
	res["resumed_read"] = c.consumed
	res["state_after_leave"] = groups[0].State
	res["errors"] = errs
	return res
}
