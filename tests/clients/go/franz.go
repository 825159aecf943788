package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// franzClient is a franz-go client for the scenario's brokers with warnings on stderr.
func franzClient(o *opts, extra ...kgo.Opt) *kgo.Client {
	level := kgo.LogLevelWarn
	if o.verbose {
		level = kgo.LogLevelDebug
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(o.bootstrap...),
		kgo.ClientID("fjord-go-franz"),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, level, func() string {
			return time.Now().Format("15:04:05.000 ")
		})),
		kgo.RetryTimeout(20 * time.Second),
		// kadm answers from the client's metadata cache; keep it young so that waiting for a
		// change to reach the brokers sees it.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(base, extra...)...)
	check(err, "franz-go client")
	return cl
}

// codecs are the four Kafka codecs plus none, by their record-batch attribute number.
var franzCodecs = []struct {
	name  string
	id    uint8
	codec kgo.CompressionCodec
}{
	{"none", 0, kgo.NoCompression()},
	{"gzip", 1, kgo.GzipCompression()},
	{"snappy", 2, kgo.SnappyCompression()},
	{"lz4", 3, kgo.Lz4Compression()},
	{"zstd", 4, kgo.ZstdCompression()},
}

var codecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// batchCodecs counts record batches by codec as the client writes or reads them (hooks).
type batchCodecs struct {
	mu      sync.Mutex
	written map[string]int
	read    map[string]int
}

func newBatchCodecs() *batchCodecs {
	return &batchCodecs{written: map[string]int{}, read: map[string]int{}}
}

func (b *batchCodecs) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.written[codecNames[m.CompressionType%5]]++
}

func (b *batchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read[codecNames[m.CompressionType%5]]++
}

func franzRecord(topic string, r genRecord) *kgo.Record {
	rec := &kgo.Record{Topic: topic, Key: []byte(r.key), Value: []byte(r.value)}
	for _, h := range r.headers {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.k, Value: []byte(h.v)})
	}
	return rec
}

func franzHeaders(rec *kgo.Record) []hdr {
	out := make([]hdr, 0, len(rec.Headers))
	for _, h := range rec.Headers {
		out = append(out, hdr{h.Key, string(h.Value)})
	}
	return out
}

// createTopic creates a topic and waits until Metadata shows a leader for each partition: a
// broker learns of a new topic shortly after the controller created it (Kafka's own tests wait
// the same way), and a producer that asks before gives up after a few UNKNOWN_TOPIC_OR_PARTITION.
func createTopic(ctx context.Context, cl *kgo.Client, topic string, partitions int32, rf int16, configs map[string]*string) {
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, rf, configs, topic)
	check(err, "create topic "+topic)
	check(resp.Err, "create topic "+topic)
	waitTopicLed(ctx, cl, topic, int(partitions))
}

// freshTopic asks a broker for one topic's metadata, bypassing the client's metadata cache
// (kadm's listing answers from it). Returns nil if the broker does not know the topic.
func freshTopic(ctx context.Context, cl *kgo.Client, topic string) *kmsg.MetadataResponseTopic {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		return nil
	}
	return &resp.Topics[0]
}

