// go-memory-leak serializes a JSON document and keeps copies of it, so its heap grows until
// the kernel OOM-kills it. It serves net/http/pprof, which is what oomdump's sidecar fetches.
//
//	-mode doubling: the retained documents double every cycle (the original demo's shape)
//	-mode gradual:  -step bytes of documents are added every cycle
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"time"
)

type order struct {
	ID       int               `json:"id"`
	Customer string            `json:"customer"`
	Items    []string          `json:"items"`
	Labels   map[string]string `json:"labels"`
}

// retained is what leaks: every document ever serialized stays reachable from here.
var retained [][]byte

// serializeDocument renders one JSON document (allocations here are short-lived).
func serializeDocument(id int) []byte {
	doc, err := json.Marshal(order{
		ID:       id,
		Customer: "customer-with-a-rather-long-name",
		Items:    []string{"apples", "pears", "plums", "cherries"},
		Labels:   map[string]string{"team": "payments", "tier": "gold"},
	})
	if err != nil {
		panic(err)
	}
	return doc
}

// leakDocuments keeps `bytes` worth of copies of doc forever: the leaking function that the
// heap profile should name.
//
//go:noinline
func leakDocuments(doc []byte, bytes int) {
	chunk := make([]byte, bytes)
	for offset := 0; offset < len(chunk); offset += len(doc) {
		copy(chunk[offset:], doc)
	}
	retained = append(retained, chunk)
}

func main() {
	port := flag.Int("port", 8080, "TCP port for net/http/pprof (0 = any free port)")
	mode := flag.String("mode", "doubling", "doubling or gradual")
	start := flag.Int("start", 4<<20, "bytes retained in the first cycle")
	step := flag.Int("step", 4<<20, "bytes added each cycle in gradual mode")
	interval := flag.Duration("interval", time.Second, "time between cycles")
	flag.Parse()
	if *mode != "doubling" && *mode != "gradual" {
		fmt.Fprintf(os.Stderr, "-mode must be doubling or gradual, not %q\n", *mode)
		os.Exit(2)
	}

	listener, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	// The first line says where pprof is, so a test can wait for it.
	fmt.Printf("pprof listening on %s\n", listener.Addr())
	go func() { log.Fatal(http.Serve(listener, nil)) }()

	total := 0
	for cycle := 1; ; cycle++ {
		doc := serializeDocument(cycle)
		grow := *step
		if *mode == "doubling" {
			grow = total
			if total == 0 {
				grow = *start
			}
		}
		leakDocuments(doc, grow)
		total += grow
		fmt.Printf("cycle %d: retained %d MiB\n", cycle, total>>20)
		time.Sleep(*interval)
	}
}
