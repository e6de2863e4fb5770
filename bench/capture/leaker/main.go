// Command leaker grows its Go heap in one of three shapes until the kernel OOM-kills it,
// serving net/http/pprof meanwhile. It is the target of bench/capture and the race tests.
//
//	leaker -shape burst -port 0
//
// It prints "listening <port>" once pprof is served, "conn <n>" for each accepted connection
// and "request <unix ns> <uri>" as each request arrives, then waits for SIGUSR1 (or -now)
// before leaking, so a watcher can discover it first. Each shape leaks in a function of
// its own, so a heap profile names the shape.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

const mib = 1 << 20

var retained [][]byte

// touched allocates n bytes and writes every page, so the kernel charges them now.
func touched(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

// leakGradualDrip retains `rate` MiB per second in 10 ms drips.
//
//go:noinline
func leakGradualDrip(rateMiB int) {
	drip := rateMiB * mib / 100
	for range time.Tick(10 * time.Millisecond) {
		retained = append(retained, touched(drip))
	}
}

// leakDoublingStep doubles what is retained, as fast as it can, once per period.
//
//go:noinline
func leakDoublingStep(total int) int {
	for added := 0; added < total; added += mib {
		retained = append(retained, touched(mib))
	}
	return total * 2
}

// leakBurstFlood retains 1 MiB after 1 MiB as fast as the machine allows.
//
//go:noinline
func leakBurstFlood() {
	for {
		retained = append(retained, touched(mib))
	}
}

func main() {
	shape := flag.String("shape", "burst", "gradual | doubling | burst")
	port := flag.Int("port", 0, "pprof port on 127.0.0.1 (0 = any free port)")
	rate := flag.Int("rate", 64, "gradual: MiB per second")
	startMiB := flag.Int("start", 4, "doubling: MiB retained before the first doubling")
	period := flag.Duration("period", 300*time.Millisecond, "doubling: time between steps")
	now := flag.Bool("now", false, "leak at once instead of waiting for SIGUSR1")
	after := flag.Duration("after", 0, "leak this long after start on its own (a start-up OOM; no SIGUSR1)")
	baseMiB := flag.Int("base", 0, "MiB retained at start, before serving pprof (what a service loads first)")
	flag.Parse()
	started := time.Now()
	if *baseMiB > 0 {
		retained = append(retained, touched(*baseMiB*mib))
	}

	// Subscribed before "listening" is printed, so a SIGUSR1 sent right after is not lost.
	start := make(chan os.Signal, 1)
	signal.Notify(start, syscall.SIGUSR1)

	var conns atomic.Int64
	// Every request is stamped (Unix ns) on arrival, so the bench knows when a fetch began.
	stamped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %d %s\n", time.Now().UnixNano(), r.URL.RequestURI())
		http.DefaultServeMux.ServeHTTP(w, r)
	})
	server := &http.Server{Handler: stamped, ConnState: func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			fmt.Printf("conn %d\n", conns.Add(1))
		}
	}}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(server.Serve(listener)) }()
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)

	switch {
	case *after > 0:
		time.Sleep(time.Until(started.Add(*after)))
	case !*now:
		<-start
	}
	fmt.Println("leaking")
	switch *shape {
	case "gradual":
		leakGradualDrip(*rate)
	case "doubling":
		total := *startMiB * mib
		retained = append(retained, touched(total))
		for {
			time.Sleep(*period)
			total = leakDoublingStep(total)
		}
	case "burst":
		leakBurstFlood()
	default:
		log.Fatalf("unknown -shape %q: want gradual, doubling or burst", *shape)
	}
}