// waitTopicLed waits until Metadata shows `partitions` partitions of `topic`, each with a leader.
func waitTopicLed(ctx context.Context, cl *kgo.Client, topic string, partitions int) {
	var last *kmsg.MetadataResponseTopic
	waitFor(ctx, fmt.Sprintf("%d partitions of %s with leaders in metadata", partitions, topic), 15*time.Second, func() bool {
		last = freshTopic(ctx, cl, topic)
		if last == nil || len(last.Partitions) != partitions {
			return false
		}
		for _, p := range last.Partitions {
			if p.Leader < 0 || p.ErrorCode != 0 {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("last answer %+v", last) })
}

// produceTag produces records `from..to` of `tag` with `cl` and waits for every ack.
func produceTag(ctx context.Context, cl *kgo.Client, topic, tag string, from, to int, v *verifier, knowOffsets bool) {
	var mu sync.Mutex
	var firstErr error
	for i := from; i < to; i++ {
		r := makeRecord(tag, i)
		v.expect(r)
		cl.Produce(ctx, franzRecord(topic, r), func(rec *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			if knowOffsets {
				v.ack(string(rec.Value), rec.Partition, rec.Offset)
			}
		})
	}
	check(cl.Flush(ctx), "flush "+tag)
	check(firstErr, "produce "+tag)
}

// consumeAll reads `topics` from the start (no group) until every expected record was read
// and each partition is read up to its end offset.
func consumeAll(ctx context.Context, o *opts, v *verifier, hooks *batchCodecs, topics ...string) {
	adm := kadm.NewClient(franzClient(o))
	defer adm.Close()
	ends, err := adm.ListEndOffsets(ctx, topics...)
	check(err, "list end offsets")
	check(ends.Error(), "list end offsets")
	extra := []kgo.Opt{
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	if hooks != nil {
		extra = append(extra, kgo.WithHooks(hooks))
	}
	cl := franzClient(o, extra...)
	defer cl.Close()
	next := map[tp]int64{}
	done := func() bool {
		for _, ps := range ends {
			for _, e := range ps {
				if next[tp{e.Topic, e.Partition}] < e.Offset {
					return false
				}
			}
		}
		return true
	}
	for !done() {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			n, missing := v.missing()
			fail("consume: deadline with %d records missing (%v); read up to %v, end offsets %v", n, missing, next, ends)
		}
		fetches.EachError(func(t string, p int32, err error) {
			fail("consume %s/%d: %v", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			v.add(r.Topic, r.Partition, r.Offset, r.Key, r.Value, franzHeaders(r))
			next[tp{r.Topic, r.Partition}] = r.Offset + 1
		})
	}
}

// franz produce: every acks mode and codec, keys and headers, then everything read back.
func franzProduce(o *opts) result {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	topic := or(o.topic, "franz-produce")
	count := orInt(o.count, 300)
	acl := franzClient(o)
	adm := kadm.NewClient(acl)
	defer adm.Close()
	createTopic(ctx, acl, topic, 4, 1, nil)

	v := newVerifier()
	hooks := newBatchCodecs()
	var tags []string
	for _, acks := range []string{"all", "leader", "none"} {
		for _, c := range franzCodecs {
			tag := fmt.Sprintf("acks-%s-%s", acks, c.name)
			extra := []kgo.Opt{
				kgo.DefaultProduceTopic(topic),
				kgo.ProducerBatchCompression(c.codec),
				kgo.ProducerLinger(5 * time.Millisecond),
				kgo.WithHooks(hooks),
			}
			switch acks {
			case "all": // idempotent, as franz-go is by default
				extra = append(extra, kgo.RequiredAcks(kgo.AllISRAcks()))
			case "leader":
				extra = append(extra, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
			case "none":
				extra = append(extra, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
			}
			cl := franzClient(o, extra...)
			produceTag(ctx, cl, topic, tag, 0, count, v, acks != "none")
			cl.Close()
			tags = append(tags, tag)
		}
	}
	consumeAll(ctx, o, v, hooks, topic)
	res := v.verdict("franz produce")

	// Nothing more in the topic than what was produced.
	ends, err := adm.ListEndOffsets(ctx, topic)
	check(err, "list end offsets")
	var total int64
	ends.Each(func(l kadm.ListedOffset) { total += l.Offset })
	if total != int64(len(tags)*count) {
		fail("topic holds %d records, produced %d", total, len(tags)*count)
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	for _, c := range codecNames {
		if hooks.written[c] == 0 || hooks.read[c] == 0 {
			fail("codec %s: %d batches written, %d read", c, hooks.written[c], hooks.read[c])
		}
	}
	res["configs"] = tags
	res["records_per_config"] = count
	res["end_offsets_total"] = total
	res["batches_written"] = hooks.written
	res["batches_read"] = hooks.read
	return res
}

// groupMember is one franz-go group consumer running its poll loop in a goroutine; it
// commits what it processed after every poll (and on revoke) so that a partition moving to
// another member continues where this one stopped.
type groupMember struct {
	name     string
	cl       *kgo.Client
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	assigned map[int32]bool
	consumed int
	// partitions this member read records from since the last reset
	readFrom   map[int32]bool
	lost       int
	commitErrs []string
}

func startGroupMember(o *opts, name, topic, group string, v *verifier) *groupMember {
	m := &groupMember{name: name, done: make(chan struct{}), assigned: map[int32]bool{}, readFrom: map[int32]bool{}}
	set := func(ps map[string][]int32, on bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range ps[topic] {
			if on {
				m.assigned[p] = true
			} else {
				delete(m.assigned, p)
			}
		}
	}
	extra := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(300 * time.Millisecond),
		kgo.HeartbeatInterval(300 * time.Millisecond),
		kgo.SessionTimeout(10 * time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			set(ps, true)
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				m.mu.Lock()
				m.commitErrs = append(m.commitErrs, "on revoke: "+err.Error())
				m.mu.Unlock()
			}
			set(ps, false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			m.mu.Lock()
			m.lost++
			m.mu.Unlock()
			set(ps, false)
		}),
	}
	extra = append(extra, franzBalancerOpts(o.balancer)...)
	m.cl = franzClient(o, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for {
			fetches := m.cl.PollFetches(ctx)
			if ctx.Err() != nil || fetches.IsClientClosed() {
				m.cl.AllowRebalance()
				return
			}
			fetches.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.Canceled) {
					fmt.Fprintf(os.Stderr, "%s: fetch %s/%d: %v\n", name, t, p, err)
				}
			})
			recs := fetches.Records()
			for _, r := range recs {
				v.add(r.Topic, r.Partition, r.Offset, r.Key, r.Value, franzHeaders(r))
			}
			if len(recs) > 0 {
				err := m.cl.CommitRecords(ctx, recs...)
				m.mu.Lock()
				m.consumed += len(recs)
				for _, r := range recs {
					m.readFrom[r.Partition] = true
				}
				if err != nil && ctx.Err() == nil {
					m.commitErrs = append(m.commitErrs, err.Error())
				}
				m.mu.Unlock()
			}
			m.cl.AllowRebalance()
		}
	}()
	return m
}

func franzBalancerOpts(name string) []kgo.Opt {
	switch name {
	case "cooperative-sticky":
		return []kgo.Opt{kgo.Balancers(kgo.CooperativeStickyBalancer())}
	case "range":
		return []kgo.Opt{kgo.Balancers(kgo.RangeBalancer())}
	case "sticky":
		return []kgo.Opt{kgo.Balancers(kgo.StickyBalancer())}
	case "roundrobin":
		return []kgo.Opt{kgo.Balancers(kgo.RoundRobinBalancer())}
	case "848-range": // KIP-848: the broker assigns with its "range" assignor
		return []kgo.Opt{kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer()}
	case "848-uniform": // KIP-848: franz-go asks for "uniform" with its sticky balancer
		return []kgo.Opt{kgo.Balancers(kgo.StickyBalancer()), kgo.ServerSideBalancer()}
	}
	fail("unknown balancer %q", name)
	return nil
}

func (m *groupMember) assignment() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.assigned)
}

