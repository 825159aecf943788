// fjord-go-clients drives a Kafka-protocol broker with two Go clients, franz-go (with kadm)
// and IBM/sarama, one scenario per subcommand:
//
//	fjord-go-clients franz produce       --bootstrap HOST:PORT [--topic T] [--count N]
//	fjord-go-clients franz group         --bootstrap HOST:PORT --balancer cooperative-sticky|range|sticky|roundrobin|848-range|848-uniform
//	fjord-go-clients franz admin         --bootstrap HOST:PORT
//	fjord-go-clients franz produce-acked --bootstrap HOST:PORT --topic T --acks-out FILE [--stop-file F] [--duration 8s]
//	fjord-go-clients franz verify-acked  --bootstrap HOST:PORT --topic T --acks-in FILE
//	fjord-go-clients sarama produce      --bootstrap HOST:PORT [--version default|newest|X.Y.Z]
//	fjord-go-clients sarama group        --bootstrap HOST:PORT --strategy range|sticky|roundrobin
//	fjord-go-clients sarama admin        --bootstrap HOST:PORT
//
// On success a scenario prints one JSON line of results on stdout and exits 0. On failure it
// prints {"ok":false,"error":...} on stdout, the reason as the last line of stderr, and exits 1.
// Client logs (warnings and up) go to stderr.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// opts are the flags every scenario understands (each uses the ones it needs).
type opts struct {
	bootstrap []string
	topic     string
	group     string
	balancer  string
	strategy  string
	version   string
	count     int
	duration  time.Duration
	timeout   time.Duration
	acksOut   string
	acksIn    string
	stopFile  string
	verbose   bool
}

// scenarioError is a failed check: the reason that ends the program.
type scenarioError struct{ msg string }

func (e *scenarioError) Error() string { return e.msg }

// fail ends the current scenario with a reason (recovered in main).
func fail(format string, args ...any) {
	panic(&scenarioError{fmt.Sprintf(format, args...)})
}

// check fails the scenario with `what: err` when err is not nil.
func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

// result is the JSON object a scenario prints.
type result map[string]any

type scenario func(o *opts) result

var scenarios = map[string]scenario{
	"franz produce":       franzProduce,
	"franz group":         franzGroup,
	"franz admin":         franzAdmin,
	"franz produce-acked": franzProduceAcked,
	"franz verify-acked":  franzVerifyAcked,
	"sarama produce":      saramaProduce,
	"sarama group":        saramaGroup,
	"sarama admin":        saramaAdmin,
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: fjord-go-clients franz|sarama SCENARIO --bootstrap HOST:PORT [flags]")
	fmt.Fprintln(os.Stderr, "scenarios:")
	for name := range scenarios {
		fmt.Fprintln(os.Stderr, "  "+name)
	}
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	name := os.Args[1] + " " + os.Args[2]
	run, ok := scenarios[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "fjord-go-clients: unknown scenario %q\n", name)
		usage()
	}
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	o := &opts{}
	bootstrap := fs.String("bootstrap", "", "comma-separated HOST:PORT list (required)")
	fs.StringVar(&o.topic, "topic", "", "topic (default: a name derived from the scenario)")
	fs.StringVar(&o.group, "group", "", "group id (default: derived from the scenario)")
	fs.StringVar(&o.balancer, "balancer", "cooperative-sticky", "franz group balancer")
	fs.StringVar(&o.strategy, "strategy", "range", "sarama group rebalance strategy")
	fs.StringVar(&o.version, "version", "newest", "sarama Config.Version: default, newest, or X.Y.Z")
	fs.IntVar(&o.count, "count", 0, "records per producer (0: scenario default)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "produce-acked: produce at most this long")
	fs.DurationVar(&o.timeout, "timeout", 90*time.Second, "the whole scenario's deadline")
	fs.StringVar(&o.acksOut, "acks-out", "", "produce-acked: file for acknowledged records")
	fs.StringVar(&o.acksIn, "acks-in", "", "verify-acked: file written by produce-acked")
	fs.StringVar(&o.stopFile, "stop-file", "", "produce-acked: stop producing once this file exists")
	fs.BoolVar(&o.verbose, "verbose", false, "debug logs of the clients on stderr")
	check(fs.Parse(os.Args[3:]), "flags")
	if *bootstrap == "" {
		fmt.Fprintln(os.Stderr, "fjord-go-clients: --bootstrap is required")
		os.Exit(2)
	}
	o.bootstrap = strings.Split(*bootstrap, ",")

	// A scenario that hangs is a failure with a reason, not a test timeout.
	timer := time.AfterFunc(o.timeout, func() {
		finish(name, nil, fmt.Errorf("scenario did not finish within %v", o.timeout))
	})
	res, err := runScenario(run, o)
	timer.Stop()
	finish(name, res, err)
}

func runScenario(run scenario, o *opts) (res result, err error) {
	defer func() {
		if r := recover(); r != nil {
			if se, ok := r.(*scenarioError); ok {
				err = se
				return
			}
			panic(r)
		}
	}()
	return run(o), nil
}

func finish(name string, res result, err error) {
	if err != nil {
		line, _ := json.Marshal(result{"ok": false, "scenario": name, "error": err.Error()})
		fmt.Println(string(line))
		fmt.Fprintf(os.Stderr, "fjord-go-clients %s: FAILED: %s\n", name, oneLine(err.Error()))
		os.Exit(1)
	}
	res["ok"] = true
	res["scenario"] = name
	line, jerr := json.Marshal(res)
	if jerr != nil {
		fmt.Fprintf(os.Stderr, "fjord-go-clients %s: FAILED: encode result: %v\n", name, jerr)
		os.Exit(1)
	}
	fmt.Println(string(line))
	os.Exit(0)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
