package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// A generated record: every field is a function of (tag, seq), so a consumer can check what
// it reads without the producer's help. `tag` names the producer configuration.
type genRecord struct {
	tag     string
	seq     int
	key     string
	value   string
	headers []hdr
}

type hdr struct{ k, v string }

// keysPerTag spreads a producer's records over this many keys (so over all partitions).
const keysPerTag = 24

func makeRecord(tag string, seq int) genRecord {
	// Repetitive padding of varying length so that every codec has something to compress,
	// and batches of different sizes.
	pad := strings.Repeat("fjord-", seq%40)
	return genRecord{
		tag:   tag,
		seq:   seq,
		key:   fmt.Sprintf("%s-key-%d", tag, seq%keysPerTag),
		value: fmt.Sprintf("%s|%d|%s", tag, seq, pad),
		headers: []hdr{
			{"tag", tag},
			{"seq", strconv.Itoa(seq)},
			{"empty", ""},
		},
	}
}

// parseValue returns the tag and sequence number a generated value encodes.
func parseValue(v string) (string, int, bool) {
	parts := strings.SplitN(v, "|", 3)
	if len(parts) != 3 {
		return "", 0, false
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		return "", 0, false
	}
	return parts[0], n, true
}

type tp struct {
	topic     string
	partition int32
}

type pos struct {
	partition int32
	offset    int64
}

// verifier checks consumed records against what was produced: every record exactly once,
// keys, values and headers intact, offsets increasing, each producer's records in order
// within a partition, records of one key in one partition, and acknowledged offsets right.
type verifier struct {
	mu         sync.Mutex
	expected   map[string]genRecord // by value
	acked      map[string]pos       // value -> where the producer was told it landed
	seen       map[string]int
	lastOffset map[tp]int64
	lastSeq    map[string]int   // "topic/partition/tag" -> last seq read there
	keyAt      map[string]int32 // key -> the partition its records are in
	problems   []string
	nProblems  int
	consumed   int
	duplicates int
	perTag     map[string]int
}

func newVerifier() *verifier {
	return &verifier{
		expected:   map[string]genRecord{},
		acked:      map[string]pos{},
		seen:       map[string]int{},
		lastOffset: map[tp]int64{},
		lastSeq:    map[string]int{},
		keyAt:      map[string]int32{},
		perTag:     map[string]int{},
	}
}

func (v *verifier) expect(r genRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expected[r.value] = r
}

// ack records where a producer was told a record landed (offset -1: unknown, e.g. acks=0).
func (v *verifier) ack(value string, partition int32, offset int64) {
	if offset < 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.acked[value] = pos{partition, offset}
}

func (v *verifier) problem(format string, args ...any) {
	v.nProblems++
	if len(v.problems) < 10 {
		v.problems = append(v.problems, fmt.Sprintf(format, args...))
	}
}

// add checks one consumed record.
func (v *verifier) add(topic string, partition int32, offset int64, key, value []byte, headers []hdr) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.consumed++
	val := string(value)
	at := tp{topic, partition}
	if last, ok := v.lastOffset[at]; ok && offset <= last {
		v.problem("%s/%d: offset %d read after %d", topic, partition, offset, last)
	}
	v.lastOffset[at] = offset
	want, ok := v.expected[val]
	if !ok {
		v.problem("%s/%d@%d: unexpected record value %.60q", topic, partition, offset, val)
		return
	}
	v.seen[val]++
	if v.seen[val] > 1 {
		v.duplicates++
		v.problem("%s/%d@%d: duplicate of %s #%d", topic, partition, offset, want.tag, want.seq)
		return
	}
	v.perTag[want.tag]++
	if string(key) != want.key {
		v.problem("%s/%d@%d: key %q, want %q", topic, partition, offset, key, want.key)
	}
	if !sameHeaders(headers, want.headers) {
		v.problem("%s/%d@%d: headers %v, want %v", topic, partition, offset, headers, want.headers)
	}
	if p, ok := v.keyAt[want.key]; ok && p != partition {
		v.problem("key %s in partitions %d and %d", want.key, p, partition)
	}
	v.keyAt[want.key] = partition
	seqKey := fmt.Sprintf("%s/%d/%s", topic, partition, want.tag)
	if last, ok := v.lastSeq[seqKey]; ok && want.seq <= last {
		v.problem("%s/%d@%d: %s #%d after #%d (producer order lost)", topic, partition, offset, want.tag, want.seq, last)
	}
	v.lastSeq[seqKey] = want.seq
	if p, ok := v.acked[val]; ok && (p.partition != partition || p.offset != offset) {
		v.problem("%s #%d acknowledged at %d@%d, read at %d@%d", want.tag, want.seq, p.partition, p.offset, partition, offset)
	}
}

func sameHeaders(a, b []hdr) bool {
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

// uniqueSeen is the number of distinct expected records read so far.
func (v *verifier) uniqueSeen() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.seen)
}

// missing lists (a few of) the expected records never read.
func (v *verifier) missing() (int, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var names []string
	n := 0
	for val, r := range v.expected {
		if v.seen[val] == 0 {
			n++
			names = append(names, fmt.Sprintf("%s#%d", r.tag, r.seq))
		}
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = names[:10]
	}
	return n, names
}

// verdict fails the scenario if anything was wrong, else returns the counts.
func (v *verifier) verdict(what string) result {
	nMissing, missing := v.missing()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nProblems > 0 {
		fail("%s: %d problems in consumed records, first: %s", what, v.nProblems, strings.Join(v.problems, "; "))
	}
	if nMissing > 0 {
		fail("%s: %d of %d produced records never consumed: %s", what, nMissing, len(v.expected), strings.Join(missing, " "))
	}
	perTag := map[string]int{}
	for k, n := range v.perTag {
		perTag[k] = n
	}
	return result{
		"expected":   len(v.expected),
		"consumed":   v.consumed,
		"duplicates": v.duplicates,
		"acked":      len(v.acked),
		"partitions": len(v.lastOffset),
		"per_config": perTag,
	}
}
