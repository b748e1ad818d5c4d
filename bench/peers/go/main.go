// Peer benchmarks for troupe, written in plain Go (standard library only).
//
// Usage: GOMAXPROCS is set from the threads argument.
//
//	troupe-bench <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]
//	troupe-bench variants <bench>
//
// Prints one line:
//
//	bench=<name> impl=go variant=<v> threads=<t> n=<n> seconds=<s> check=<c>
//
// and exits with status 0 when the checksum is right, 1 otherwise.
// `variants <bench>` lists the variants of a workload, the default first.
// The timed part runs from just before the first spawn until the result
// is known.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	pingpongRoundTrips = 1_000_000
	ringSize           = 10_000
	ringHops           = 1_000_000
	skynetLeaves       = 1_000_000
	skynetActors       = 1_111_111
	faninProducers     = 4
	faninPerProducer   = 1_000_000
	faninCapacity      = 1024
	askRequests        = 1_000_000
	idleActors         = 1_000_000
	bigPairs           = 1_000
	bigRounds          = 4_000
)

type result struct {
	n        int64
	elapsed  time.Duration
	check    int64
	expected int64
	extra    string
}

// A workload's variants: the idioms a Go user picks from, the default
// first. Each runs the same workload; bench/run.sh keeps the fastest.
type variant struct {
	name string
	run  func() result
}

var benches = map[string][]variant{
	// Unbuffered: a send to a parked receiver hands the value over
	// directly. Buffered (capacity 1): the sender need not wait for the
	// receiver to take it.
	"pingpong": {{"unbuffered", func() result { return pingpong(0) }},
		{"buffered", func() result { return pingpong(1) }}},
	"ring": {{"buffered", func() result { return ring(1) }},
		{"unbuffered", func() result { return ring(0) }}},
	// Buffered for the 10 replies, so no child waits for its parent.
	"skynet": {{"buffered", func() result { return skynet(10) }},
		{"unbuffered", func() result { return skynet(0) }}},
	"fanin": {{"buffered", fanin}},
	// The oneshot reply: a fresh channel of capacity 1 per request, or the
	// client's one reply channel, reused since its calls are sequential.
	"ask": {{"fresh-reply", func() result { return ask(false) }},
		{"reused-reply", func() result { return ask(true) }}},
	"idle": {{"chan", idle}},
	"big": {{"unbuffered", func() result { return big(0) }},
		{"buffered", func() result { return big(1) }}},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: troupe-bench <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]\n"+
		"       troupe-bench variants <bench>")
	os.Exit(2)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "variants" {
		vs, ok := benches[os.Args[2]]
		if !ok {
			usage()
		}
		names := make([]string, len(vs))
		for i, v := range vs {
			names[i] = v.name
		}
		fmt.Println(strings.Join(names, " "))
		return
	}
	if len(os.Args) != 3 && len(os.Args) != 4 {
		usage()
	}
	bench := os.Args[1]
	threads, err := strconv.Atoi(os.Args[2])
	if err != nil || threads < 1 {
		fmt.Fprintf(os.Stderr, "bad thread count %q\n", os.Args[2])
		os.Exit(2)
	}
	runtime.GOMAXPROCS(threads)

	vs, ok := benches[bench]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown bench %q\n", bench)
		os.Exit(2)
	}
	v := vs[0]
	if len(os.Args) == 4 {
		found := false
		for _, c := range vs {
			if c.name == os.Args[3] {
				v, found = c, true
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "unknown variant %q of %s\n", os.Args[3], bench)
			os.Exit(2)
		}
	}

	r := v.run()
	fmt.Printf("bench=%s impl=go variant=%s threads=%d n=%d seconds=%.6f check=%d%s\n",
		bench, v.name, threads, r.n, r.elapsed.Seconds(), r.check, r.extra)
	if r.check != r.expected {
		fmt.Fprintf(os.Stderr, "%s: check failed: got %d, want %d\n", bench, r.check, r.expected)
		os.Exit(1)
	}
}

// pingpong: A sends an integer to B, B replies with it + 1; the two
// channels have the given capacity.
func pingpong(capacity int) result {
	start := time.Now()
	toB := make(chan int64, capacity)
	toA := make(chan int64, capacity)
	done := make(chan int64)

	go func() { // B
		for v := range toB {
			toA <- v + 1
		}
	}()
	go func() { // A
		var v int64
		for i := 0; i < pingpongRoundTrips; i++ {
			toB <- v
			v = <-toA
		}
		close(toB)
		done <- v
	}()
	final := <-done
	elapsed := time.Since(start)
	return result{2 * pingpongRoundTrips, elapsed, final, pingpongRoundTrips, ""}
}

// ring: 10,000 goroutines in a ring, each with its own inbox; a countdown
// token is passed on and decremented on each hop; the holder of 0 reports.
func ring(capacity int) result {
	start := time.Now()
	inboxes := make([]chan int, ringSize)
	for i := range inboxes {
		inboxes[i] = make(chan int, capacity)
	}
	done := make(chan int)
	forwardedCounts := make(chan int, ringSize)
	for i := 0; i < ringSize; i++ {
		go func(index int, in <-chan int, next chan<- int) {
			forwarded := 0
			for token := range in {
				if token == 0 {
					done <- index
					break
				}
				next <- token - 1
				forwarded++
			}
			forwardedCounts <- forwarded
		}(i, inboxes[i], inboxes[(i+1)%ringSize])
	}
	inboxes[0] <- ringHops
	endIndex := <-done
	elapsed := time.Since(start)

	// Stop the ring (not timed) and add up how often the token was passed on.
	for i, in := range inboxes {
		if i != endIndex {
			close(in)
		}
	}
	var hops int64
	for i := 0; i < ringSize; i++ {
		hops += int64(<-forwardedCounts)
	}
	if want := ringHops % ringSize; endIndex != want {
		fmt.Fprintf(os.Stderr, "ring: token ended at index %d, want %d\n", endIndex, want)
		os.Exit(1)
	}
	return result{ringHops, elapsed, hops, ringHops, ""}
}

