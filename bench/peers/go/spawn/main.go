// Command spawn: spawn + run + join of many tiny goroutines on all CPUs
// (GOMAXPROCS left at its default). Each goroutine adds to a local and calls
// wg.Done(); the main goroutine waits on the WaitGroup.
//
//	spawn [tasks]     (default 1,000,000)
package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"weft.bench/peers/peer"
)

var sink int

func spawnAll(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			x := i*2 + 1 // the tiny bit of work
			if x == 0 {
				sink = x // never true; keeps x alive
			}
			wg.Done()
		}(i)
	}
	wg.Wait()
}

func main() {
	n := peer.Count(1000000)

	spawnAll(n/10 + 1) // warm-up: threads started, free goroutines cached
	t0 := time.Now()
	spawnAll(n)
	d := time.Since(t0)

	fmt.Printf("# %s, GOMAXPROCS=%d, %d goroutines\n", runtime.Version(), runtime.GOMAXPROCS(0), n)
	peer.Result("spawn", "go", float64(d.Nanoseconds())/float64(n), "ns")
}