func (m *groupMember) readPartitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.readFrom)
}

func (m *groupMember) resetRead() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readFrom = map[int32]bool{}
}

// stop ends the poll loop and closes the client, which commits (on revoke) and leaves.
func (m *groupMember) stop() {
	m.cancel()
	<-m.done
	m.cl.CloseAllowingRebalance()
}

func (m *groupMember) errs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.commitErrs...)
}

func sortedKeys(s map[int32]bool) []int32 {
	out := make([]int32, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// waitFor polls cond every 50 ms until it holds, failing with `what` at the deadline.
func waitFor(ctx context.Context, what string, d time.Duration, cond func() bool, detail func() string) {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			fail("timed out after %v waiting for %s: %s", d, what, detail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stableFor waits until cond has held continuously for `hold`.
func stableFor(ctx context.Context, what string, d, hold time.Duration, cond func() bool, detail func() string) {
	var since time.Time
	waitFor(ctx, what, d, func() bool {
		if !cond() {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= hold
	}, detail)
}

func partitionsRange(n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

func equalInt32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// disjointCover: the members' assignments do not overlap, none is empty, and together they
// cover every partition.
func disjointCover(n int32, ms ...*groupMember) bool {
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

func describeMembers(ms ...*groupMember) func() string {
	return func() string {
		s := ""
		for _, m := range ms {
			m.mu.Lock()
			s += fmt.Sprintf("%s assigned %v consumed %d lost %d commit errors %v; ", m.name, sortedKeys(m.assigned), m.consumed, m.lost, m.commitErrs)
			m.mu.Unlock()
		}
		return s
	}
}

// franz group: two members share a topic, one leaves and the other takes over, and a new
// member resumes from the committed offsets.
func franzGroup(o *opts) result {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	const parts = 6
	topic := or(o.topic, "franz-group-"+o.balancer)
	group := or(o.group, "franz-group-"+o.balancer)
	count := orInt(o.count, 300)
	acl := franzClient(o)
	adm := kadm.NewClient(acl)
	defer adm.Close()
	createTopic(ctx, acl, topic, parts, 1, nil)
	producer := franzClient(o, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	defer producer.Close()
	v := newVerifier()
	produced := 0
	produce := func(tag string) {
		produceTag(ctx, producer, topic, tag, 0, count, v, true)
		produced += count
	}
	allRead := func() bool { return v.uniqueSeen() == produced }

	// One member takes every partition and reads the first records.
	produce("before")
	a := startGroupMember(o, "a", topic, group, v)
	waitFor(ctx, "member a to own all partitions and read the first records", 30*time.Second, func() bool {
		return equalInt32(a.assignment(), partitionsRange(parts)) && allRead()
	}, describeMembers(a))

	// A second member joins: the partitions are divided without overlap.
	b := startGroupMember(o, "b", topic, group, v)
	stableFor(ctx, "members a and b to divide the partitions", 30*time.Second, time.Second, func() bool {
		return disjointCover(parts, a, b)
	}, describeMembers(a, b))
	aShare, bShare := a.assignment(), b.assignment()
	described := describeGroup(ctx, adm, group, o.balancer)
	if described["members"] != 2 || described["state"] != "Stable" {
		fail("group with two members described as %v", described)
	}
	a.resetRead()
	b.resetRead()
	produce("both")
	waitFor(ctx, "both members to read the new records", 30*time.Second, allRead, describeMembers(a, b))
	for _, m := range []*groupMember{a, b} {
		for _, p := range m.readPartitions() {
			if !containsInt32(m.assignment(), p) {
				fail("member %s read partition %d outside its assignment %v", m.name, p, m.assignment())
			}
		}
	}

	// b leaves (committing first); a takes over all partitions where b stopped.
	b.stop()
	waitFor(ctx, "member a to take over every partition", 30*time.Second, func() bool {
		return equalInt32(a.assignment(), partitionsRange(parts))
	}, describeMembers(a))
	produce("after-leave")
	waitFor(ctx, "member a to read the records produced after b left", 30*time.Second, allRead, describeMembers(a))
	a.stop()

	// The committed offsets are the end offsets, and a new member resumes from them.
	committedOK := func() (bool, string) {
		ends, err := adm.ListEndOffsets(ctx, topic)
		check(err, "list end offsets")
		fetched, err := adm.FetchOffsets(ctx, group)
		check(err, "fetch offsets")
		check(fetched.Error(), "fetch offsets")
		ok := true
		detail := ""
		ends.Each(func(e kadm.ListedOffset) {
			c, found := fetched.Lookup(topic, e.Partition)
			if !found || c.At != e.Offset {
				ok = false
				detail += fmt.Sprintf("p%d committed %d (found %v) end %d; ", e.Partition, c.At, found, e.Offset)
			}
		})
		return ok, detail
	}
	if ok, detail := committedOK(); !ok {
		fail("committed offsets after both members left are not the end offsets: %s", detail)
	}
	stateAfterLeave := groupState(ctx, adm, group, o.balancer)
	if stateAfterLeave != "Empty" {
		fail("group state after every member left: %q, want Empty", stateAfterLeave)
	}
	before := v.uniqueSeen()
	produce("resumed")
	c := startGroupMember(o, "c", topic, group, v)
	waitFor(ctx, "a new member to read the records produced while the group was empty", 30*time.Second, allRead, describeMembers(c))
	time.Sleep(500 * time.Millisecond) // anything older it would re-read arrives now
	c.stop()
	if ok, detail := committedOK(); !ok {
		fail("committed offsets after the new member left are not the end offsets: %s", detail)
	}
	res := v.verdict("franz group")
	if v.duplicates != 0 {
		fail("records read twice across rebalances: %d", v.duplicates)
	}
	var errs []string
	for _, m := range []*groupMember{a, b, c} {
		for _, e := range m.errs() {
			errs = append(errs, m.name+": "+e)
		}
	}
	protocol := "classic"
	if len(o.balancer) > 4 && o.balancer[:4] == "848-" {
		protocol = "consumer"
	}
	res["balancer"] = o.balancer
	res["protocol"] = protocol
	res["assignment_a"] = aShare
	res["assignment_b"] = bShare
	res["after_leave_a"] = partitionsRange(parts)
	res["resumed_records"] = v.uniqueSeen() - before
	res["resumed_read"] = c.consumed
	res["state_after_leave"] = stateAfterLeave
	res["described"] = described
	res["commit_errors"] = errs
	res["lost_events"] = a.lost + b.lost + c.lost
	return res
}

func containsInt32(s []int32, x int32) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// groupState describes the group with the API its protocol uses (DescribeGroups for classic
// groups, ConsumerGroupDescribe for KIP-848 ones).
func groupState(ctx context.Context, adm *kadm.Client, group, balancer string) string {
	if len(balancer) > 4 && balancer[:4] == "848-" {
		d, err := adm.DescribeConsumerGroups(ctx, group)
		check(err, "describe consumer group")
		g, ok := d[group]
		if !ok {
			fail("describe consumer group: %s missing", group)
		}
		check(g.Err, "describe consumer group")
		return g.State
	}
	d, err := adm.DescribeGroups(ctx, group)
	check(err, "describe group")
	g, ok := d[group]
	if !ok {
		fail("describe group: %s missing", group)
	}
	check(g.Err, "describe group")
	return g.State
}

// describeGroup: state, member count and protocol (classic: the client-side balancer the
// group chose; KIP-848: the broker's assignor) with the API of the group's protocol.
func describeGroup(ctx context.Context, adm *kadm.Client, group, balancer string) map[string]any {
	listed, err := adm.ListGroups(ctx)
	check(err, "list groups")
	l, ok := listed[group]
	if !ok {
		fail("list groups: no %s in %v", group, listed)
	}
	d := describeGroupOnly(ctx, adm, group, balancer)
	d["type"] = l.GroupType
	d["listed_state"] = l.State
	return d
}

func describeGroupOnly(ctx context.Context, adm *kadm.Client, group, balancer string) map[string]any {
	if len(balancer) > 4 && balancer[:4] == "848-" {
		d, err := adm.DescribeConsumerGroups(ctx, group)
		check(err, "describe consumer group")
		g := d[group]
		check(g.Err, "describe consumer group")
		return map[string]any{"api": "ConsumerGroupDescribe", "state": g.State, "members": len(g.Members), "assignor": g.AssignorName}
	}
	d, err := adm.DescribeGroups(ctx, group)
	check(err, "describe group")
	g := d[group]
	check(g.Err, "describe group")
	return map[string]any{"api": "DescribeGroups", "state": g.State, "members": len(g.Members), "assignor": g.Protocol, "protocol_type": g.ProtocolType}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}