// skynet: each node above level 6 spawns 10 children; leaves reply with
// their ordinal; parents sum and reply. Each parent's channel for its 10
// children's replies has the given capacity.
func skynet(capacity int) result {
	start := time.Now()
	out := make(chan int64, 1)
	go skynetNode(capacity, out, 0, skynetLeaves)
	sum := <-out
	elapsed := time.Since(start)
	return result{skynetActors, elapsed, sum, skynetLeaves * (skynetLeaves - 1) / 2, ""}
}

func skynetNode(capacity int, parent chan<- int64, num, size int64) {
	if size == 1 {
		parent <- num
		return
	}
	children := make(chan int64, capacity)
	childSize := size / 10
	for i := int64(0); i < 10; i++ {
		go skynetNode(capacity, children, num+i*childSize, childSize)
	}
	var sum int64
	for i := 0; i < 10; i++ {
		sum += <-children
	}
	parent <- sum
}

// fanin: 4 producers send into one channel of capacity 1024 (senders block
// while it is full); the consumer sums until the channel is closed.
func fanin() result {
	start := time.Now()
	ch := make(chan int64, faninCapacity)
	done := make(chan int64)
	go func() { // consumer
		var sum int64
		for v := range ch {
			sum += v
		}
		done <- sum
	}()
	var wg sync.WaitGroup
	wg.Add(faninProducers)
	for p := 0; p < faninProducers; p++ {
		go func() {
			defer wg.Done()
			for i := int64(0); i < faninPerProducer; i++ {
				ch <- i
			}
		}()
	}
	go func() {
		wg.Wait()
		close(ch)
	}()
	sum := <-done
	elapsed := time.Since(start)
	const per = faninPerProducer
	return result{faninProducers * per, elapsed, sum, faninProducers * (per * (per - 1) / 2), ""}
}

// ask: a server goroutine owns a counter; the client sends requests that
// carry a reply channel (capacity 1) and waits for each reply. With reuse,
// the client makes its reply channel once: each call empties it before the
// next, so it serves as a fresh oneshot would, without the allocation.
type incrementRequest struct {
	reply chan int64
}

func ask(reuse bool) result {
	start := time.Now()
	requests := make(chan incrementRequest)
	go func() { // server
		var counter int64
		for req := range requests {
			counter++
			req.reply <- counter
		}
	}()
	done := make(chan int64)
	go func() { // client
		var last int64
		reply := make(chan int64, 1)
		for i := 0; i < askRequests; i++ {
			if !reuse {
				reply = make(chan int64, 1)
			}
			requests <- incrementRequest{reply}
			last = <-reply
		}
		close(requests)
		done <- last
	}()
	last := <-done
	elapsed := time.Since(start)
	return result{askRequests, elapsed, last, askRequests, ""}
}

// big: 1,000 independent pingpong pairs (as in pingpong: two channels of
// the given capacity per pair) of 4,000 round trips each, all started
// together by closing one channel; each A sends its final value to main,
// which sums.
func big(capacity int) result {
	start := time.Now()
	begin := make(chan struct{})
	done := make(chan int64, bigPairs)
	for p := 0; p < bigPairs; p++ {
		toB := make(chan int64, capacity)
		toA := make(chan int64, capacity)
		go func() { // B
			for v := range toB {
				toA <- v + 1
			}
		}()
		go func() { // A
			<-begin
			var v int64
			for i := 0; i < bigRounds; i++ {
				toB <- v
				v = <-toA
			}
			close(toB)
			done <- v
		}()
	}
	close(begin) // every pair exists: start them all
	var sum int64
	for p := 0; p < bigPairs; p++ {
		sum += <-done
	}
	elapsed := time.Since(start)
	return result{2 * bigPairs * bigRounds, elapsed, sum, bigPairs * bigRounds, ""}
}

// idle: 1,000,000 goroutines each waiting for one message on its own
// channel; measure the growth of VmRSS; then stop them all and wait.
func idle() result {
	runtime.GC()
	rssBefore := vmRSS()
	start := time.Now()
	var wg sync.WaitGroup
	var ended atomic.Int64
	wg.Add(idleActors)
	inboxes := make([]chan struct{}, idleActors)
	for i := range inboxes {
		in := make(chan struct{}, 1)
		inboxes[i] = in
		go func() {
			defer wg.Done()
			<-in
			ended.Add(1)
		}()
	}
	rssAfter := vmRSS()
	for _, in := range inboxes {
		in <- struct{}{}
	}
	wg.Wait()
	elapsed := time.Since(start)
	perActor := (rssAfter - rssBefore) / idleActors
	return result{idleActors, elapsed, ended.Load(), idleActors,
		fmt.Sprintf(" bytes_per_actor=%d", perActor)}
}

// vmRSS returns the resident set size of this process in bytes, read from
// /proc/self/status.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				panic(err)
			}
			return kb * 1024
		}
	}
	panic("VmRSS not found in /proc/self/status")
}
