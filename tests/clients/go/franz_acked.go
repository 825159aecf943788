package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// franz produce-acked: an idempotent acks=all producer that runs until --stop-file exists or
// --duration has passed (while the test kills a broker), about 500 records a second, and appends "partition offset value" to --acks-out for every record the
// broker acknowledged, as soon as it is acknowledged.
func franzProduceAcked(o *opts) result {
	if o.topic == "" || o.acksOut == "" {
		fail("--topic and --acks-out are required")
	}
	out, err := os.OpenFile(o.acksOut, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	check(err, "open --acks-out")
	defer out.Close()
	cl := franzClient(o,
		kgo.DefaultProduceTopic(o.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProduceRequestTimeout(10*time.Second),
	)
	defer cl.Close()

	var mu sync.Mutex
	acked, failed := 0, 0
	errs := map[string]int{}
	var lastAck time.Time
	var longestGap time.Duration
	start := time.Now()
	// Records still unacknowledged shortly before the scenario deadline count as failed.
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout-5*time.Second)
	defer cancel()
	produced := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	stopped := func() bool {
		if o.stopFile == "" {
			return false
		}
		_, err := os.Stat(o.stopFile)
		return err == nil
	}
	for time.Since(start) < o.duration && (produced%50 != 0 || !stopped()) {
		<-tick.C
		i := produced
		produced++
		rec := &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%30)), Value: []byte(fmt.Sprintf("acked|%d", i))}
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				errs[err.Error()]++
				return
			}
			now := time.Now()
			if !lastAck.IsZero() && now.Sub(lastAck) > longestGap {
				longestGap = now.Sub(lastAck)
			}
			lastAck = now
			acked++
			if _, werr := fmt.Fprintf(out, "%d %d %s\n", r.Partition, r.Offset, r.Value); werr != nil {
				errs["write acks: "+werr.Error()]++
			}
		})
	}
	// Whatever is still buffered gets until the deadline; then it counts as not acknowledged.
	flushErr := cl.Flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	res := result{
		"produced":           produced,
		"acked":              acked,
		"failed":             failed,
		"errors":             errs,
		"longest_ack_gap_ms": longestGap.Milliseconds(),
		"seconds":            time.Since(start).Seconds(),
	}
	if flushErr != nil {
		res["flush_error"] = flushErr.Error()
	}
	if acked+failed != produced {
		fail("%d records produced, %d acknowledged, %d failed: %d never finished (%v)", produced, acked, failed, produced-acked-failed, flushErr)
	}
	return res
}

// franz verify-acked: every record in --acks-in is in the topic at its acknowledged offset;
// also counts records that are in the topic twice.
func franzVerifyAcked(o *opts) result {
	if o.topic == "" || o.acksIn == "" {
		fail("--topic and --acks-in are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	f, err := os.Open(o.acksIn)
	check(err, "open --acks-in")
	want := map[pos]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			fail("bad line in %s: %q", o.acksIn, sc.Text())
		}
		p, err1 := strconv.Atoi(fields[0])
		off, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			fail("bad line in %s: %q", o.acksIn, sc.Text())
		}
		at := pos{int32(p), off}
		if prev, dup := want[at]; dup {
			fail("two records acknowledged at %d@%d: %s and %s", p, off, prev, fields[2])
		}
		want[at] = fields[2]
	}
	check(sc.Err(), "read --acks-in")
	f.Close()

	adm := kadm.NewClient(franzClient(o))
	defer adm.Close()
	ends, err := adm.ListEndOffsets(ctx, o.topic)
	check(err, "list end offsets")
	check(ends.Error(), "list end offsets")
	cl := franzClient(o, kgo.ConsumeTopics(o.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond))
	defer cl.Close()
	next := map[int32]int64{}
	got := map[pos]string{}
	seen := map[string]int{}
	duplicates := 0
	endsOf := map[int32]int64{}
	ends.Each(func(l kadm.ListedOffset) { endsOf[l.Partition] = l.Offset })
	done := func() bool {
		for p, e := range endsOf {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	for !done() {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			fail("consume: deadline; read up to %v, end offsets %v", next, endsOf)
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fmt.Fprintf(os.Stderr, "fetch %s/%d: %v\n", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			got[pos{r.Partition, r.Offset}] = v
			seen[v]++
			if seen[v] == 2 {
				duplicates++
			}
			next[r.Partition] = r.Offset + 1
		})
	}
	lost, moved := 0, 0
	var examples []string
	for at, v := range want {
		g, ok := got[at]
		switch {
		case !ok && seen[v] == 0:
			lost++
			examples = append(examples, fmt.Sprintf("%s (acked at %d@%d) is gone", v, at.partition, at.offset))
		case g != v:
			moved++
			examples = append(examples, fmt.Sprintf("%d@%d holds %q, acked %q", at.partition, at.offset, g, v))
		}
	}
	sort.Strings(examples)
	if len(examples) > 10 {
		examples = examples[:10]
	}
	if lost > 0 || moved > 0 {
		fail("%d of %d acknowledged records lost, %d not at their acknowledged offset: %s", lost, len(want), moved, strings.Join(examples, "; "))
	}
	var total int64
	for _, e := range endsOf {
		total += e
	}
	return result{
		"acked":            len(want),
		"lost":             lost,
		"moved":            moved,
		"records_in_topic": total,
		"duplicates":       duplicates,
		"partitions":       len(endsOf),
	}
}
